"""Perturbations shared across inputs, as first-class results that can be saved and applied to
new data: universal perturbations (Moosavi-Dezfooli et al. 2017; optimised here by stochastic
projected sign ascent on the mean loss, Shafahi et al. 2020) and adversarial patches (Brown et al.
2017: a square of unbounded values at a random location, with EOT over locations).

A universal perturbation may be a tile repeated over the image (it then applies to inputs of any
size); a patch's placement is a hook, so tasks decide where and how a patch enters the input
(e.g. one texture in both views of a stereo pair at a disparity, with the ground truth updated).
"""
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
            idx = torch.arange(i, min(i + batch_size, x_adv.shape[0]))
            hits += int(objective.success(model(x_adv[idx]), _index(y, idx)).sum())
    return hits / max(1, x_adv.shape[0])


def _tiled(delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Repeat a [1, C, th, tw] tile over an H x W image (cropped at the right and bottom)."""
    th, tw = delta.shape[-2:]
    reps = (-(-size[0] // th), -(-size[1] // tw))
    return delta.repeat(1, 1, *reps)[..., :size[0], :size[1]]


@dataclass
class UniversalPerturbation:
    """One delta for every input: x_adv = clamp(x + delta). ``fit`` optimises it; ``apply``,
    ``success_rate``, ``save`` and ``load`` use it on new data. With ``tile=(th, tw)`` delta is a
    tile repeated over the image, so it also applies to inputs of another size.

    The threat may be a ``VariableThreat`` with per-sample state built for the fitted inputs (e.g. delta
    scaled by each input's level: one radius per input): x_adv = threat.apply(x, delta); ``apply`` on
    other inputs then takes their own threat (``threat=``)."""

    delta: torch.Tensor
    threat: ThreatModel
    history: list[float] = field(default_factory=list)
    tiled: bool = False

    @classmethod
    def fit(cls, model: Callable, x: torch.Tensor, y: Any, threat: ThreatModel, objective: Objective | str | None = None,
            epochs: int = 5, batch_size: int = 128, step_size: float | None = None, tile: tuple[int, int] | None = None,
            seed: int = 0) -> "UniversalPerturbation":
        """Stochastic projected steepest ascent on the mean loss over mini-batches (step eps/10)."""
        objective = get_objective(objective) if objective is not None else CrossEntropy()
        gen = torch.Generator().manual_seed(seed)
        delta = torch.zeros(1, x.shape[1], *tile, dtype=x.dtype) if tile is not None else torch.zeros_like(x[:1])
        if tile is not None and x.dim() != 4:
            raise InputError("tiled perturbations need image inputs [B, C, H, W]")
        alpha = step_size if step_size is not None else threat.eps / 10
        history = []
        result = cls(delta, threat, history, tiled=tile is not None)
        for _ in range(epochs):
            for idx in _shuffled_batches(x.shape[0], batch_size, gen):
                xb, tb = x[idx], threat.subset(idx) if threat.has_per_sample_state else threat
                d = result.delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = objective.loss(model(tb.apply(xb, result._full(d, xb))), _index(y, idx)).mean()
                    grad, = torch.autograd.grad(loss, d)
                result.delta = threat.project_delta(d.detach() + threat.step(grad, alpha))
            history.append(_fooling_rate(model, result.apply(x), y, objective))
        return result

    def _full(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.tiled:
            if x.shape[1] != delta.shape[1]:
                raise InputError(f"the tile has {delta.shape[1]} channels, inputs {x.shape[1]}")
            return _tiled(delta, tuple(x.shape[-2:])).expand_as(x)
        if x.shape[1:] != delta.shape[1:]:
            raise InputError(f"the perturbation has shape {tuple(delta.shape[1:])}, inputs {tuple(x.shape[1:])}")
        return delta.expand_as(x)

    def apply(self, x: torch.Tensor, threat=None) -> torch.Tensor:
        """clamp(x + delta); ``threat``: that of these inputs (a per-sample threat built for them)."""
        return (self.threat if threat is None else threat).apply(x, self._full(self.delta, x))

    def success_rate(self, model, x, y, objective: Objective | None = None, threat=None) -> float:
        """The share of `x` the perturbation fools (``threat``: that of these inputs, as for ``apply``)."""
        return _fooling_rate(model, self.apply(x, threat), y, objective or CrossEntropy())

    def save(self, path: str | Path) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise InputError("only a perturbation under a pixel ThreatModel is saved; a per-sample threat belongs "
                             "to its inputs (save .delta and rebuild the threat)")
        atomic_torch_save({"kind": "universal", "delta": self.delta, "norm": self.threat.norm, "eps": self.threat.eps,
                           "bounds": self.threat.bounds, "mask": self.threat.mask, "history": self.history,
                           "tiled": self.tiled}, path)

    @classmethod
    def load(cls, path: str | Path) -> "UniversalPerturbation":
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("kind") != "universal":
            raise InputError(f"{path} does not hold a universal perturbation")
        return cls(d["delta"], ThreatModel(d["norm"], d["eps"], tuple(d["bounds"]), mask=d.get("mask")), d["history"],
                   d.get("tiled", False))


def place_patch(x: torch.Tensor, patch: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
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


class RandomLocation:
    """The default patch placement: a square [C, s, s] pasted at a uniformly random location in
    every image (or at given ``top``/``left``); the target is unchanged."""

    def patch_shape(self, x: torch.Tensor, size: int) -> tuple[int, ...]:
        return (x.shape[1], size, size)

    def __call__(self, x: torch.Tensor, target: Any, patch: torch.Tensor, gen: torch.Generator,
                 top: torch.Tensor | None = None, left: torch.Tensor | None = None):
        s = patch.shape[-1]
        h, w = x.shape[-2:]
        if top is None or left is None:
            top = torch.randint(0, h - s + 1, (x.shape[0],), generator=gen)
            left = torch.randint(0, w - s + 1, (x.shape[0],), generator=gen)
        return place_patch(x, patch, top, left), target


@dataclass
class AdversarialPatch:
    """A square patch of free values in the input bounds.

    ``fit`` maximises the objective (typically ``TargetedCE`` towards one class) averaged over
    random placements (EOT). The placement is a hook ``placement(x, target, patch, generator) ->
    (x_patched, target)``: by default ``RandomLocation``; a task may paste the patch into several
    views and update the target (see ``robustlab.tasks.stereo.physical``). ``apply(x, seed)``
    pastes it at random (or given) locations; ``place(x, target, seed)`` uses the placement hook."""

    patch: torch.Tensor
    bounds: tuple[float, float] = (0.0, 1.0)
    history: list[float] = field(default_factory=list)
    placement: Any = field(default_factory=RandomLocation, compare=False, repr=False)

    @classmethod
    def fit(cls, model: Callable, x: torch.Tensor, target: Any, size: int, objective: Objective | str | None = None,
            epochs: int = 5, batch_size: int = 128, lr: float = 0.05, bounds=(0.0, 1.0), placement: Any = None,
            seed: int = 0) -> "AdversarialPatch":
        """Signed-gradient ascent on the mean loss over random placements, patch clipped to the bounds."""
        objective = get_objective(objective) if objective is not None else CrossEntropy()
        placement = placement if placement is not None else RandomLocation()
        if size > min(x.shape[-2:]):
            raise InputError(f"patch size {size} exceeds the image size {tuple(x.shape[-2:])}")
        gen = torch.Generator().manual_seed(seed)
        lo, hi = bounds
        patch = lo + (hi - lo) * torch.rand(placement.patch_shape(x, size), generator=gen)
        result = cls(patch, (lo, hi), [], placement)
        for _ in range(epochs):
            for idx in _shuffled_batches(x.shape[0], batch_size, gen):
                p = result.patch.detach().requires_grad_(True)
                with torch.enable_grad():
                    x_adv, t_adv = placement(x[idx], _index(target, idx), p, gen)
                    loss = objective.loss(model(x_adv), t_adv).mean()
                    grad, = torch.autograd.grad(loss, p)
                result.patch = (p.detach() + lr * grad.sign()).clamp(lo, hi)
            result.history.append(result.success_rate(model, x, target, objective, seed=seed + 1))
        return result

    def apply(self, x: torch.Tensor, seed: int = 0, top: torch.Tensor | None = None, left: torch.Tensor | None = None):
        return RandomLocation()(x, None, self.patch, torch.Generator().manual_seed(seed), top, left)[0]

    def place(self, x: torch.Tensor, target: Any, seed: int = 0):
        """(x_patched, target) from the placement hook, reproducible in `seed`."""
        with torch.no_grad():
            return self.placement(x, target, self.patch, torch.Generator().manual_seed(seed))

    def success_rate(self, model, x, target, objective: Objective | None = None, seed: int = 0) -> float:
        x_adv, t_adv = self.place(x, target, seed)
        return _fooling_rate(model, x_adv, t_adv, objective or CrossEntropy())

    def save(self, path: str | Path) -> None:
        atomic_torch_save({"kind": "patch", "patch": self.patch, "bounds": self.bounds, "history": self.history}, path)

    @classmethod
    def load(cls, path: str | Path, placement: Any = None) -> "AdversarialPatch":
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("kind") != "patch":
            raise InputError(f"{path} does not hold an adversarial patch")
        return cls(d["patch"], tuple(d["bounds"]), d["history"], placement if placement is not None else RandomLocation())


def _index(target, idx):
    from .base import index_target

    return index_target(target, idx)
