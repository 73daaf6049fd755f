"""Evaluation throughput on 1 vs 2 processes (issue 10): the standard suite on the same points of the
PGD-trained bench model, sharded across torchrun ranks by ``sharded_robustness_curve``.

    python benchmarks/sharded_eval.py [--points 400] [--batch 100] [--eps 0.3]

runs the 1-process measurement, then itself under torchrun with 2 processes (gloo, 1 thread each),
and prints points/s of both, their ratio and whether the two curves agree point for point."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def measure(n: int, batch: int, eps: float) -> dict:
    sys.path.insert(0, str(HERE))
    import run  # noqa: E402  (the cached bench models)
    import robustlab as rl
    from robustlab.evaluation.sharded import sharded_robustness_curve
    from robustlab.runtime import world

    torch.set_num_threads(1)
    model = run.trained_model("pgd")
    test = rl.load_dataset("mnist", "test").subset(n)
    start = time.perf_counter()
    curve = sharded_robustness_curve(model, (test.x, test.y), rl.ThreatModel("linf", eps), [eps], "standard",
                                     batch_size=batch, sanity=None, progress=False)
    seconds = time.perf_counter() - start
    rep = curve.reports[0]
    return {"processes": world()[1], "seconds": seconds, "points_per_s": n / seconds,
            "robust_accuracy": rep.robust_accuracy, "robust": rep.robust_correct.int().tolist()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        out = measure(args.points, args.batch, args.eps)
        if dist.get_rank() == 0:
            Path(args.worker).write_text(json.dumps(out))
        dist.destroy_process_group()
        return 0
    one = measure(args.points, args.batch, args.eps)
    result = HERE.parent / "data-cache" / "bench" / "sharded_eval.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(Path(__file__).resolve()), "--points", str(args.points), "--batch", str(args.batch), "--eps", str(args.eps),
                    "--worker", str(result)], check=True, env=env)
    two = json.loads(result.read_text())
    same = one["robust"] == two["robust"]
    print("| processes | seconds | points/s | robust accuracy |\n|---|---|---|---|")
    for r in (one, two):
        print(f"| {r['processes']} | {r['seconds']:.1f} | {r['points_per_s']:.2f} | {r['robust_accuracy']:.2%} |")
    print(f"\n2 processes / 1 process: {two['points_per_s'] / one['points_per_s']:.2f}x points/s; "
          f"per-point results identical: {same} ({args.points} points, batches of {args.batch}, standard suite, Linf {args.eps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
