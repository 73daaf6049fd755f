"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019): signs that a robustness
number comes from obfuscated gradients rather than from robustness, for any task.

``sanity_checks(model, data, threat, objective=...)`` runs each check and returns verdicts ("pass" /
"warn" / "fail", or "not run" with the reason where a check cannot apply) with the evidence behind
them; ``evaluate(..., sanity="cheap")`` runs the cheap ones.
Every check is stated on the task's objective: attack strength is compared first by the share of
points where the objective succeeds and, where no attack reaches success (an untargeted regression
attack that never stops early), by the mean objective loss reached (the mean error, for disparity).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..attacks import APGD, FGSM, PGD, Square
from ..attacks.base import AttackResult
from ..objectives import CrossEntropy, Objective
from ..threat import ThreatModel
from .checks import Check, SanityReport
from ..targets import target_to
from ..data.batches import materialize
from ..runtime import device_of, eval_mode

CHEAP = ("randomness", "probabilities", "gradients", "one_step_vs_iterative")
ALL = CHEAP + ("black_box_vs_white_box", "large_eps", "convergence")

__all__ = ["ALL", "CHEAP", "CHECKS", "Check", "SanityReport", "attack_strength", "sanity_checks"]


def attack_strength(result: AttackResult) -> tuple[float, float]:
    """(success rate, mean objective loss reached): how strong an attack was on a batch."""
    return result.success_rate, float(result.loss.double().mean())


def _stronger(a: AttackResult, b: AttackResult, rel: float) -> bool:
    """Is `a` clearly stronger than `b`? By success where either succeeds, else by the loss reached."""
    (sa, la), (sb, lb) = attack_strength(a), attack_strength(b)
    if sa > 0 or sb > 0:
        return sa > sb + rel
    return la > lb + rel * max(abs(lb), 1e-12)


def _robust(model, x, y, objective, result) -> torch.Tensor:
    with torch.no_grad():
        correct = ~objective.success(model(x), y)
    return correct & ~result.success


def check_randomness(model, x, y, threat, objective) -> Check:
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    flips = int((objective.success(a, y) != objective.success(b, y)).sum())
    if diff > 1e-4:
        return Check("randomness", "warn",
                     f"outputs differ between two identical calls (max diff {diff:.3g}, {flips} success flips): the "
                     "model is randomised; evaluate it with attacks='rand' (EOT over 20 draws)",
                     {"max_abs_diff": diff, "success_flips": flips})
    return Check("randomness", "pass", "outputs are deterministic", {"max_abs_diff": diff})


def check_probabilities(model, x, y, threat, objective) -> Check:
    with torch.no_grad():
        out = model(x)
    if out.dim() != 2 or getattr(objective, "task", None) != "classification":
        return Check.not_run("probabilities", "the outputs are not class scores")
    sums = out.sum(1)
    looks = bool((out >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-3))
    if looks:
        return Check("probabilities", "warn",
                     "outputs are non-negative rows summing to 1: probabilities, not logits; a softmax before the "
                     "loss saturates and masks gradients", {"row_sum_mean": float(sums.mean())})
    return Check("probabilities", "pass", "outputs look like logits", {})


def check_gradients(model, x, y, threat, objective) -> Check:
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = objective.loss(model(x_req), y).sum()
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


def check_one_step_vs_iterative(model, x, y, threat, objective) -> Check:
    """FGSM must not beat PGD-20; and when FGSM robust accuracy exceeds PGD's by more than 30 points
    the model shows the signature of catastrophic overfitting (Wong et al. 2020): single-step
    evaluations of it are worthless, and single-step training produced it."""
    fgsm = FGSM(threat, objective)(model, x, y)
    pgd = PGD(threat, objective, steps=20)(model, x, y)
    beats = int((fgsm.success & ~pgd.success).sum())
    (sf, lf), (sp, lp) = attack_strength(fgsm), attack_strength(pgd)
    fgsm_acc = float(_robust(model, x, y, objective, fgsm).float().mean())
    pgd_acc = float(_robust(model, x, y, objective, pgd).float().mean())
    ev = {"fgsm_success": sf, "pgd_success": sp, "fgsm_mean_loss": lf, "pgd_mean_loss": lp, "points_fgsm_only": beats,
          "fgsm_robust_accuracy": fgsm_acc, "pgd_robust_accuracy": pgd_acc}
    if beats > max(1, 0.02 * len(x)) or _stronger(fgsm, pgd, 0.02):
        return Check("one_step_vs_iterative", "warn",
                     f"FGSM is stronger than PGD-20 (success {sf:.1%} vs {sp:.1%}, mean loss {lf:.4g} vs {lp:.4g}, "
                     f"{beats} points FGSM-only): the loss surface is not smooth enough for iterative attacks", ev)
    if fgsm_acc - pgd_acc > 0.3:
        return Check("one_step_vs_iterative", "warn",
                     f"catastrophic overfitting: FGSM robust accuracy {fgsm_acc:.1%} is {100 * (fgsm_acc - pgd_acc):.0f} "
                     f"points above PGD-20's {pgd_acc:.1%}; single-step attacks are useless on this model (and "
                     "single-step training made it so: retrain with PGD, GradAlign or a smaller FGSM step)", ev)
    return Check("one_step_vs_iterative", "pass", "PGD-20 is at least as strong as FGSM", ev)


