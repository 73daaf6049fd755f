"""The engine at the device's speed (issue 21): one script, one process, interleaved repeats, medians, a table.

    python benchmarks/gpu.py [--device cuda] [--repeats 5] [--out benchmarks/gpu_results.md]
    python benchmarks/gpu.py --device cpu --small          # inside `make bench`: the same rows, small sizes

Rows:
- host synchronisations per step of PGD, APGD and Square over a 20-step call (setup and final judgement
  included), counted with ``robustlab.hostsync`` (on any device: the count is of operations, not time);
- PGD-20, Linf 8/255, PreAct ResNet-18, 3x32x32: a hand-written loop, torchattacks (when installed),
  robustlab without and with early stopping;
- the standard suite against the reference AutoAttack (pyautoattack, when installed) on the bundled MNIST
  bench net (PGD-trained, cached by benchmarks/run.py) and on a PreAct ResNet-18 with CIFAR-shaped inputs;
- one PGD-AT training step (PGD-10; bf16 autocast on a GPU) against a hand-written loop;
- the Hessian's top eigenvalue and trace against PyHessian (when installed).
Every timing waits for the device (``torch.cuda.synchronize``) before reading the clock.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustlab as rl  # noqa: E402
from robustlab import runtime  # noqa: E402
from robustlab.attacks.base import IterativeAttack  # noqa: E402
from robustlab.hostsync import count_host_syncs  # noqa: E402


def optional(name: str):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - an optional comparison library that does not import is left out
        return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(jobs: dict, repeats: int, device: torch.device) -> tuple[dict, dict]:
    """Each job once per round, rounds in turn (a load change hits all alike); last results, median times."""
    out, times = {}, {k: [] for k in jobs}
    for fn in jobs.values():  # warm-up: allocator, kernel selection, lazy initialisation
        fn()
    for _ in range(repeats):
        for k, fn in jobs.items():
            synchronize(device)
            t0 = time.perf_counter()
            out[k] = fn()
            synchronize(device)
            times[k].append(time.perf_counter() - t0)
    return out, {k: statistics.median(v) for k, v in times.items()}


def preact(device, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return rl.create_model("preact_resnet18", width=width, num_classes=10).to(device).eval()


def cifar_like(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


# ----- host synchronisations ----------------------------------------------------------------------
def sync_rows(steps: int = 20) -> list[str]:
    """Syncs per step of a `steps`-step call, on a small MLP on the CPU (the count does not depend on the device)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
    x, y = torch.rand(64, 3, 4, 4), torch.randint(0, 10, (64,))
    threat = rl.ThreatModel("linf", 0.05)
    every = IterativeAttack.ACCELERATOR_SHRINK_EVERY
    attacks = {"PGD-20 (early stop)": rl.attacks.PGD(threat, steps=steps),
               "PGD-20 (no early stop)": rl.attacks.PGD(threat, steps=steps, early_stop=False),
               "APGD-CE-20": rl.attacks.APGD(threat, steps=steps),
               f"Square ({steps} queries)": rl.attacks.Square(threat, max_queries=steps)}
    lines = [f"## Host synchronisations per step (target: at most 0.25), on the accelerator's code path "
             f"(compaction every {every} steps)", "",
             "| attack | syncs in the call | per step | by operation |", "|---|---|---|---|"]
    free = runtime.host_reads_are_free
    runtime.host_reads_are_free = lambda device: False  # count what an accelerator runs, on any device
    try:
        counts = {}
        for name, attack in attacks.items():
            with count_host_syncs() as syncs:
                attack(model, x, y)
            counts[name] = syncs
    finally:
        runtime.host_reads_are_free = free
    for name, syncs in counts.items():
        ops = ", ".join(f"{k} {v}" for k, v in sorted(syncs.by_op.items()))
        lines.append(f"| {name} | {syncs.total} | {syncs.total / steps:.2f} | {ops or '-'} |")
    return lines + [""]


