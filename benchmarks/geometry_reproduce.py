"""Reproduce at small scale: loss-landscape geometry of standard vs PGD-AT vs TRADES vs LLR nets on
the bundled MNIST, their generalisation gaps, the rank correlation of each measure with the gap,
the Dinh et al. (2017) rescaling demonstration and a trajectory figure.

    OMP_NUM_THREADS=1 python benchmarks/geometry_reproduce.py [--root runs/geometry-repro] [--epochs 3] \
        [--batch-sizes 16,64,256,1024] [--processes 1,2] [--local-sgd 4] [--skip-methods] \
        [--out benchmarks/geometry_reproduce_results.md]

The same as the CLI sequence

    robustlab train --model fast_mnist --method {standard,pgd,trades,llr} --eps 0.1 --attack-steps 7 \\
        --epochs 3 --snapshot-every 1 --runs runs/geometry-repro --name <method>
    robustlab compare-geometry runs/geometry-repro/{standard,pgd,trades,llr} --measures \\
        hessian,trace,sharpness,flatness,surface2d,trajectory --n 500

plus the invariance table. Prints markdown tables; runs are cached (re-running skips training).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

import robustlab as rl
from robustlab import geometry as G
from robustlab.experiments.geometry import compare_geometry, comparison_markdown
from robustlab.experiments.job import load_model_from_run, train_model_run

METHODS = ("standard", "pgd", "trades", "llr")


def copy_trajectory_figures(runs, folder: Path) -> None:
    """Each run's trajectory figure (PCA plane of the SGD path on the loss contour) as
    ``folder/trajectory-<run>.png``, so the README can show it."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        fig = Path(run) / "figures" / "geometry_trajectory.png"
        if fig.exists():
            shutil.copyfile(fig, folder / f"trajectory-{Path(run).name}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/geometry-repro")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=500, help="points the measures use")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    ap.add_argument("--figures", default="benchmarks/figures/geometry", help="where the trajectory figures are copied")
    ap.add_argument("--batch-sizes", default="", help="e.g. 16,64,256,1024: also a standard-training batch-size "
                    "sweep (same epochs, Adam, same lr) with sharpness and the gap (Keskar et al. 2017)")
    ap.add_argument("--processes", default="1", help="e.g. 1,2: also train each batch size on 2 processes (DDP, "
                    "gloo, same global batch, 1 thread each)")
    ap.add_argument("--local-sgd", type=int, default=0, help="also a post-local SGD row on the most processes, "
                    "averaging every this many steps")
    ap.add_argument("--skip-methods", action="store_true", help="only the batch-size sweep")
    args = ap.parse_args(argv)
    if args.batch_sizes:
        text = batch_size_table(Path(args.root), [int(b) for b in args.batch_sizes.split(",")], args)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n\n")
        if args.skip_methods:
            return 0
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = Path(args.root)
    runs = []
    t0 = time.perf_counter()
    for method in args.methods.split(","):
        run = root / method
        cfg = {"method": method, "epochs": args.epochs, "batch_size": 64, "lr": 2e-3, "eps": args.eps,
               "attack_steps": 7, "llr_steps": 3, "eval_n": 200, "snapshot_every": 1, "snapshot_steps": 10, "seed": 0}
        if not (run / "summary.json").exists():
            train_model_run(run, {"name": "fast_mnist"}, {"name": "mnist", "seed": 0}, cfg, progress=False)
        runs.append(run)
    t_train = time.perf_counter() - t0
    res = compare_geometry(runs, ["hessian", "trace", "sharpness", "flatness", "surface2d", "trajectory"], "clean",
                           out=root, n=args.n, eps=args.eps, attack_steps=10, grid=11, progress=False)
    t_geo = time.perf_counter() - t0 - t_train
    copy_trajectory_figures(runs, Path(args.figures))
    robust_gap = dict(res)
    from scipy.stats import kendalltau

    taus_r = {}
    for s in res["kendall_tau"]:
        xs = [r["scalars"][s] for r in res["runs"]]
        ys = [r["gaps"]["robust_acc_gap"] for r in res["runs"]]
        t = kendalltau(xs, ys).statistic
        taus_r[s] = None if t != t else float(t)
    robust_gap["kendall_tau"], robust_gap["gap"] = taus_r, "robust_acc_gap"
    lines = [f"MNIST (bundled, 3500 train / 1000 test), FastMNISTNet, {args.epochs} epochs, eps = {args.eps} "
             f"(Linf, 7-step PGD in training, 10-step PGD for the robust numbers), measures on {args.n} points.", "",
             comparison_markdown(res),
             "Kendall tau against the robust accuracy gap:", "",
             "| measure | " + " | ".join(taus_r) + " |", "|" + "---|" * (len(taus_r) + 1),
             "| tau | " + " | ".join("n/a" if v is None else f"{v:+.2f}" for v in taus_r.values()) + " |", ""]
    accs = ["| run | train acc | test acc | train PGD acc | test PGD acc |", "|---|---|---|---|---|"]
    import json

    for r in runs:
        g = json.loads((r / "geometry.json").read_text())["gaps"]
        accs.append(f"| {r.name} | {g['train']['acc']:.3f} | {g['test']['acc']:.3f} | {g['train']['robust_acc']:.3f} | "
                    f"{g['test']['robust_acc']:.3f} |")
    lines += accs + [""]
    # Dinh et al.: the same function, rescaled
    model, config = load_model_from_run(runs[0])
    data = rl.load_dataset("mnist", "train").subset(args.n)
    x = data.x[:64]
    rep = G.invariance_report(
        model,
        {"top eigenvalue": lambda m: float(G.hessian_eigenvalues(m, data, k=1, tol=1e-3).values[0]),
         "trace": lambda m: G.hessian_trace(m, data, samples=20).value,
         "Keskar eps-sharpness": lambda m: G.eps_sharpness(m, data, eps=1e-3, steps=3).value,
         "SAM rho=0.05": lambda m: G.worst_case_sharpness(m, data, rho=0.05).value,
         "ASAM rho=0.5": lambda m: G.adaptive_sharpness(m, data, rho=0.5).value,
         "avg. sharpness, relative noise": lambda m: G.average_sharpness(m, data, sigma=0.1, samples=3,
                                                                         relative=True).value,
         "filter-normalised 1-D (r=0.5)": lambda m: float(G.surface_1d(m, data, alphas=[-0.5, 0, 0.5]).losses[[0, 2]]
                                                          .mean() - G.surface_1d(m, data, alphas=[0.0]).losses[0])},
        alphas=[0.2, 5.0], example=x)
    out_rescaled = (model(x) - G.rescale(model, 5.0)(x)).abs().max()
    lines += [f"Dinh et al. rescaling of the standard net (max |output change| at alpha=5: {out_rescaled:.1e}):", "",
              rep.to_markdown(), "",
              f"Trajectory figures: {root}/<method>/figures/geometry_trajectory.png (+ .gif); copied to "
              f"{args.figures}/trajectory-<method>.png.",
              f"Time: training {t_train:.0f} s, geometry {t_geo:.0f} s (1 thread)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a" if args.batch_sizes else "w") as f:
            f.write(text + "\n")
    return 0