def check_black_box_vs_white_box(model, x, y, threat, objective, max_queries: int = 1000) -> Check:
    if not (threat.variable_is_point and threat.norm in ("linf", "l2", "l1")):
        return Check.not_run("black_box_vs_white_box", "Square supports linf, l2 and l1 pixel threats only")
    if x.dim() != 4:
        return Check.not_run("black_box_vs_white_box", "Square needs image inputs [B, C, H, W]")
    white = APGD(threat, objective, steps=50)(model, x, y)
    black = Square(threat, objective, max_queries=max_queries)(model, x, y)
    beats = int((black.success & ~white.success).sum())
    ev = {"apgd_success": white.success_rate, "square_success": black.success_rate, "points_square_only": beats,
          "apgd_mean_loss": attack_strength(white)[1], "square_mean_loss": attack_strength(black)[1]}
    if beats > max(2, 0.03 * len(x)) or (white.success_rate == 0 and black.success_rate == 0 and _stronger(black, white, 0.0)):
        return Check("black_box_vs_white_box", "warn",
                     f"Square ({max_queries} queries) is stronger than APGD-50 ({beats} points Square-only): gradients "
                     "are uninformative (masked); trust only the black-box part of the evaluation", ev)
    return Check("black_box_vs_white_box", "pass", "the black-box attack finds nothing APGD misses", ev)


def check_large_eps(model, x, y, threat, objective) -> Check:
    lo, hi = threat.bounds
    if not threat.variable_is_point:
        big = threat.with_eps(5 * threat.eps)
    else:
        big = threat.with_eps({"linf": hi - lo, "l2": (hi - lo) * x[0].numel() ** 0.5, "l1": (hi - lo) * x[0].numel()}[threat.norm])
    small = PGD(threat, objective, steps=50, step_size=threat.eps / 10)(model, x, y)
    res = PGD(big, objective, steps=50, step_size=big.eps / 10)(model, x, y)
    robust = float(_robust(model, x, y, objective, res).float().mean())
    ev = {"eps": big.eps, "robust_accuracy": robust, "mean_loss": attack_strength(res)[1],
          "mean_loss_at_eps": attack_strength(small)[1]}
    if robust > 0 and (res.success_rate > 0 or not _stronger(res, small, 0.0)):
        return Check("large_eps", "warn",
                     f"robust accuracy stays at {robust:.1%} at eps={big.eps:g}"
                     + (", where every input is reachable" if threat.variable_is_point else "")
                     + ": the attack is failing, not the model resisting", ev)
    return Check("large_eps", "pass", f"a larger eps ({big.eps:g}) breaks every point or raises the loss", ev)


def check_convergence(model, x, y, threat, objective) -> Check:
    short = APGD(threat, objective, steps=25)(model, x, y)
    long = APGD(threat, objective, steps=100, restarts=2)(model, x, y)
    a = float(_robust(model, x, y, objective, short).float().mean())
    b = float(_robust(model, x, y, objective, long).float().mean())
    ev = {"robust_acc_25_steps": a, "robust_acc_100_steps_2_restarts": b,
          "mean_loss_25_steps": attack_strength(short)[1], "mean_loss_100_steps_2_restarts": attack_strength(long)[1]}
    if a - b > max(0.02, 3 / len(x)) or (short.success_rate == 0 and long.success_rate == 0 and _stronger(long, short, 0.15)):
        return Check("convergence", "warn",
                     f"8x more attack effort is stronger (robust accuracy {a:.1%} -> {b:.1%}, mean loss "
                     f"{ev['mean_loss_25_steps']:.4g} -> {ev['mean_loss_100_steps_2_restarts']:.4g}): not converged; "
                     "report the stronger number and try more steps/restarts", ev)
    return Check("convergence", "pass", "more steps and restarts do not change the result", ev)


CHECKS: dict[str, Callable] = {
    "randomness": check_randomness, "probabilities": check_probabilities, "gradients": check_gradients,
    "one_step_vs_iterative": check_one_step_vs_iterative, "black_box_vs_white_box": check_black_box_vs_white_box,
    "large_eps": check_large_eps, "convergence": check_convergence,
}


def sanity_checks(model, data, threat: ThreatModel, checks: str | tuple[str, ...] = "all", n: int = 200,
                  objective: Objective | None = None) -> SanityReport:
    """Run gradient-masking checks on the first `n` points of `data` ((x, target), a Dataset or a loader).

    ``checks``: "all", "cheap" or a tuple of names from ``CHECKS``; ``objective``: the task's
    objective (default cross-entropy). Data are moved to the model's device; a per-sample threat is
    taken for the first n points.
    """
    objective = objective if objective is not None else CrossEntropy()
    names = ALL if checks == "all" else CHEAP if checks == "cheap" else tuple(checks)
    x, y = materialize(data, n)
    device = device_of(model)
    x, y = x.to(device), target_to(y, device)
    if threat.has_per_sample_state:
        threat = threat.subset(torch.arange(x.shape[0]))
    with eval_mode(model):
        return SanityReport([CHECKS[name](model, x, y, threat, objective) for name in names])
