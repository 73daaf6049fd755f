"""Tesseract query throughput (issue 13): the oracle (C API kept open, one line per query) vs spawning
the `tesseract` command per query (pytesseract's way: write an image, run the CLI, read stdout), and
the oracle's worker pool (2 processes vs 1) on batches of lines.

    OMP_NUM_THREADS=1 python benchmarks/ocr.py --out benchmarks/ocr_results.md

Every query is a distinct image (a different line or grey-level noise), so memoisation never helps.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def distinct_lines(n: int, seed: int = 0) -> torch.Tensor:
    """n different rendered lines (plain style, the same width)."""
    from robustlab.tasks.ocr import synthetic_lines

    return synthetic_lines(n, seed, styles=False).x


def bench_oracle(x: torch.Tensor) -> float:
    """Queries/s through TesseractOracle, one line per query."""
    from robustlab.tasks.ocr import TesseractOracle

    o = TesseractOracle(memoize=False)
    o.read(x[:1])                                 # open the engine outside the timing
    t0 = time.perf_counter()
    for i in range(x.shape[0]):
        o.read(x[i:i + 1])
    return x.shape[0] / (time.perf_counter() - t0)


def bench_cli(x: torch.Tensor) -> float:
    """Queries/s spawning `tesseract <png> stdout --psm 7` per query (what pytesseract does)."""
    from PIL import Image

    q = (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for i in range(q.shape[0]):
            path = Path(d) / f"q{i}.png"
            Image.fromarray(q[i], mode="L").save(path)
            subprocess.run(["tesseract", str(path), "stdout", "--psm", "7", "-l", "eng"], check=True,
                           capture_output=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        return q.shape[0] / (time.perf_counter() - t0)


def bench_workers(x: torch.Tensor, workers: int, batch: int) -> float:
    """Queries/s through the oracle with `workers` processes, `batch` lines per call (a Square step)."""
    from robustlab.tasks.ocr import TesseractOracle

    o = TesseractOracle(workers=workers, memoize=False)
    try:
        o.read(x[:batch])                         # start the pool outside the timing
        t0 = time.perf_counter()
        for s in range(0, x.shape[0], batch):
            o.read(x[s:s + batch])
        return x.shape[0] / (time.perf_counter() - t0)
    finally:
        o.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--n", type=int, default=200, help="oracle queries (one line each)")
    p.add_argument("--n-cli", type=int, default=40, help="CLI queries")
    p.add_argument("--n-pool", type=int, default=256, help="lines for the worker comparison")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = distinct_lines(max(args.n, args.n_cli, args.n_pool))
    oracle = statistics.median(bench_oracle(x[:args.n]) for _ in range(args.repeats))
    cli = statistics.median(bench_cli(x[:args.n_cli]) for _ in range(args.repeats))
    one, two = [], []
    for _ in range(args.repeats):                 # interleaved, so load changes hit both
        one.append(bench_workers(x[:args.n_pool], 1, args.batch))
        two.append(bench_workers(x[:args.n_pool], 2, args.batch))
    one_m, two_m = statistics.median(one), statistics.median(two)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end; OMP_THREAD_LIMIT=1; medians of {args.repeats} repeats.",
        "",
        "| path | queries/s | ratio |",
        "|---|---|---|",
        f"| `tesseract` CLI spawned per query (pytesseract's way) | {cli:.1f} | 1.00x |",
        f"| TesseractOracle, one line per query (C API kept open) | {oracle:.1f} | {oracle / cli:.1f}x |",
        "",
        f"| oracle, batches of {args.batch} lines | queries/s | ratio |",
        "|---|---|---|",
        f"| 1 worker (in process) | {one_m:.1f} | 1.00x |",
        f"| 2 worker processes | {two_m:.1f} | {two_m / one_m:.2f}x |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text("# Tesseract throughput (benchmarks/ocr.py)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
