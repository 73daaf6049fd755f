"""Flatness of the robust loss (Stutz, Hein & Schiele 2021).

The robust loss is ``L_rob(w) = 1/N sum_i max_{delta in threat} loss(f_w(x_i + delta), y_i)``,
approximated by the attack. Relative weight perturbations ``nu`` have, per parameter tensor,
``||nu_l|| <= xi ||w_l||``.

- average case: ``E_nu [L_rob(w + nu)] - L_rob(w)`` with nu random on the sphere of radius
  ``xi ||w_l||`` per tensor, the attack re-run against every perturbed model;
- worst case: ``max_nu L_rob(w + nu) - L_rob(w)`` by joint ascent on weights (normalised per-layer
  gradient steps, projected back) and inputs (PGD warm-started from the previous adversarials).

Build the attack with ``early_stop=False`` so it maximises the loss instead of stopping at the
first misclassification.
"""
from __future__ import annotations

import logging

import torch

from ..attacks import PGD
from ..errors import InputError
from .core import LossFunction, as_geometry, make_generator, random_direction, stderr
from .sharpness import SharpnessResult

log = logging.getLogger(__name__)


def _check_attack(attack):
    if attack is None or not hasattr(attack, "threat"):
        raise InputError("robust flatness needs attack=, e.g. PGD(ThreatModel('linf', 0.1), steps=10, early_stop=False)")


def average_robust_flatness(model, data, attack, xi: float = 0.5, samples: int = 10, *, objective=None,
                            params="weights", dtype=None, batch_size: int = 512, seed: int = 0) -> SharpnessResult:
    """Average-case robust flatness: mean robust-loss increase under random relative weight noise."""
    _check_attack(attack)
    L = LossFunction(model, data, objective, as_geometry(params), dtype=dtype, attack=attack, robust="recraft",
                     batch_size=batch_size)
    w = L.params
    gen = make_generator(seed)
    f0 = L.loss()
    vals = []
    for _ in range(samples):
        z = random_direction(w, gen)  # CPU generator, moved to the weights' device
        p = {n: t + xi * t.norm() * z[n] / z[n].norm().clamp_min(1e-12) for n, t in w.items()}
        vals.append(L.loss(p) - f0)
    mean = sum(vals) / len(vals)
    return SharpnessResult(mean, f0, f0 + mean, L.passes, stderr(vals), {"xi": xi, "samples": samples})


def worst_robust_flatness(model, data, attack, xi: float = 0.01, steps: int = 5, inner_steps: int | None = None,
                          *, objective=None, params="weights", dtype=None, batch_size: int = 512) -> SharpnessResult:
    """Worst-case robust flatness: joint ascent on weights (``steps`` normalised per-tensor steps of
    size 2 xi / steps, projected onto ``||nu_l|| <= xi ||w_l||``) and inputs (PGD, warm-started)."""
    _check_attack(attack)
    L = LossFunction(model, data, objective, as_geometry(params), dtype=dtype, attack=attack, robust="fixed",
                     batch_size=batch_size)
    w = L.params
    f0 = L.loss()  # crafts the adversarials at w (held for the joint ascent below)
    xs = list(L.fixed_adv)
    inner = inner_steps or max(1, int(getattr(attack, "steps", 10)) // 2)
    step_size = getattr(attack, "step_size", None)
    nu = {n: torch.zeros_like(t) for n, t in w.items()}
    radius = {n: xi * float(t.norm()) for n, t in w.items()}
    f = f0
    for s in range(steps):
        p = {n: w[n] + nu[n] for n in w}
        f, g = L.loss(p, grad=True)
        for n in w:
            gn = float(g[n].norm())
            if gn > 0:
                nu[n] = nu[n] + (2 * radius[n] / steps) * g[n] / gn
            nn_ = float(nu[n].norm())
            if nn_ > radius[n]:
                nu[n] = nu[n] * (radius[n] / nn_)
        p = {n: w[n] + nu[n] for n in w}
        f_model = L.predictor(p)
        for i, (x, t) in enumerate(L.batches):
            pgd = PGD(attack.threat, attack.objective, steps=inner, step_size=step_size, starting_points=xs[i],
                      random_start=False, early_stop=False)
            with torch.enable_grad():
                xs[i] = pgd(f_model, x, t).x_adv.detach().to(x.dtype)
        L.fixed_adv = xs
    final = L.loss({n: w[n] + nu[n] for n in w})
    worst = max(final, f)
    return SharpnessResult(worst - f0, f0, worst, L.passes, details={"xi": xi, "steps": steps})