def _train_processes(run: Path, b: int, procs: int, local_sgd: int, args) -> None:
    """Train a standard run at global batch ``b`` on ``procs`` processes (torchrun via `robustlab
    launch`, gloo, 1 thread each; ``b / procs`` per process), post-local SGD with period ``local_sgd``."""
    import subprocess

    if b % procs:
        raise SystemExit(f"global batch {b} is not divisible by {procs} processes")
    cmd = [sys.executable, "-m", "robustlab.cli", "--no-progress", "launch", "--nproc", str(procs), "--threads", "1",
           "--", "train", "--model", "fast_mnist", "--data", "mnist", "--method", "standard", "--epochs",
           str(args.epochs), "--batch-size", str(b // procs), "--optimizer", "adam", "--lr", "2e-3", "--eps",
           str(args.eps), "--eval-n", "200", "--seed", "0", "--local-sgd-period", str(local_sgd),
           "--runs", str(run.parent), "--name", run.name]
    subprocess.run(cmd, check=True)


def _row_geometry(run: Path, args) -> dict:
    """landscape(hessian, trace, sharpness) of a run, reusing its geometry.json when taken alike."""
    import json

    from robustlab.experiments.geometry import landscape

    path = run / "geometry.json"
    if path.exists():
        res = json.loads(path.read_text())
        if res.get("n") == args.n and res.get("eps") == args.eps and {"hessian", "trace", "sharpness"} <= set(res["measures"]):
            return res
    return landscape(run, ["hessian", "trace", "sharpness"], "clean", n=args.n, eps=args.eps, progress=False,
                     figures=False)


def batch_size_table(root: Path, sizes: list[int], args) -> str:
    """Standard training at several global batch sizes, on 1 process and (``--processes``) on more
    (plain DDP, and post-local SGD with ``--local-sgd``): sharpness against the generalisation gap."""
    procs = [int(p) for p in str(getattr(args, "processes", "1")).split(",")]
    local = int(getattr(args, "local_sgd", 0) or 0)
    lines = [f"Batch-size sweep (standard training, FastMNISTNet, {args.epochs} epochs, Adam lr 2e-3; global batch = "
             "processes x per-process batch; several processes: DDP over gloo, 1 thread each):", "",
             "| batch | processes | steps | train acc | test acc | acc gap | loss gap | top eigenvalue | trace | SAM | "
             "ASAM | avg. relative | train s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in sizes:
        variants = [(p, 0) for p in procs] + ([(max(procs), local)] if local and max(procs) > 1 else [])
        for p, period in variants:
            run = root / (f"bs{b}" if p == 1 else f"bs{b}-p{p}" + (f"-local{period}" if period else ""))
            if not (run / "summary.json").exists():
                if p == 1:
                    train_model_run(run, {"name": "fast_mnist"}, {"name": "mnist", "seed": 0},
                                    {"method": "standard", "epochs": args.epochs, "batch_size": b, "lr": 2e-3,
                                     "eps": args.eps, "eval_n": 200, "seed": 0}, progress=False)
                else:
                    _train_processes(run, b, p, period, args)
            import json

            train_s = json.loads((run / "summary.json").read_text()).get("train_time_s", float("nan"))
            res = _row_geometry(run, args)
            sc, g = res["scalars"], res["gaps"]
            steps = args.epochs * -(-3500 // b)
            label = f"{p}" + (f" (local SGD, period {period})" if period else "")
            lines.append(f"| {b} | {label} | {steps} | {g['train']['acc']:.3f} | {g['test']['acc']:.3f} | "
                         f"{g['acc_gap']:+.3f} | {g['loss_gap']:+.3f} | {sc['top_eigenvalue']:.3g} | {sc['trace']:.3g} | "
                         f"{sc['sam']:.3g} | {sc['asam']:.3g} | {sc['average_relative']:.3g} | {train_s:.0f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
