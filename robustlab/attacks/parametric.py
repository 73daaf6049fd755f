"""Beyond the image space, the attack side: PGD on the parameters of a ``ParametricThreat``
(colour, geometry, blur and lighting; the threats live in ``robustlab.threat``), and EOT
(Expectation over Transformation, Athalye et al. 2018) for robustness to physical variation.

Parametric threats follow the engine's threat contract (``init``, ``apply``, ``project``, ``step``),
so every attack runs on them; ``ParametricPGD`` is plain PGD with a step given relative to eps.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import InputError
from ..objectives import Objective
from ..threat import BlurLightingThreat, ColorThreat, GeometricThreat, ParametricThreat
from .gradient import PGD

__all__ = ["BlurLightingThreat", "ColorThreat", "GeometricThreat", "ParametricPGD", "ParametricThreat",
           "RandomTransform", "survival_rate"]


class ParametricPGD(PGD):
    """PGD on the parameters of a ParametricThreat: theta <- P(theta + alpha * r * sign(grad_theta L)),
    alpha = ``rel_step`` * eps (of each parameter's range r); random start inside the box."""

    name = "parametric-pgd"

    def __init__(self, threat: ParametricThreat, objective: Objective | str | None = None, *, steps: int = 20,
                 rel_step: float = 0.1, restarts: int = 1, random_start: bool = True, **options):
        if not isinstance(threat, ParametricThreat):
            raise InputError("ParametricPGD needs a ParametricThreat (ColorThreat, GeometricThreat, BlurLightingThreat)")
        super().__init__(threat, objective, steps=steps, rel_step_size=rel_step, restarts=restarts,
                         random_start=random_start, **options)


class RandomTransform(nn.Module):
    """A model seen through a random transformation drawn at every call: with an attack's ``eot=n`` option
    the engine averages the loss gradient over n draws per step (EOT)."""

    def __init__(self, model: nn.Module, threat: ParametricThreat, generator: torch.Generator | None = None):
        super().__init__()
        self.model, self.threat, self.generator = model, threat, generator

    def forward(self, x):
        p = self.threat.identity(x).shape[1]
        u = torch.rand(x.shape[0], p, generator=self.generator, dtype=x.dtype)
        return self.model(self.threat.apply(x, self.threat.random_params(x, u)))


def survival_rate(model: Callable, x_adv: torch.Tensor, y: torch.Tensor, threat: ParametricThreat, n: int = 50,
                  seed: int = 0) -> torch.Tensor:
    """Per sample: the fraction of n random transformations under which x_adv stays misclassified."""
    gen = torch.Generator().manual_seed(seed)
    rand = RandomTransform(model, threat, gen)
    hits = torch.zeros(x_adv.shape[0])
    with torch.no_grad():
        for _ in range(n):
            hits += (rand(x_adv).argmax(1) != y).float()
    return hits / n
