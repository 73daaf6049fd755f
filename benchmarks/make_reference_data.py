"""Make the reference data of tests/test_reference_attacks.py (run once; needs `make bench`'s pyautoattack).

1. A small PGD-trained CNN on the bundled MNIST (fast_mnist at width 0.5, Linf eps 0.3), stored as
   tests/data/mnist_pgd_cnn.safetensors (trained once with robustlab.training.train; kept if present).
2. Per-point results of the reference AutoAttack package (pyautoattack 0.2.0) on fixed test points:
   APGD-CE, APGD-T and FAB-T for Linf, L2 and L1 (each attack run alone on the correctly classified
   points), stored with broken counts as tests/data/reference_attacks.json.

    OMP_NUM_THREADS=1 python benchmarks/make_reference_data.py [--retrain]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import robustlab as rl  # noqa: E402
from robustlab.fileio import atomic_write_text  # noqa: E402
from robustlab.threat import lp_norm  # noqa: E402
from robustlab.training import TrainConfig, train  # noqa: E402
from robustlab.training import load_weights, save_weights  # noqa: E402

DATA = ROOT / "tests" / "data"
WEIGHTS = DATA / "mnist_pgd_cnn.safetensors"
REFERENCE = DATA / "reference_attacks.json"
N_POINTS = 150
# (attack, norm, eps): radii where attacks disagree, not where everything or nothing breaks; the
# extra FAB-T/APGD-CE radii are the comparisons of the issue (box binding for FAB, L1 eps 3)
SETTINGS = [(a, n, e) for n, e in (("Linf", 0.2), ("L2", 1.5), ("L1", 5.0)) for a in ("apgd-ce", "apgd-t", "fab-t")]
SETTINGS += [("fab-t", "Linf", 0.1), ("fab-t", "L2", 1.0), ("apgd-ce", "L1", 3.0)]
# L1 restarts (and APGD-T's targets) after the first draw their random starts for the points still
# unbroken, so they cannot be aligned point for point; the first restart / target can: "single" runs it alone
SINGLE = [("apgd-ce", "L1", 5.0), ("apgd-t", "L1", 5.0)]


def make_model() -> torch.nn.Module:
    return rl.create_model("fast_mnist", width=0.5)


def trained_model(retrain: bool = False) -> torch.nn.Module:
    model = make_model()
    if WEIGHTS.exists() and not retrain:
        return load_weights(model, WEIGHTS).eval()
    torch.manual_seed(0)
    tr, va = rl.load_dataset("mnist", "train"), rl.load_dataset("mnist", "val")
    cfg = TrainConfig(method="pgd", epochs=15, lr=3e-3, schedule="cyclic", eps=0.3, attack_steps=10,
                      attack_step_size=0.05, eps_warmup_epochs=5, eval_n=200, seed=0)
    train(model, tr, va, cfg, progress=False)
    DATA.mkdir(parents=True, exist_ok=True)
    save_weights(model.eval(), WEIGHTS)
    return model.eval()


def test_points() -> tuple[torch.Tensor, torch.Tensor]:
    test = rl.load_dataset("mnist", "test").subset(N_POINTS)
    return test.x.float(), test.y.long()


def reference_broken(model, x, y, norm: str, eps: float, attack: str, single: bool = False) -> torch.Tensor:
    """bool[N]: the reference attack, run alone (AutoAttack's 'custom' version), misclassifies the point."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, norm=norm, eps=eps, version="custom", attacks=[attack], device="cpu", seed=0)
    if norm == "L1":  # AutoAttack-L1's standard settings (set_version('standard') with norm L1)
        adversary.apgd.use_largereps = adversary.apgd_targeted.use_largereps = True
        adversary.apgd.n_restarts = 5
        adversary.apgd_targeted.n_target_classes = 5
    else:
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_target_classes = 9
    if single:
        adversary.apgd.n_restarts = adversary.apgd_targeted.n_target_classes = 1
    adversary.apgd_targeted.n_restarts = 1
    adversary.fab.n_restarts = 1
    adversary.fab.n_target_classes = 9
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    norms = lp_norm(x_adv - x, norm.lower())
    with torch.no_grad():
        # a point counts only inside the ball and the box (float slack 1e-4 relative)
        return (model(x_adv).argmax(1) != y) & (norms <= eps * (1 + 1e-4)) & (x_adv.min() >= 0) & (x_adv.max() <= 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = trained_model(args.retrain)
    x, y = test_points()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    out = {"model": WEIGHTS.name, "n_points": N_POINTS, "clean_correct": clean.int().tolist(),
           "reference": "pyautoattack 0.2.0", "results": {}}
    for attack, norm, eps, single in [s + (False,) for s in SETTINGS] + [s + (True,) for s in SINGLE]:
        start = time.perf_counter()
        broken = reference_broken(model, x, y, norm, eps, attack, single) & clean
        key = f"{attack}/{norm.lower()}/{eps:g}" + ("/single" if single else "")
        out["results"][key] = {"attack": attack, "norm": norm.lower(), "eps": eps, "single": single,
                               "broken": int(broken.sum()),
                               "per_point": broken.int().tolist(), "time_s": round(time.perf_counter() - start, 1)}
        print(f"{key}: {int(broken.sum())} of {int(clean.sum())} broken ({time.perf_counter() - start:.1f} s)",
              flush=True)
    atomic_write_text(REFERENCE, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
