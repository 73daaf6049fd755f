"""robustlab vs the reference AutoAttack package (pyautoattack 0.2.0) on the stored reference points:
broken counts per attack / norm / eps, the points only one side breaks, and robustlab's time.

Reads tests/data/reference_attacks.json (made by benchmarks/make_reference_data.py; no reference
install needed) and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/reference_compare.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustlab as rl  # noqa: E402
from robustlab.attacks import APGD, APGDT, FABT  # noqa: E402

import make_reference_data as ref_data  # noqa: E402


def make_attack(name: str, norm: str, eps: float, single: bool = False):
    """The AutoAttack settings: APGD-CE 1 restart (Linf, L2) or 5 with the 3-2-1 eps schedule (L1);
    APGD-T 9 targets (Linf, L2) or 5 (L1); FAB-T 9 targets; 100 iterations each."""
    threat = rl.ThreatModel(norm, eps)
    if name == "apgd-ce":
        return APGD(threat, "ce", steps=100, restarts=5 if norm == "l1" and not single else 1)
    if name == "apgd-t":
        return APGDT(threat, n_targets=1 if single else 5 if norm == "l1" else 9, steps=100)
    return FABT(threat, n_targets=9, steps=100)


def main() -> None:
    torch.set_num_threads(1)
    reference = json.loads(ref_data.REFERENCE.read_text())
    model = ref_data.trained_model()
    x, y = ref_data.test_points()
    clean = torch.tensor(reference["clean_correct"], dtype=torch.bool)
    idx = clean.nonzero().flatten()
    lines = [f"{int(clean.sum())} correctly classified of {len(clean)} MNIST test points, "
             f"{reference['model']} (PGD-trained, Linf 0.3)", "",
             "| attack | norm | eps | robustlab broken | reference broken | only robustlab | only reference | robustlab s | reference s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in reference["results"].items():
        attack = make_attack(r["attack"], r["norm"], r["eps"], r.get("single", False))
        start = time.perf_counter()
        res = attack(model, x[idx], y[idx])
        elapsed = time.perf_counter() - start
        ours = torch.zeros_like(clean)
        ours[idx] = res.success
        theirs = torch.tensor(r["per_point"], dtype=torch.bool)
        name = r["attack"] + (" (first restart/target)" if r.get("single") else "")
        lines.append(f"| {name} | {r['norm']} | {r['eps']:g} | {int(ours.sum())} | {int(theirs.sum())} | "
                     f"{int((ours & ~theirs).sum())} | {int((theirs & ~ours).sum())} | {elapsed:.1f} | {r['time_s']:.1f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
