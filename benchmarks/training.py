"""PGD-AT throughput: robustlab's loop vs a hand-written loop of the same passes, 1 process vs 2
processes (torchrun, gloo, 1 intra-op thread each). Images/s over the training steps only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import robustlab as rl

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--data", "mnist", "--model", "fast_mnist", "--method", "pgd", "--eps", "0.3", "--attack-steps", "10",
        "--attack-step-size", "0.05", "--epochs", "3", "--eval-n", "32", "--lr", "0.003"]
# the first epoch pays one-off costs (lazy imports, allocator warm-up): throughput counts epochs 2-3


def hand_written_pgd_at(epochs: int, batch: int) -> float:
    """Images/s of the bare PGD-AT loop: 10 PGD steps (eval mode) + one training step per batch."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = rl.load_dataset("mnist", "train")
    model = rl.create_model("fast_mnist")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    eps, alpha = 0.3, 0.05
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        if epoch == 1:
            t0 = time.perf_counter()
        for x, y in train.batches(batch, shuffle=True, generator=gen):
            model.eval()
            x_adv = (x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps).clamp(0, 1)
            for _ in range(10):
                x_adv.requires_grad_(True)
                grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (epochs - 1) * len(train) / (time.perf_counter() - t0)


def two_independent_hand_loops(b: int) -> float:
    """The machine's ceiling for 2 processes: two hand-written loops at once, no communication."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import training; "
            f"print(training.hand_written_pgd_at(3, {b}))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(2)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def robustlab_throughput(nproc: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_THREADS": "1"}
        cmd = [sys.executable, "-m", "robustlab.cli", "--no-progress"]
        if nproc > 1:
            cmd += ["launch", "--nproc", str(nproc), "--threads", "1", "--"]
        cmd += ["train", *ARGS, "--batch-size", str(batch), "--runs", tmp, "--name", "t"]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
        recs = [json.loads(l) for l in (Path(tmp) / "t" / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in recs if r.get("kind") == "epoch"][1:]
        n = len(rl.load_dataset("mnist", "train"))
        return len(epochs) * n / sum(r["train_time_s"] for r in epochs)


def main(lines: list[str]) -> list[str]:
    b = 128
    hand = hand_written_pgd_at(3, b)
    one = robustlab_throughput(1, b)
    two = robustlab_throughput(2, b // 2)  # same global batch
    two_big = robustlab_throughput(2, b)   # global batch 2x
    ceiling = two_independent_hand_loops(b)
    lines += ["## PGD-AT training throughput (fast_mnist, PGD-10, 3,500 MNIST images, 1 thread per process)", "",
              "| configuration | images/s | vs hand-written (1 process) |", "|---|---|---|",
              f"| hand-written PGD-AT loop, 1 process, batch {b} | {hand:.0f} | 1.00x |",
              f"| robustlab, 1 process, batch {b} | {one:.0f} | {one / hand:.2f}x |",
              f"| robustlab, 2 processes x batch {b // 2} (global {b}) | {two:.0f} | {two / hand:.2f}x |",
              f"| robustlab, 2 processes x batch {b} (global {2 * b}) | {two_big:.0f} | {two_big / hand:.2f}x |",
              f"| ceiling: 2 independent hand-written loops at once (no communication) | {ceiling:.0f} | {ceiling / hand:.2f}x |",
              "", f"robustlab 2 processes / 1 process: {two / one:.2f}x (same global batch), {two_big / one:.2f}x (2x global batch).", ""]
    return lines


if __name__ == "__main__":
    print("\n".join(main([])))