# ----- PGD-20 ---------------------------------------------------------------------------------------
def hand_pgd(model, x, y, eps, alpha, steps):
    """The physical limit: a random start, `steps` forward/backward passes, the sign step and projection."""
    x_adv = (x + (2 * torch.rand_like(x) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def pgd_rows(device, batch: int, width: int, repeats: int) -> list[str]:
    model = preact(device, width)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = cifar_like(batch, device)
    eps, alpha, steps = 8 / 255, 2 / 255, 20
    threat = rl.ThreatModel("linf", eps)
    jobs = {"hand-written loop": lambda: hand_pgd(model, x, y, eps, alpha, steps),
            "robustlab (no early stop)": lambda: rl.attacks.PGD(threat, steps=steps, step_size=alpha,
                                                                early_stop=False)(model, x, y).x_adv,
            "robustlab (early stop)": lambda: rl.attacks.PGD(threat, steps=steps, step_size=alpha)(model, x, y).x_adv}
    torchattacks = optional("torchattacks")
    if torchattacks is not None:
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        jobs["torchattacks"] = lambda: ta(x, y)
    _, times = interleaved(jobs, repeats, device)
    base = times["hand-written loop"]
    lines = [f"## PGD-20, Linf 8/255, PreAct ResNet-18 (width {width}), batch {batch}, 3x32x32", "",
             "| implementation | time (ms) | vs hand-written |", "|---|---|---|"]
    lines += [f"| {k} | {t * 1e3:.1f} | {t / base:.2f}x |" for k, t in times.items()]
    return lines + [""]


# ----- the standard suite ---------------------------------------------------------------------------
def suite_rows(model, x, y, eps, label, device, repeats: int) -> list[str]:
    threat = rl.ThreatModel("linf", eps)
    for p in model.parameters():
        p.requires_grad_(False)

    def ours():
        rep = rl.evaluate(model, (x, y), threat, "standard", sanity=None, batch_size=1000)
        return rep.robust_accuracy, {k: round(v, 2) for k, v in rep.attack_time_s.items()}

    jobs = {"robustlab standard": ours}
    pyautoattack = optional("pyautoattack")
    if pyautoattack is not None:
        def reference():
            aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device=str(device))
            aa.verbose = False
            adv = aa.run_standard_evaluation(x, y, batch_size=1000)
            adv = adv[0] if isinstance(adv, tuple) else adv
            with torch.no_grad():
                return float((model(adv).argmax(1) == y).float().mean()), {}
        jobs["reference AutoAttack (pyautoattack)"] = reference
    out, times = interleaved(jobs, repeats, device)
    ref = times.get("reference AutoAttack (pyautoattack)", float("nan"))
    lines = [f"## Standard suite, Linf {eps:g}, {label}, {len(y)} points", "",
             "| implementation | robust accuracy | time (s) | vs reference | per attack (s) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {out[k][0]:.2%} | {t:.2f} | {t / ref:.2f}x | {out[k][1] or '-'} |" for k, t in times.items()]
    return lines + [""]


# ----- PGD-AT training step -------------------------------------------------------------------------
def training_rows(device, batch: int, width: int, repeats: int, steps_per_run: int = 5) -> list[str]:
    from robustlab.training import TrainConfig
    from robustlab.training.methods import BatchContext, get_method

    amp = "bf16" if device.type == "cuda" else "off"
    x, y = cifar_like(batch, device)
    eps, alpha = 8 / 255, 2 / 255
    model_a, model_b = preact(device, width).train(), preact(device, width).train()
    fields = TrainConfig.model_fields
    settings = dict(method="pgd", eps=eps, attack_steps=10, attack_step_size=alpha, optimizer="sgd", lr=0.01)
    if "amp" in fields:
        settings["amp"] = amp
    cfg = TrainConfig(**settings)
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (model_a, model_b))
    method = get_method("pgd")
    threat = rl.ThreatModel("linf", eps)
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if amp == "bf16" else None

    def hand():
        for _ in range(steps_per_run):
            model_b.eval()
            with (autocast() if autocast else torch.enable_grad()):
                x_adv = hand_pgd(model_b, x, y, eps, alpha, 10)
                model_b.train()
                loss = F.cross_entropy(model_b(x_adv), y)
            opt_b.zero_grad(set_to_none=True)
            loss.backward()
            opt_b.step()

    def ours():
        for step in range(steps_per_run):
            ctx = BatchContext(threat, step, cfg, attack_model=model_a)
            with (autocast() if autocast else torch.enable_grad()):
                loss, _ = method(model_a, x, y, ctx)
            opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_a.step()

    _, times = interleaved({"hand-written loop": hand, "robustlab PGD-AT step": ours}, repeats, device)
    base = times["hand-written loop"]
    lines = [f"## PGD-AT training step (PGD-10, amp {amp}), PreAct ResNet-18 (width {width}), batch {batch}", "",
             "| implementation | time per step (ms) | vs hand-written |", "|---|---|---|"]
    lines += [f"| {k} | {t / steps_per_run * 1e3:.1f} | {t / base:.2f}x |" for k, t in times.items()]
    return lines + [""]


