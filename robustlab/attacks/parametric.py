"""Beyond the image space: threat models that perturb a few parameters of a differentiable
transform (colour, geometry, blur and lighting), the PGD attack on those parameters, and EOT
(Expectation over Transformation, Athalye et al. 2018) for robustness to physical variation.

A parametric threat has identity parameters theta_0 and a per-parameter range r; the feasible set is
|theta - theta_0| <= eps * r elementwise, so ``eps`` scales the whole box (eps = 1: the nominal
ranges) and robustness curves over eps work as for pixel threats.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError, check_eps
from ..objectives import Objective
from .base import AttackContext, IterativeAttack


class ParametricThreat:
    """Base class: subclasses define ``names``, ``identity``, ``ranges`` and ``transform(x, theta)``."""

    norm = "param"
    names: tuple[str, ...] = ()

    def __init__(self, eps: float = 1.0, ranges: dict[str, float] | None = None, bounds=(0.0, 1.0)):
        self.eps = check_eps(eps)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.mask = None
        r = dict(self.default_ranges())
        for k, v in (ranges or {}).items():
            if k not in r:
                raise InputError(f"unknown parameter {k!r} for {type(self).__name__}; known: {', '.join(r)}")
            r[k] = float(v)
        self.range_values = r

    # ---- to implement --------------------------------------------------------------------
    def default_ranges(self) -> dict[str, float]:
        raise NotImplementedError

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """theta_0 for a batch, shape [B, P]."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- threat-model interface ------------------------------------------------------------
    def param_ranges(self, x: torch.Tensor) -> torch.Tensor:
        return self.eps * self._expand_ranges(x)

    def _expand_ranges(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.range_values[n] for n in self.param_names(x)], dtype=x.dtype, device=x.device)

    def param_names(self, x: torch.Tensor) -> list[str]:
        return list(self.names)

    def with_eps(self, eps: float) -> "ParametricThreat":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.eps = check_eps(eps)
        return new

    def apply(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.transform(x, theta).clamp(*self.bounds)

    def project_params(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        t0, r = self.identity(x), self.param_ranges(x)
        return torch.maximum(torch.minimum(theta, t0 + r), t0 - r)

    def random_params(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Uniform in the box, from uniform [0, 1) numbers u of shape [B, P]."""
        return self.identity(x) + (2 * u - 1) * self.param_ranges(x)

    def describe(self) -> str:
        return f"{type(self).__name__} eps={self.eps:g} ranges={self.range_values}"

    def contains(self, x, x_adv, tol=1e-5):  # the pixels are not norm-bounded; only the bounds apply
        return ((x_adv >= self.bounds[0] - tol) & (x_adv <= self.bounds[1] + tol)).flatten(1).all(1)


class ColorThreat(ParametricThreat):
    """Per-channel affine colour change x'_c = a_c x_c + b_c (contrast a, brightness b)."""

    names = ("contrast", "brightness")

    def default_ranges(self):
        return {"contrast": 0.3, "brightness": 0.2}

    def param_names(self, x):
        c = x.shape[1]
        return ["contrast"] * c + ["brightness"] * c

    def identity(self, x):
        c = x.shape[1]
        return torch.cat([torch.ones(x.shape[0], c), torch.zeros(x.shape[0], c)], 1).to(x)

    def transform(self, x, theta):
        c = x.shape[1]
        a, b = theta[:, :c, None, None], theta[:, c:, None, None]
        return a * x + b


class GeometricThreat(ParametricThreat):
    """Rotation (degrees), translation (fractions of the image) and scale, via affine_grid."""

    names = ("rotation", "tx", "ty", "scale")

    def default_ranges(self):
        return {"rotation": 30.0, "tx": 0.1, "ty": 0.1, "scale": 0.1}

    def identity(self, x):
        return torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype, device=x.device).expand(x.shape[0], 4).clone()

    def transform(self, x, theta):
        ang = theta[:, 0] * math.pi / 180
        s = theta[:, 3]
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        mat = torch.stack([torch.stack([cos, -sin, theta[:, 1] * 2], 1), torch.stack([sin, cos, theta[:, 2] * 2], 1)], 1)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BlurLightingThreat(ParametricThreat):
    """Gaussian blur (sigma in pixels, differentiable kernel) and a linear lighting ramp:
    x' = blur(x) * (1 + gx * u + gy * v) + bias with u, v in [-1, 1] the image coordinates."""

    names = ("sigma", "gx", "gy", "bias")

    def default_ranges(self):
        return {"sigma": 1.5, "gx": 0.3, "gy": 0.3, "bias": 0.1}

    def identity(self, x):
        t = torch.zeros(x.shape[0], 4, dtype=x.dtype, device=x.device)
        return t

    def project_params(self, x, theta):
        theta = super().project_params(x, theta)
        return torch.cat([theta[:, :1].clamp_min(0), theta[:, 1:]], 1)  # sigma >= 0

    def transform(self, x, theta):
        b, c, h, w = x.shape
        sigma = theta[:, 0].clamp_min(1e-3)
        k = 7
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)                                           # [B, k]
        xp = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="replicate")
        # separable blur with a per-sample kernel: grouped convolution over B*C channels
        xr = xp.reshape(1, b * c, *xp.shape[-2:])
        kh = g.repeat_interleave(c, 0)[:, None, None, :]
        kv = g.repeat_interleave(c, 0)[:, None, :, None]
        blurred = F.conv2d(F.conv2d(xr, kh, groups=b * c), kv, groups=b * c).reshape(b, c, h, w)
        v = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device)[:, None]
        u = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device)[None, :]
        gain = 1 + theta[:, 1, None, None] * u + theta[:, 2, None, None] * v
        return blurred * gain[:, None] + theta[:, 3, None, None, None]


class ParametricPGD(IterativeAttack):
    """PGD on the parameters of a ParametricThreat: theta <- P(theta + alpha * r * sign(grad_theta L)),
    alpha = ``rel_step`` of each parameter's range; random start inside the box (``random_start``)."""

    name = "parametric-pgd"

    def __init__(self, threat: ParametricThreat, objective: Objective | str | None = None, *, steps: int = 20,
                 rel_step: float = 0.1, restarts: int = 1, random_start: bool = True, early_stop: bool = True,
                 seed: int = 0):
        if not isinstance(threat, ParametricThreat):
            raise InputError("ParametricPGD needs a ParametricThreat (ColorThreat, GeometricThreat, BlurLightingThreat)")
        super().__init__(threat, objective, early_stop=early_stop, seed=seed)
        self.steps, self.restarts, self.rel_step, self.random_start = int(steps), int(restarts), float(rel_step), random_start

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        th = ctx.threat
        p = th.identity(ctx.x).shape[1]
        theta = th.random_params(ctx.x, ctx.rand_full((p,))) if self.random_start else th.identity(ctx.x)
        return {"theta": theta, "x_adv": th.apply(ctx.x, theta)}

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        th = ctx.threat
        theta = s["theta"].detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = th.apply(ctx.x, theta)
        _, grad_x, _, _ = ctx.loss_and_grad(x_adv.detach())
        grad_theta, = torch.autograd.grad(x_adv, theta, grad_x)
        step = self.rel_step * th.param_ranges(ctx.x)
        theta = th.project_params(ctx.x, theta.detach() + step * grad_theta.sign())
        return {"theta": theta, "x_adv": th.apply(ctx.x, theta).detach()}


class RandomTransform(nn.Module):
    """A model seen through a random transformation drawn at every call: with ``attack.eot = n``
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
