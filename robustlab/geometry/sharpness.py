"""Sharpness of the loss at the trained weights.

- epsilon-sharpness (Keskar et al. 2017): box ``|z_i| <= eps (|w_i| + 1)``,
  ``phi = 100 (max L(w + z) - L(w)) / (1 + L(w))``, maximised by projected sign-gradient ascent.
- worst case in an L2 ball (SAM, Foret et al. 2021): ``max_{||z|| <= rho} L(w + z) - L(w)``, the
  first step ``z = rho g / ||g||``; ``m``-sharpness averages it over chunks of m samples.
- adaptive (ASAM, Kwon et al. 2021): the ball ``||z / T_w|| <= rho`` with ``T_w = |w| + eta``,
  first step ``z = rho T_w^2 g / ||T_w g||``; invariant to the ReLU rescaling for eta = 0.
- average case: ``E_z L(w + z) - L(w)``, z ~ N(0, sigma^2) or N(0, sigma^2 w^2) (``relative``).
- PAC-Bayes flatness (Jiang et al. 2020): the largest sigma of Gaussian weight noise that
  lowers accuracy by at most ``target`` (0.1), found by bisection; reported as 1 / sigma^2.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from ..data.batches import batch_list
from .core import LossFunction, as_geometry, make_generator, random_direction, stderr

log = logging.getLogger(__name__)


@dataclass
class SharpnessResult:
    """``value`` of the measure; ``base_loss`` L(w) and ``perturbed_loss`` at the found point."""

    value: float
    base_loss: float
    perturbed_loss: float
    passes: int
    stderr: float = float("nan")
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"value": self.value, "base_loss": self.base_loss, "perturbed_loss": self.perturbed_loss,
                "passes": self.passes, "stderr": self.stderr, **self.details}


def _L(model, data, objective, params, dtype, attack, robust, batch_size) -> LossFunction:
    return LossFunction(model, data, objective, as_geometry(params), dtype=dtype, attack=attack, robust=robust,
                        batch_size=batch_size)


def eps_sharpness(model, data, eps: float = 1e-3, steps: int = 10, *, objective=None, params=None, dtype=None,
                  attack=None, robust: str = "recraft", batch_size: int = 512) -> SharpnessResult:
    """Keskar et al. (2017) epsilon-sharpness in the full parameter space (projected sign ascent)."""
    if eps <= 0 or steps < 1:
        raise InputError("eps must be > 0 and steps >= 1")
    L = _L(model, data, objective, params, dtype, attack, robust, batch_size)
    w = L.params
    box = {n: eps * (w[n].abs() + 1) for n in w}
    f0, g = L.loss(grad=True)
    z = {n: torch.zeros_like(w[n]) for n in w}
    best = f0
    step = 2.0 / steps
    for i in range(steps):
        z = {n: torch.maximum(torch.minimum(z[n] + step * box[n] * g[n].sign(), box[n]), -box[n]) for n in w}
        p = {n: w[n] + z[n] for n in w}
        if i + 1 < steps:
            f, g = L.loss(p, grad=True)
        else:
            f = L.loss(p)
        best = max(best, f)
    return SharpnessResult(100 * (best - f0) / (1 + f0), f0, best, L.passes, details={"eps": eps, "steps": steps})


def worst_case_sharpness(model, data, rho: float = 0.05, steps: int = 1, *, adaptive: bool = False,
                         eta: float = 0.0, m: int | None = None, objective=None, params=None, dtype=None,
                         attack=None, robust: str = "recraft", batch_size: int = 512) -> SharpnessResult:
    """SAM-style worst-case sharpness ``max_{||z / T|| <= rho} L(w + z) - L(w)`` by ``steps`` of
    normalised gradient ascent (T = 1, or |w| + eta with ``adaptive``); with ``m`` the data is cut
    into chunks of m samples and the per-chunk sharpness averaged (m-sharpness)."""
    if rho <= 0 or steps < 1:
        raise InputError("rho must be > 0 and steps >= 1")
    if m is not None:
        batches = batch_list(data, m)
        vals, base, pert, passes = [], [], [], 0
        for b in batches:
            r = worst_case_sharpness(model, b, rho, steps, adaptive=adaptive, eta=eta, objective=objective,
                                     params=params, dtype=dtype, attack=attack, robust=robust, batch_size=m)
            vals.append(r.value), base.append(r.base_loss), pert.append(r.perturbed_loss)
            passes += r.passes
        return SharpnessResult(sum(vals) / len(vals), sum(base) / len(base), sum(pert) / len(pert), passes,
                               stderr(vals), {"rho": rho, "m": m, "adaptive": adaptive})
    L = _L(model, data, objective, params, dtype, attack, robust, batch_size)
    w = L.params
    T = {n: (w[n].abs() + eta) if adaptive else torch.ones_like(w[n]) for n in w}
    f0, g = L.loss(grad=True)
    u = {n: torch.zeros_like(w[n]) for n in w}  # z = T * u, ||u|| <= rho
    step = rho if steps == 1 else 2.0 * rho / steps
    best = f0
    for i in range(steps):
        tg = {n: T[n] * g[n] for n in w}
        gn = math.sqrt(sum(float((t ** 2).sum()) for t in tg.values())) + 1e-30
        u = {n: u[n] + step * tg[n] / gn for n in w}
        un = math.sqrt(sum(float((t ** 2).sum()) for t in u.values()))
        if un > rho:
            u = {n: u[n] * (rho / un) for n in w}
        p = {n: w[n] + T[n] * u[n] for n in w}
        if i + 1 < steps:
            f, g = L.loss(p, grad=True)
        else:
            f = L.loss(p)
        best = max(best, f)
    return SharpnessResult(best - f0, f0, best, L.passes, details={"rho": rho, "steps": steps, "adaptive": adaptive})


def adaptive_sharpness(model, data, rho: float = 0.5, steps: int = 1, eta: float = 0.0, **kwargs) -> SharpnessResult:
    """ASAM's adaptive worst-case sharpness (Kwon et al. 2021); see :func:`worst_case_sharpness`."""
    return worst_case_sharpness(model, data, rho, steps, adaptive=True, eta=eta, **kwargs)


