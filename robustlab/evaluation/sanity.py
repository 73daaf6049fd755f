"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019): signs that a robustness
number comes from obfuscated gradients rather than from robustness.

``sanity_checks(model, data, threat)`` runs each check and returns verdicts ("pass" / "warn" /
"fail") with the evidence behind them. ``evaluate(..., sanity="cheap")`` runs the cheap ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..attacks import APGD, FGSM, PGD, Square
from ..threat import ThreatModel

CHEAP = ("randomness", "probabilities", "gradients", "one_step_vs_iterative")
ALL = CHEAP + ("black_box_vs_white_box", "large_eps", "convergence")


@dataclass
class Check:
    name: str
    verdict: str              # pass | warn | fail
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "message": self.message, "evidence": self.evidence}


@dataclass
class SanityReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.verdict == "pass" for c in self.checks)

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> list[dict]:
        return [c.to_dict() for c in self.checks]

    def __str__(self) -> str:
        return "\n".join(f"[{c.verdict:>4}] {c.name}: {c.message}" for c in self.checks)


def _robust(model, x, y, result) -> torch.Tensor:
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return correct & ~result.success


def check_randomness(model, x, y, threat) -> Check:
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    flips = int((a.argmax(1) != b.argmax(1)).sum())
    if diff > 1e-4:
        return Check("randomness", "warn",
                     f"outputs differ between two identical calls (max diff {diff:.3g}, {flips} label flips): the "
                     "model is randomised; evaluate it with attacks='rand' (EOT over 20 draws)",
                     {"max_abs_diff": diff, "label_flips": flips})
    return Check("randomness", "pass", "outputs are deterministic", {"max_abs_diff": diff})


def check_probabilities(model, x, y, threat) -> Check:
    with torch.no_grad():
        out = model(x)
    sums = out.sum(1)
    looks = bool((out >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-3))
    if looks:
        return Check("probabilities", "warn",
                     "outputs are non-negative rows summing to 1: probabilities, not logits; a softmax before the "
                     "loss saturates and masks gradients", {"row_sum_mean": float(sums.mean())})
    return Check("probabilities", "pass", "outputs look like logits", {})


def check_gradients(model, x, y, threat) -> Check:
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x_req), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_req)
    finite = torch.isfinite(grad.flatten(1)).all(1)
    norms = grad.flatten(1).norm(dim=1)
    zero = float(((norms < 1e-12) & finite).float().mean())
    ev = {"zero_gradient_fraction": zero, "non_finite": int((~finite).sum()),
          "median_gradient_norm": float(norms[finite].median()) if finite.any() else float("nan")}
    if (~finite).any():
        return Check("gradients", "fail", f"{int((~finite).sum())} samples have NaN/inf input gradients", ev)
    if zero > 0.1:
        return Check("gradients", "warn",
                     f"{zero:.0%} of samples have zero input gradient (shattered/masked gradients: quantisation, "
                     "thresholding, saturated softmax); gradient attacks cannot work there, use BPDA or black-box attacks", ev)
    return Check("gradients", "pass", "input gradients are finite and non-zero", ev)


def check_one_step_vs_iterative(model, x, y, threat) -> Check:
    fgsm = FGSM(threat)(model, x, y)
    pgd = PGD(threat, steps=20)(model, x, y)
    beats = int((fgsm.success & ~pgd.success).sum())
    ev = {"fgsm_success": fgsm.success_rate, "pgd_success": pgd.success_rate, "points_fgsm_only": beats}
    if fgsm.success_rate > pgd.success_rate or beats > max(1, 0.02 * len(y)):
        return Check("one_step_vs_iterative", "warn",
                     f"FGSM breaks {beats} points that PGD-20 does not (FGSM {fgsm.success_rate:.1%} vs PGD "
                     f"{pgd.success_rate:.1%}): the loss surface is not smooth enough for iterative attacks", ev)
    return Check("one_step_vs_iterative", "pass", "PGD-20 is at least as strong as FGSM", ev)


def check_black_box_vs_white_box(model, x, y, threat, n_queries: int = 1000) -> Check:
    white = APGD(threat, steps=50)(model, x, y)
    if threat.norm not in ("linf", "l2"):
        return Check("black_box_vs_white_box", "pass", "skipped: Square supports linf and l2 only", {})
    black = Square(threat, n_queries=n_queries)(model, x, y)
    beats = int((black.success & ~white.success).sum())
    ev = {"apgd_success": white.success_rate, "square_success": black.success_rate, "points_square_only": beats}
    if beats > max(2, 0.03 * len(y)):
        return Check("black_box_vs_white_box", "warn",
                     f"Square ({n_queries} queries) breaks {beats} points that APGD misses: gradients are "
                     "uninformative (masked); trust only the black-box part of the evaluation", ev)
    return Check("black_box_vs_white_box", "pass", "the black-box attack finds nothing APGD misses", ev)


def check_large_eps(model, x, y, threat) -> Check:
    lo, hi = threat.bounds
    big = threat.with_eps({"linf": hi - lo, "l2": (hi - lo) * x[0].numel() ** 0.5, "l1": (hi - lo) * x[0].numel()}[threat.norm])
    res = PGD(big, steps=50, step_size=big.eps / 10)(model, x, y)
    robust = float(_robust(model, x, y, res).float().mean())
    ev = {"eps": big.eps, "robust_accuracy": robust}
    if robust > 0:
        return Check("large_eps", "warn",
                     f"robust accuracy stays at {robust:.1%} at eps={big.eps:g}, where every input is reachable: "
                     "the attack is failing, not the model resisting", ev)
    return Check("large_eps", "pass", f"robust accuracy reaches 0 at eps={big.eps:g}", ev)


def check_convergence(model, x, y, threat) -> Check:
    short = APGD(threat, steps=25)(model, x, y)
    long = APGD(threat, steps=100, restarts=2)(model, x, y)
    a, b = float(_robust(model, x, y, short).float().mean()), float(_robust(model, x, y, long).float().mean())
    ev = {"robust_acc_25_steps": a, "robust_acc_100_steps_2_restarts": b}
    if a - b > max(0.02, 3 / len(y)):
        return Check("convergence", "warn",
                     f"8x more attack effort lowers robust accuracy from {a:.1%} to {b:.1%}: not converged; "
                     "report the stronger number and try more steps/restarts", ev)
    return Check("convergence", "pass", "more steps and restarts do not lower robust accuracy", ev)


CHECKS = {
    "randomness": check_randomness, "probabilities": check_probabilities, "gradients": check_gradients,
    "one_step_vs_iterative": check_one_step_vs_iterative, "black_box_vs_white_box": check_black_box_vs_white_box,
    "large_eps": check_large_eps, "convergence": check_convergence,
}


def sanity_checks(model, data, threat: ThreatModel, checks: str | tuple[str, ...] = "all", n: int = 200) -> SanityReport:
    """Run gradient-masking checks on the first `n` points of `data` ((x, y) or a Dataset).

    ``checks``: "all", "cheap" or a tuple of names from ``CHECKS``.
    """
    from .suite import eval_mode, iterate_batches

    names = ALL if checks == "all" else CHEAP if checks == "cheap" else tuple(checks)
    xs, ys = [], []
    for xb, yb in iterate_batches(data, n):
        xs.append(xb)
        ys.append(yb)
        if sum(len(t) for t in ys) >= n:
            break
    x, y = torch.cat(xs)[:n], torch.cat(ys)[:n]
    with eval_mode(model):
        return SanityReport([CHECKS[name](model, x, y, threat) for name in names])
