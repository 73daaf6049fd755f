"""Evaluation of a classifier's robustness: a cascade of attacks, per-sample worst case.

Each attack in the cascade runs only on the points still correctly classified and unbroken;
a point is robust only if it is correctly classified and every attack failed on it. Robust
accuracy comes with a 95% Wilson confidence interval over the evaluated points.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from ..attacks import APGD, APGDDLR, APGDT, FABT, Attack, Square, create_attack
from ..errors import InputError, check_batch
from ..threat import ThreatModel

log = logging.getLogger(__name__)

SUITES = ("standard", "rand", "fast")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def build_suite(attacks: str | Sequence[Attack | str], threat: ThreatModel, seed: int = 0) -> list[Attack]:
    """The cascade for a suite name, or a list of attacks / attack names.

    - "standard": the AutoAttack protocol: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each
      100 iterations, then Square (5,000 queries, p_init 0.8). L1 (AutoAttack-L1, Croce & Hein 2021):
      l1-APGD-CE with 5 restarts and APGD-T with 5 targets, both with the 3-2-1 x eps schedule, FAB-T, Square-L1.
    - "rand": for randomised defences: APGD-CE and APGD-DLR with EOT over 20 draws per step.
    - "fast": APGD-CE and APGD-T (3 targets), 20 iterations: a quick look, not a trustworthy number.
    """
    if isinstance(attacks, str):
        if attacks == "standard":
            l1 = threat.norm == "l1"  # AutoAttack-L1: 5 restarts of l1-APGD (3-2-1 eps schedule), 5 targets
            suite = [APGD(threat, "ce", steps=100, restarts=5 if l1 else 1, seed=seed),
                     APGDT(threat, n_targets=5 if l1 else 9, steps=100, seed=seed),
                     FABT(threat, n_targets=9, steps=100, seed=seed)]
            suite.append(Square(threat, n_queries=5000, p_init=0.8, seed=seed))
            return suite
        if attacks == "rand":
            suite = [APGD(threat, "ce", steps=100, seed=seed), APGDDLR(threat, steps=100, seed=seed)]
            for a in suite:
                a.eot = 20
            return suite
        if attacks == "fast":
            return [APGD(threat, "ce", steps=20, seed=seed), APGDT(threat, n_targets=3, steps=20, seed=seed)]
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    return [a if isinstance(a, Attack) else create_attack(a, threat, seed=seed) for a in attacks]


def iterate_batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from an (x, y) pair, a robustlab Dataset, a DataLoader or any iterable of (x, y)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise InputError(f"batch size mismatch: {x.shape[0]} inputs but {y.shape[0]} labels")
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    if hasattr(data, "batches"):
        yield from data.batches(batch_size)
        return
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise InputError("each batch must be an (inputs, labels) pair")
        yield batch[0], batch[1]


@contextmanager
def eval_mode(model):
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield model
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()


def _device_of(model) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


@dataclass
class EvaluationReport:
    """Per-sample outcome of an evaluation and its summary numbers."""

    threat: ThreatModel
    clean_correct: torch.Tensor
    robust_correct: torch.Tensor
    broken_by: list[str | None]
    attack_names: list[str]
    attack_time_s: dict[str, float]
    time_s: float
    examples: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    sanity: Any = None  # SanityReport of the gradient-masking checks, when run

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy_ci(self) -> tuple[float, float]:
        return wilson_interval(int(self.robust_correct.sum()), self.n)

    @property
    def per_attack(self) -> dict[str, int]:
        """Number of points each attack broke first (points already misclassified count as 'clean')."""
        counts = {name: 0 for name in ["clean", *self.attack_names]}
        for b in self.broken_by:
            if b is not None:
                counts[b] = counts.get(b, 0) + 1
        return counts

    def to_dict(self) -> dict:
        lo, hi = self.robust_accuracy_ci
        return {
            "threat": self.threat.describe(), "norm": self.threat.norm, "eps": self.threat.eps,
            "n": self.n, "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_ci95": [lo, hi], "per_attack": self.per_attack,
            "attack_time_s": self.attack_time_s, "time_s": self.time_s,
            "sanity": self.sanity.to_dict() if self.sanity is not None else None,
        }

    def __str__(self) -> str:
        lo, hi = self.robust_accuracy_ci
        return (f"{self.threat.describe()}: clean {self.clean_accuracy:.2%}, robust {self.robust_accuracy:.2%} "
                f"[{lo:.2%}, {hi:.2%}] on {self.n} points ({self.time_s:.1f}s)")


def evaluate(model, data, threat: ThreatModel, attacks: str | Sequence[Attack | str] = "standard", *,
             batch_size: int = 500, n: int | None = None, seed: int = 0, n_examples: int = 8,
             sanity: str | None = "cheap", _skip: torch.Tensor | None = None) -> EvaluationReport:
    """Robustness of `model` on `data` under `threat`, by a cascade of attacks.

    Args:
        data: an (x, y) pair, a robustlab Dataset, a DataLoader or any iterable of (x, y) batches.
        attacks: "standard" (the AutoAttack protocol: APGD-CE, APGD-T, FAB-T, Square), "rand"
            (EOT over 20 draws, for randomised defences), "fast" (20 iterations, 3 targets), a
            comma-separated string or a list of names / Attack objects.
        n: evaluate at most the first n points.
        sanity: "cheap" (default) runs the cheap gradient-masking checks on the first 200 points and
            flags points that only a black-box attack of the cascade broke; "all" runs every check;
            None runs none. Verdicts land in ``report.sanity``.
    """
    suite = build_suite(attacks, threat, seed=seed)
    names = [a.name for a in suite]
    if len(set(names)) != len(names):
        names = [f"{nm}#{i}" for i, nm in enumerate(names)]
    device = _device_of(model)
    clean_all, robust_all, broken_by = [], [], []
    attack_time = {nm: 0.0 for nm in names}
    examples: dict[str, list[torch.Tensor]] = {"x": [], "x_adv": [], "y": [], "pred_adv": []}
    seen = 0
    start = time.perf_counter()
    with eval_mode(model):
        for xb, yb in iterate_batches(data, batch_size):
            if n is not None and seen >= n:
                break
            if n is not None:
                xb, yb = xb[: n - seen], yb[: n - seen]
            xb, yb = xb.to(device), yb.to(device)
            check_batch(xb, yb, threat.bounds)
            with torch.no_grad():
                correct = model(xb).argmax(1) == yb
            robust = correct.clone()
            if _skip is not None:
                robust &= ~_skip[seen:seen + len(yb)].to(device)
            batch_broken: list[str | None] = ["clean" if not c else None for c in correct.tolist()]
            if _skip is not None:
                for i, s in enumerate(_skip[seen:seen + len(yb)].tolist()):
                    if s and batch_broken[i] is None:
                        batch_broken[i] = "smaller-eps"
            x_adv_batch = xb.clone()
            broken_here = torch.zeros_like(robust)
            if threat.eps > 0:
                for attack, name in zip(suite, names):
                    todo = robust.nonzero().flatten()
                    if todo.numel() == 0:
                        break
                    t0 = time.perf_counter()
                    res = attack(model, xb[todo], yb[todo])
                    attack_time[name] += time.perf_counter() - t0
                    hit = todo[res.success]
                    robust[hit] = False
                    broken_here[hit] = True
                    x_adv_batch[hit] = res.x_adv[res.success]
                    for i in hit.tolist():
                        batch_broken[i] = name
            clean_all.append(correct.cpu())
            robust_all.append(robust.cpu())
            broken_by.extend(batch_broken)
            _collect_examples(model, examples, xb, x_adv_batch, yb, broken_here, n_examples)
            seen += len(yb)
    if seen == 0:
        raise InputError("no data to evaluate")
    ex = {k: torch.cat(v)[:n_examples] if v else torch.empty(0) for k, v in examples.items()}
    checks = None
    if sanity and threat.eps > 0:
        from .sanity import sanity_checks

        checks = sanity_checks(model, data, threat, sanity, n=min(200, seen))
        checks.checks.append(_cascade_check(suite, names, broken_by))
    report = EvaluationReport(threat, torch.cat(clean_all), torch.cat(robust_all), broken_by, names,
                              attack_time, time.perf_counter() - start, ex, checks)
    log.info("%s", report)
    return report


def _cascade_check(suite, names, broken_by):
    """Did a black-box attack of the cascade break points that every white-box attack before it missed?"""
    from .sanity import Check

    counts = {nm: sum(1 for b in broken_by if b == nm) for nm in names}
    black = [nm for a, nm in zip(suite, names) if getattr(a, "needs_gradients", True) is False]
    by_black = sum(counts[nm] for nm in black)
    ev = {"per_attack": counts, "black_box_attacks": black}
    if not black:
        return Check("cascade_black_box", "pass", "no black-box attack in the cascade", ev)
    if by_black > max(2, 0.005 * len(broken_by)):
        return Check("cascade_black_box", "warn",
                     f"{by_black} points were broken only by black-box attacks ({', '.join(black)}) after the "
                     "gradient-based ones failed: a sign of masked gradients", ev)
    return Check("cascade_black_box", "pass",
                 f"black-box attacks broke {by_black} points the gradient attacks missed (at most 2 or 0.5% tolerated)", ev)


def _collect_examples(model, examples, xb, x_adv, yb, broken, k):
    have = sum(t.shape[0] for t in examples["x"])
    if have >= k or not broken.any():
        return
    idx = broken.nonzero().flatten()[: k - have]
    with torch.no_grad():
        pred = model(x_adv[idx]).argmax(1)
    examples["x"].append(xb[idx].cpu())
    examples["x_adv"].append(x_adv[idx].cpu())
    examples["y"].append(yb[idx].cpu())
    examples["pred_adv"].append(pred.cpu())


@dataclass
class RobustnessCurve:
    eps: list[float]
    reports: list[EvaluationReport]

    @property
    def robust_accuracy(self) -> list[float]:
        return [r.robust_accuracy for r in self.reports]

    def to_dict(self) -> dict:
        return {"eps": self.eps, "reports": [r.to_dict() for r in self.reports]}


def robustness_curve(model, data, threat: ThreatModel, eps: Sequence[float],
                     attacks: str | Sequence[Attack | str] = "standard", **kwargs) -> RobustnessCurve:
    """Robust accuracy over a list of eps. The balls are nested, so a point broken at a smaller
    eps counts as broken at every larger one (its adversarial example is still feasible): the
    curve is non-increasing by construction and larger eps only attack the survivors."""
    eps_sorted = sorted(float(e) for e in eps)
    reports: list[EvaluationReport] = []
    skip = None
    for e in eps_sorted:
        rep = evaluate(model, data, threat.with_eps(e), attacks, _skip=skip, **kwargs)
        reports.append(rep)
        skip = ~rep.robust_correct
    return RobustnessCurve(eps_sorted, reports)