def average_sharpness(model, data, sigma: float = 0.01, samples: int = 10, *, relative: bool = False,
                      objective=None, params=None, dtype=None, attack=None, robust: str = "recraft",
                      batch_size: int = 512, seed: int = 0) -> SharpnessResult:
    """Average-case sharpness ``E_z L(w + z) - L(w)``; z ~ N(0, sigma^2 I), or N(0, sigma^2 w^2)
    elementwise with ``relative=True`` (then invariant to the ReLU rescaling)."""
    L = _L(model, data, objective, params, dtype, attack, robust, batch_size)
    w = L.params
    gen = make_generator(seed)
    f0 = L.loss()
    vals = []
    for _ in range(samples):
        z = random_direction(w, gen)  # drawn on the CPU generator, moved to the weights' device
        p = {n: w[n] + sigma * (w[n].abs() if relative else 1.0) * z[n] for n in w}
        vals.append(L.loss(p) - f0)
    mean = sum(vals) / len(vals)
    return SharpnessResult(mean, f0, f0 + mean, L.passes, stderr(vals), {"sigma": sigma, "relative": relative})


def pac_bayes_sigma(model, data, target: float = 0.1, samples: int = 5, *, magnitude_aware: bool = False,
                    eps: float = 1e-3, iterations: int = 12, low: float = 1e-5, high: float = 10.0,
                    objective=None, params=None, dtype=None, attack=None, robust: str = "recraft",
                    batch_size: int = 512, seed: int = 0) -> SharpnessResult:
    """Jiang et al. (2020) PAC-Bayes flatness: bisection (in log sigma) for the largest sigma whose
    Gaussian weight noise lowers accuracy (1 - objective success rate) by at most ``target``,
    averaged over ``samples`` draws. ``magnitude_aware``: noise variance sigma^2 w^2 + eps^2.
    ``value`` = 1 / sigma^2 (larger = sharper). Both ends of ``[low, high]`` are checked first; if
    they do not bracket the answer, ``details["bracketed"]`` is False, a warning is logged and the
    violated end is returned (a bound, not the answer)."""
    if not 0 < low < high or not 0 <= target < 1 or samples < 1:
        raise InputError(f"pac_bayes_sigma needs 0 < low < high, 0 <= target < 1 and samples >= 1; got low={low}, "
                         f"high={high}, target={target}, samples={samples}")
    L = _L(model, data, objective, params, dtype, attack, robust, batch_size)
    w = L.params
    _, succ = L.per_sample()
    if succ is None:
        raise InputError("pac_bayes_sigma needs an objective with success flags (accuracy)")
    acc0 = 1 - float(succ.float().mean())

    def drop(sigma: float) -> float:
        gen = make_generator(seed)
        accs = []
        for _ in range(samples):
            std = {n: (sigma ** 2 * w[n] ** 2 + eps ** 2).sqrt() if magnitude_aware else sigma for n in w}
            z = random_direction(w, gen)
            p = {n: w[n] + std[n] * z[n] for n in w}
            accs.append(1 - float(L.per_sample(p)[1].float().mean()))
        return acc0 - sum(accs) / len(accs)

    # the bracket must hold the answer: drop(low) <= target < drop(high); otherwise say so
    drop_low, drop_high = drop(low), drop(high)
    bracketed = drop_low <= target < drop_high
    if bracketed:
        lo, hi = math.log(low), math.log(high)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if drop(math.exp(mid)) <= target:
                lo = mid
            else:
                hi = mid
        sigma = math.exp(lo)
    else:
        sigma = low if drop_low > target else high
        log.warning("pac_bayes_sigma: [low=%.3g, high=%.3g] does not bracket the answer (accuracy drop %.3f at low, "
                    "%.3f at high, target %.3g); reporting sigma=%.3g, a bound only: %s", low, high, drop_low,
                    drop_high, target, sigma, "lower `low`" if drop_low > target else
                    "raise `high` (or the model's accuracy is below the target drop)")
    return SharpnessResult(1 / sigma ** 2, 1 - acc0, float("nan"), L.passes,
                           details={"sigma": sigma, "target": target, "accuracy": acc0,
                                    "magnitude_aware": magnitude_aware, "bracketed": bracketed,
                                    "drop_low": drop_low, "drop_high": drop_high})
