"""Perturbations shared across inputs, as first-class results that can be saved and applied to
new data: universal perturbations (Moosavi-Dezfooli et al. 2017; optimised here by stochastic
projected sign ascent on the mean loss, Shafahi et al. 2020) and adversarial patches (Brown et al.
2017: a square of unbounded values at a random location, with EOT over locations)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import InputError
from ..fileio import atomic_torch_save
from ..objectives import CrossEntropy, Objective, get_objective
from ..threat import ThreatModel


def _shuffled_batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _fooling_rate(model, x_adv, y, objective, batch_size=500) -> float:
    hits = 0
    with torch.no_grad():
        for i in range(0, x_adv.shape[0], batch_size):
            out = model(x_adv[i:i + batch_size])
            hits += int(objective.success(out, y[i:i + batch_size]).sum())
    return hits / max(1, x_adv.shape[0])


@dataclass
class UniversalPerturbation:
    """One delta for every input: x_adv = clamp(x + delta). ``fit`` optimises it; ``apply``,
    ``success_rate``, ``save`` and ``load`` use it on new data."""

    delta: torch.Tensor
    threat: ThreatModel
    history: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, model: Callable, x: torch.Tensor, y: Any, threat: ThreatModel, objective: Objective | str | None = None,
            epochs: int = 5, batch_size: int = 128, step_size: float | None = None, seed: int = 0) -> "UniversalPerturbation":
        objective = get_objective(objective) if objective is not None else CrossEntropy()
        gen = torch.Generator().manual_seed(seed)
        delta = torch.zeros_like(x[:1])
        alpha = step_size if step_size is not None else threat.eps / 10
        history = []
        for _ in range(epochs):
            for idx in _shuffled_batches(x.shape[0], batch_size, gen):
                xb = x[idx]
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = objective.loss(model(threat.apply(xb, d.expand_as(xb))), y[idx]).mean()
                    grad, = torch.autograd.grad(loss, d)
                delta = threat.project(torch.zeros_like(d), d.detach() + threat.step(grad, alpha))
            history.append(_fooling_rate(model, threat.apply(x, delta.expand_as(x)), y, objective))
        return cls(delta.detach(), threat, history)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.delta.shape[1:]:
            raise InputError(f"the perturbation has shape {tuple(self.delta.shape[1:])}, inputs {tuple(x.shape[1:])}")
        return self.threat.apply(x, self.delta.expand_as(x))

    def success_rate(self, model, x, y, objective: Objective | None = None) -> float:
        return _fooling_rate(model, self.apply(x), y, objective or CrossEntropy())

    def save(self, path: str | Path) -> None:
        atomic_torch_save({"kind": "universal", "delta": self.delta, "norm": self.threat.norm, "eps": self.threat.eps,
                           "bounds": self.threat.bounds, "history": self.history}, path)

    @classmethod
    def load(cls, path: str | Path) -> "UniversalPerturbation":
        d = torch.load(path, map_location="cpu")
        if d.get("kind") != "universal":
            raise InputError(f"{path} does not hold a universal perturbation")
        return cls(d["delta"], ThreatModel(d["norm"], d["eps"], tuple(d["bounds"])), d["history"])


def _place_patch(x: torch.Tensor, patch: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Paste `patch` [C, s, s] into each image at (top[i], left[i]) (differentiable in the patch)."""
    b, c, h, w = x.shape
    s = patch.shape[-1]
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    r_idx = rows[None, :] - top[:, None]                                     # [B, H]
    c_idx = cols[None, :] - left[:, None]                                    # [B, W]
    in_r = (r_idx >= 0) & (r_idx < s)
    in_c = (c_idx >= 0) & (c_idx < s)
    mask = (in_r[:, :, None] & in_c[:, None, :])[:, None].to(x.dtype)       # [B, 1, H, W]
    rr = r_idx.clamp(0, s - 1)
    cc = c_idx.clamp(0, s - 1)
    canvas = patch[:, rr[:, :, None], cc[:, None, :]].permute(1, 0, 2, 3)   # [B, C, H, W]
    return x * (1 - mask) + canvas * mask


@dataclass
class AdversarialPatch:
    """A square patch of free values in the input bounds, pasted at a random location.

    ``fit`` maximises the objective (typically ``TargetedCE`` towards one class) averaged over
    random locations (EOT); ``apply(x, seed)`` pastes it at random (or given) locations."""

    patch: torch.Tensor
    bounds: tuple[float, float] = (0.0, 1.0)
    history: list[float] = field(default_factory=list)

    @staticmethod
    def _locations(x, s, gen):
        h, w = x.shape[-2:]
        top = torch.randint(0, h - s + 1, (x.shape[0],), generator=gen)
        left = torch.randint(0, w - s + 1, (x.shape[0],), generator=gen)
        return top, left

    @classmethod
    def fit(cls, model: Callable, x: torch.Tensor, target: Any, size: int, objective: Objective | str | None = None,
            epochs: int = 5, batch_size: int = 128, lr: float = 0.05, bounds=(0.0, 1.0), seed: int = 0) -> "AdversarialPatch":
        objective = get_objective(objective) if objective is not None else CrossEntropy()
        if size > min(x.shape[-2:]):
            raise InputError(f"patch size {size} exceeds the image size {tuple(x.shape[-2:])}")
        gen = torch.Generator().manual_seed(seed)
        lo, hi = bounds
        patch = lo + (hi - lo) * torch.rand(x.shape[1], size, size, generator=gen)
        history = []
        for _ in range(epochs):
            for idx in _shuffled_batches(x.shape[0], batch_size, gen):
                xb = x[idx]
                top, left = cls._locations(xb, size, gen)
                p = patch.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = objective.loss(model(_place_patch(xb, p, top, left)), _index(target, idx)).mean()
                    grad, = torch.autograd.grad(loss, p)
                patch = (patch + lr * grad.sign()).clamp(lo, hi)
            result = cls(patch.detach(), (lo, hi))
            history.append(_fooling_rate(model, result.apply(x, seed=seed + 1), target, objective))
        return cls(patch.detach(), (lo, hi), history)

    def apply(self, x: torch.Tensor, seed: int = 0, top: torch.Tensor | None = None, left: torch.Tensor | None = None):
        s = self.patch.shape[-1]
        if top is None or left is None:
            top, left = self._locations(x, s, torch.Generator().manual_seed(seed))
        return _place_patch(x, self.patch, top, left)

    def success_rate(self, model, x, target, objective: Objective | None = None, seed: int = 0) -> float:
        return _fooling_rate(model, self.apply(x, seed), target, objective or CrossEntropy())

    def save(self, path: str | Path) -> None:
        atomic_torch_save({"kind": "patch", "patch": self.patch, "bounds": self.bounds, "history": self.history}, path)

    @classmethod
    def load(cls, path: str | Path) -> "AdversarialPatch":
        d = torch.load(path, map_location="cpu")
        if d.get("kind") != "patch":
            raise InputError(f"{path} does not hold an adversarial patch")
        return cls(d["patch"], tuple(d["bounds"]), d["history"])


def _index(target, idx):
    from .base import index_target

    return index_target(target, idx)
