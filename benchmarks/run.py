"""Benchmarks: robustlab PGD-40 vs a hand-written loop of the same passes vs torchattacks.

Run with `make bench`; writes benchmarks/results.md. All timings in one process, same model,
same points, interleaved repeats, median reported.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab import cpu as rl_cpu
from robustlab.training import TrainConfig, load_weights, save_weights, train

CACHE = Path(__file__).resolve().parents[1] / "data-cache" / "bench"


def trained_model(method: str) -> torch.nn.Module:
    """fast_mnist trained on the bundled MNIST (standard or PGD-AT), cached."""
    path = CACHE / f"fast_mnist-{method}.safetensors"
    model = rl.create_model("fast_mnist")
    if path.exists():
        return load_weights(model, path).eval()
    torch.manual_seed(0)
    tr, va = rl.load_dataset("mnist", "train"), rl.load_dataset("mnist", "val")
    cfg = TrainConfig(method=method, epochs=10 if method == "standard" else 20, lr=3e-3, schedule="cyclic", eps=0.3,
                      attack_steps=10, attack_step_size=0.05, eps_warmup_epochs=6, eval_n=200)
    train(model, tr, va, cfg, progress=False)
    save_weights(model, path)
    return model.eval()


def hand_written_pgd(model, x, y, eps, alpha, steps, gen):
    """The physical limit: `steps` forward/backward passes and one final forward, nothing else."""
    x_adv = (x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        correct = model(x_adv).argmax(1) == y
    return correct


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_pgd(model, x, y, eps, steps, alpha, batch, repeats, torchattacks):
    rows = {}

    def batches():
        for i in range(0, len(y), batch):
            yield x[i:i + batch], y[i:i + batch]

    def run_hand():
        # the same random start as robustlab: a generator seeded 0 per batch, uniform in the eps-cube
        return torch.cat([hand_written_pgd(model, xb, yb, eps, alpha, steps, torch.Generator().manual_seed(0))
                          for xb, yb in batches()])

    def run_rl(early_stop):
        def f():
            attack = rl.attacks.PGD(rl.ThreatModel("linf", eps), steps=steps, step_size=alpha, early_stop=early_stop)
            with torch.no_grad():
                clean = model(x).argmax(1) == y
            succ = torch.cat([attack(model, xb, yb).success for xb, yb in batches()])
            return clean & ~succ
        return f

    def run_ta():
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        outs = []
        for xb, yb in batches():
            adv = attack(xb, yb)
            with torch.no_grad():
                outs.append(model(adv).argmax(1) == yb)
        return torch.cat(outs)

    fns = {"hand-written loop": run_hand, "robustlab (no early stop)": run_rl(False),
           "robustlab (early stop)": run_rl(True)}
    if torchattacks is not None:
        fns["torchattacks"] = run_ta
    times = {k: [] for k in fns}
    accs = {}
    for _ in range(repeats):  # interleave to spread machine noise evenly
        for k, fn in fns.items():
            t, out = timed(fn, 1)
            times[k].append(t)
            accs[k] = float(out.float().mean())
    for k in fns:
        rows[k] = (statistics.median(times[k]), accs[k])
    return rows


def demo_time() -> list[str]:
    """The demo's job (`robustlab run configs/quickstart.yaml`, what `make demo` runs after the venv exists)
    in a fresh runs folder, its own process with the Makefile's thread setting: wall time and the robust
    accuracies from each model's evaluation.json (``runs.evaluations``)."""
    import json
    import os
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("DEMO_THREADS", "2")}
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "robustlab"), "run", str(root / "configs" / "quickstart.yaml"), "--runs", runs],
                       check=True, env=env, cwd=root, stdout=subprocess.DEVNULL)
        t = time.perf_counter() - t0
        rows = []
        for f in sorted(Path(runs).rglob("evaluation.json")):
            ev = json.loads(f.read_text())
            accs = ", ".join(f"{e:g}: {r['robust_accuracy']:.1%}" for e, r in zip(ev["eps"], ev["reports"]))
            model = f.parents[2] if f.parent.parent.name == "evaluations" else f.parent  # runs.evaluations' layout
            rows.append(f"- {model.name}: {accs} ({ev['time_s']:.0f} s evaluating)")
    return [f"`robustlab run configs/quickstart.yaml` (the demo without creating the venv), "
            f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}: **{t / 60:.1f} min** ({t:.0f} s). Robust accuracy per eps:", "",
            *rows, ""]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results.md")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="pgd,square,suite,hsj,training,demo", help="comma-separated sections")
    args = ap.parse_args()
    sections = set(args.only.split(","))
    rl_cpu.tune_allocator()  # both libraries share the process, so both gain
    torch.set_num_threads(args.threads)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    test = rl.load_dataset("mnist", "test").subset(args.n)
    lines = ["# Benchmark results", "",
             f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{args.threads} threads, n={args.n}, batch {args.batch}, median of {args.repeats} interleaved repeats.", ""]
    cases = [("undefended", "standard", 0.1), ("undefended", "standard", 0.3), ("PGD-AT", "pgd", 0.3)]
    for label, method, eps in cases if "pgd" in sections else []:
        model = trained_model(method)
        rows = bench_pgd(model, test.x, test.y, eps, 40, 0.01, args.batch, args.repeats, torchattacks)
        base = rows["hand-written loop"][0]
        ta = rows.get("torchattacks", (float("nan"),))[0]
        lines += [f"## PGD-40 (step 0.01, random start), {label} fast_mnist, Linf eps={eps}", "",
                  "| implementation | time (s) | vs hand-written | vs torchattacks | robust accuracy |",
                  "|---|---|---|---|---|"]
        for k, (t, acc) in rows.items():
            lines.append(f"| {k} | {t:.2f} | {t / base:.2f}x | {t / ta:.2f}x | {acc:.2%} |")
        lines.append("")
    import blackbox

    try:
        import pyautoattack
    except ImportError:
        pyautoattack = None
    art = blackbox.art_tools()
    std, rob = trained_model("standard"), trained_model("pgd")
    if "square" in sections:
        lines += ["## Black-box: Square", ""]
        lines += blackbox.bench_square(std, test.x[:500], test.y[:500], 0.1, 1000, "undefended fast_mnist", torchattacks, art)
        lines += blackbox.bench_square(rob, test.x[:500], test.y[:500], 0.3, 1000, "PGD-AT fast_mnist", torchattacks, art)
    if "suite" in sections:
        lines += ["## Standard suite vs AutoAttack", ""]
        lines += blackbox.bench_suite(rob, test.x[:500], test.y[:500], 0.3, "PGD-AT fast_mnist", pyautoattack, torchattacks)
    if "hsj" in sections:
        lines += ["## Decision-based: HopSkipJump", ""]
        lines += blackbox.bench_hsj(std, test.x[:20], test.y[:20], (1000, 5000, 10000), art)
    if "training" in sections:
        import training

        lines = training.main(lines)
    if "demo" in sections:
        lines += ["## The main job (`make demo`)", ""] + demo_time()
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
