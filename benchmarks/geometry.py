"""Geometry benchmark: top Hessian eigenvalue and trace next to PyHessian 0.1 on the same model and
data, and the passes and time of a 21 x 21 loss surface (vmapped over weight points vs one point at
a time). Prints a markdown table.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/geometry.py [--n 512] [--repeats 3] [--batches 1,4] [--no-surface]
        [--out benchmarks/geometry_results.md]

PyHessian is a benchmark-only install (``pip install --no-deps pyhessian==0.1``, the Makefile's bench
stamp). Model: FastMNISTNet (Wong et al. 2020), trained 1 epoch on the bundled MNIST so the Hessian
is not that of a random net. Both libraries get the same model (eval mode) and the same data, in
two settings: one batch (both reuse one gradient graph) and a loader of 4 batches (PyHessian
recomputes the forward and backward pass for every product; robustlab keeps the graphs). "err" is
the relative error against a converged Lanczos reference (tol 1e-10), and for the traces against Hutch++
with 900 products (standard error ~0.1%). The trace rows give robustlab
as many products as PyHessian's stopping rule used (Hutchinson, independent seed) and half as many
(Hutch++; its standard error is that of its Hutchinson part given the sketch); z = difference in
combined standard errors. Every job runs once per round, rounds interleaved; times are medians, so
the ratios hold on a loaded machine even where the absolute times do not.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import robustlab as rl
from robustlab import cpu as rl_cpu
from robustlab import geometry as G
from robustlab.training import TrainConfig, train


def trained_model(n_train: int = 2000):
    torch.manual_seed(0)
    data = rl.load_dataset("mnist", "train").subset(n_train)
    model = rl.create_model("fast_mnist")
    train(model, data, None, TrainConfig(method="standard", epochs=1, batch_size=64, lr=2e-3, eval_n=32),
          progress=False)
    return model.eval()


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def interleaved(jobs: dict, repeats: int) -> tuple[dict, dict]:
    """Run every job once per round, round after round (so a load change hits all alike); the
    last result and the median time of each."""
    results, times = {}, {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            results[k], t = timed(fn)
            times[k].append(t)
    return results, {k: statistics.median(v) for k, v in times.items()}


def bench_hessian(model, x, y, batches: int, ref_tr, repeats: int = 3):
    from pyhessian import hessian as PyHessian

    loader = [(x[i::batches], y[i::batches]) for i in range(batches)] if batches > 1 else None
    data = loader if loader is not None else (x, y)
    crit = torch.nn.CrossEntropyLoss()
    ph_mod = sys.modules["pyhessian.hessian"]  # the package attribute of that name is the class
    counter = {"n": 0}
    hvp, dl_hvp = ph_mod.hessian_vector_product, PyHessian.dataloader_hv_product

    def counted(*a, **k):
        counter["n"] += 1
        return hvp(*a, **k)

    def counted_dl(self, v):
        counter["n"] += 1
        return dl_hvp(self, v)

    def pyhessian(method):
        def run():
            torch.manual_seed(0)
            m = copy.deepcopy(model)  # PyHessian switches the model to eval mode in place
            h = PyHessian(m, crit, data=None if loader else (x, y), dataloader=loader, cuda=False)
            counter["n"] = 0
            if method == "eig":
                out = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0]
            else:
                out = h.trace(maxIter=100, tol=1e-3)
            return out, counter["n"]
        return run

    ph_mod.hessian_vector_product, PyHessian.dataloader_hv_product = counted, counted_dl
    try:
        (vhv, _), _ = timed(pyhessian("trace"))  # PyHessian's stopping rule fixes the product count
        k = max(len(vhv), 3)
        jobs = {
            "ph_eig": pyhessian("eig"),
            "eig_1e-2": lambda: G.hessian_eigenvalues(model, data, k=1, tol=1e-2),
            "eig_1e-3": lambda: G.hessian_eigenvalues(model, data, k=1, tol=1e-3),
            "ph_trace": pyhessian("trace"),
            "trace": lambda: G.hessian_trace(model, data, samples=k, seed=1),
            "hutch++": lambda: G.hessian_trace(model, data, samples=max(3, k // 2), seed=1, method="hutch++"),
        }
        res, t = interleaved(jobs, repeats)
    finally:
        ph_mod.hessian_vector_product, PyHessian.dataloader_hv_product = hvp, dl_hvp
    ref = float(G.hessian_eigenvalues(model, (x, y), k=1, tol=1e-10, max_iter=80).values[0])
    lam_ph, n_ph = res["ph_eig"]
    rows = []
    for tol in ("1e-2", "1e-3"):
        ours = res[f"eig_{tol}"]
        lam = float(ours.values[0])
        rows.append((f"top eigenvalue (tol {tol})", f"{lam_ph:.4f} (err {abs(lam_ph - ref) / ref:.0e})",
                     f"{lam:.4f} (err {abs(lam - ref) / ref:.0e})", f"{abs(lam - lam_ph) / abs(lam_ph):.1e}",
                     t["ph_eig"], t[f"eig_{tol}"], f"{n_ph} power-iteration vs {ours.passes} Lanczos products; "
                                                     f"reference {ref:.4f}"))
    vhv, n_tr = res["ph_trace"]
    mean_ph = sum(vhv) / len(vhv)
    se_ph = float(torch.tensor(vhv).std() / math.sqrt(len(vhv))) if len(vhv) > 1 else float("nan")
    for key, label in (("trace", "trace (Hutchinson, as many products)"), ("hutch++", "trace (Hutch++, half the products)")):
        tr = res[key]
        z = abs(tr.value - mean_ph) / math.sqrt(tr.stderr ** 2 + se_ph ** 2)
        rows.append((label, f"{mean_ph:.2f} ± {se_ph:.2f} (err {abs(mean_ph - ref_tr.value) / ref_tr.value:.1%})",
                     f"{tr.value:.2f} ± {tr.stderr:.2f} (err {abs(tr.value - ref_tr.value) / ref_tr.value:.1%})",
                     f"{z:.1f} σ", t["ph_trace"], t[key],
                     f"{n_tr} vs {tr.passes} products; reference {ref_tr.value:.1f} ± {ref_tr.stderr:.1f}"))
    return rows


def reference_trace(model, x, y):
    """tr(H) to ~0.1%: Hutch++ with 900 products (independent seed)."""
    return G.hessian_trace(model, (x, y), samples=900, seed=7, method="hutch++")


def bench_surface(model, x, y):
    data = (x, y)
    fast, t_fast = timed(lambda: G.surface_2d(model, data, chunk=21))
    slow, t_slow = timed(lambda: G.surface_2d(model, data, chunk=1))
    diff = float((fast.losses - slow.losses).abs().max())
    return fast, slow, t_fast, t_slow, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512, help="points the Hessian is taken over")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; times are medians")
    ap.add_argument("--batches", default="1,4", help="data settings: the points as 1 batch, as 4 batches")
    ap.add_argument("--no-surface", action="store_true", help="skip the 21 x 21 surface timing")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    rl_cpu.tune_allocator()  # both libraries share the process, so both gain
    torch.set_num_threads(1)
    model = trained_model()
    test = rl.load_dataset("mnist", "test").subset(args.n)
    x, y = test.x, test.y
    load = os.getloadavg()[0]
    lines = [f"Model: FastMNISTNet ({sum(p.numel() for p in model.parameters())} parameters), {args.n} MNIST points, "
             f"float32, {torch.get_num_threads()} thread; times are medians of {args.repeats} interleaved rounds "
             f"(load average {load:.1f} on {os.cpu_count()} cores at the start).", "",
             "| quantity | data | PyHessian 0.1 | robustlab | rel. diff / z | PyHessian s | robustlab s | ratio | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    ref_tr = reference_trace(model, x, y)
    for batches in [int(b) for b in args.batches.split(",")]:
        for name, a, b, d, ta, tb, note in bench_hessian(model, x, y, batches, ref_tr, args.repeats):
            lines.append(f"| {name} | {'1 batch' if batches == 1 else f'{batches} batches'} | {a} | {b} | {d} | "
                         f"{ta:.2f} | {tb:.2f} | {tb / ta:.2f} | {note} |")
            print(lines[-1], flush=True)
    if not args.no_surface:
        fast, slow, t_fast, t_slow, diff = bench_surface(model, x, y)
        lines += ["", "| 21 x 21 surface | data passes | model calls | time s |", "|---|---|---|---|",
                  f"| naive (one point at a time) | {slow.passes} | {slow.passes} | {t_slow:.2f} |",
                  f"| vmapped over 21 weight points | {fast.passes} | {fast.passes} | {t_fast:.2f} |",
                  "", f"max |difference| of the two surfaces: {diff:.1e}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
