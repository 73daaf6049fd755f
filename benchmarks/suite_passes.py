"""How many rows each implementation of the standard suite sends through the model (issue 10):
robustlab's "standard" suite vs the reference AutoAttack (pyautoattack) on the same points of the
PGD-trained bench net, with per-attack times.

    OMP_NUM_THREADS=1 python benchmarks/suite_passes.py [--points 150]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


class CountRows(torch.nn.Module):
    """Counts the rows forwarded (and those forwarded with gradients)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows, self.grad_rows = model, 0, 0

    def forward(self, z):
        self.rows += z.shape[0]
        self.grad_rows += z.shape[0] if z.requires_grad else 0
        return self.model(z)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=150)
    ap.add_argument("--eps", type=float, default=0.3)
    args = ap.parse_args()
    import pyautoattack
    import run
    import robustlab as rl

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("auto-attack").setLevel(logging.DEBUG)  # the reference's per-attack times
    test = rl.load_dataset("mnist", "test")
    model = run.trained_model("pgd")
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = test.x[:args.points], test.y[:args.points]
    counted = CountRows(model)
    t0 = time.perf_counter()
    rep = rl.evaluate(counted, (x, y), rl.ThreatModel("linf", args.eps), "standard", sanity=None, batch_size=500)
    print(f"robustlab: {time.perf_counter() - t0:.1f} s, rows {counted.rows}, with gradients {counted.grad_rows}, "
          f"robust {rep.robust_accuracy:.2%}, per attack {({k: round(v, 1) for k, v in rep.attack_time_s.items()})}")
    counted = CountRows(model)
    t0 = time.perf_counter()
    aa = pyautoattack.AutoAttack(counted, norm="Linf", eps=args.eps, version="standard", seed=0, device="cpu")
    aa.run_standard_evaluation(x, y, batch_size=500)
    print(f"reference: {time.perf_counter() - t0:.1f} s, rows {counted.rows}, with gradients {counted.grad_rows} "
          "(per-attack times in the log lines above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