# ----- Hessian --------------------------------------------------------------------------------------
def hessian_rows(device, n: int, repeats: int) -> list[str]:
    pyhessian = optional("pyhessian")
    from robustlab import geometry as G

    torch.manual_seed(0)
    model = rl.create_model("fast_mnist").to(device).eval()
    data = rl.load_dataset("mnist", "train").subset(n)
    x, y = data.x.to(device), data.y.to(device)
    jobs = {"robustlab top eigenvalue": lambda: float(G.hessian_eigenvalues(model, (x, y), k=1).values[0]),
            "robustlab trace (Hutchinson, 100)": lambda: float(G.hessian_trace(model, (x, y), samples=100).value)}
    if pyhessian is not None:
        crit = torch.nn.CrossEntropyLoss()

        def ph():
            return pyhessian.hessian(model, crit, data=(x, y), cuda=device.type == "cuda")

        def ph_trace():
            values = ph().trace()
            return sum(values) / len(values)
        jobs["PyHessian top eigenvalue"] = lambda: ph().eigenvalues(top_n=1)[0][0]
        jobs["PyHessian trace"] = ph_trace
    out, times = interleaved(jobs, repeats, device)
    lines = [f"## Hessian of fast_mnist on {n} MNIST points (random init)", "",
             "| computation | value | time (s) |", "|---|---|---|"]
    lines += [f"| {k} | {float(out[k]):.4g} | {t:.2f} |" for k, t in times.items()]
    return lines + [""]


def run_section(section: str, device, batch: int, width: int, n: int, args) -> list[str]:
    """The table rows of one section."""
    if section == "syncs":
        return sync_rows()
    if section == "pgd":
        return pgd_rows(device, batch, width, args.repeats)
    if section == "training":
        return training_rows(device, batch, width, args.repeats)
    if section == "hessian":
        return hessian_rows(device, 256 if args.small else 2048, max(1, args.repeats // 2))
    import run  # benchmarks/run.py: the PGD-trained bench net, trained once and cached

    test = rl.load_dataset("mnist", "test")
    lines = suite_rows(run.trained_model("pgd").to(device).eval(), test.x[:n].to(device), test.y[:n].to(device),
                       0.3, "PGD-trained MNIST bench net", device, max(1, args.repeats // 2))
    x, y = cifar_like(n // 4 if args.small else n, device)
    return lines + suite_rows(preact(device, width), x, y, 8 / 255, f"PreAct ResNet-18 (width {width}, random init), "
                              "CIFAR-shaped random inputs", device, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="CPU sizes (make bench): batch 32, width 16, 100 points")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="syncs,pgd,suite,training,hessian")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    batch, width, n = (32, 16, 100) if args.small else (512, 64, 1000)
    sections = set(args.sections.split(","))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    lines = ["# The engine at the device's speed (benchmarks/gpu.py)", "",
             f"{time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"median of {args.repeats} interleaved repeats.", ""]
    print("\n".join(lines), flush=True)
    for section in ("syncs", "pgd", "suite", "training", "hessian"):
        if section in sections:
            rows = run_section(section, device, batch, width, n, args)
            print("\n".join(rows), flush=True)
            lines += rows
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
