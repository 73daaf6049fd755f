"""A printable adversarial patch on the objects (Thys et al. 2019, "Fooling automated surveillance
cameras"): one patch texture pasted on each image's object, optimised by the engine's
``AdversarialPatch`` with expectation over transformations (EOT, Athalye et al. 2018) of scale,
rotation and lighting, so that it survives how a printed patch would be seen.

``PatchOnObject`` is the patch's placement hook: per image it pastes the patch at the centre of the
largest ground-truth box, its side ``scale`` x the box's shorter side (drawn in ``scale_range``), turned
by an angle drawn in [-max_angle, max_angle] degrees, its colours ``a * patch + b`` with contrast a and
brightness b drawn in ``contrast`` and ``brightness`` plus pixel noise (``noise`` std), clipped to
[0, 1]. The paste is a differentiable bilinear resampling (``grid_sample``) of the patch and of its
opaque mask. The targets are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ...attacks import AdversarialPatch
from .boxes import Detections, box_area
from .objectives import Vanishing


@dataclass
class PatchOnObject:
    """The placement hook of ``AdversarialPatch`` for detection (see the module docstring)."""

    scale_range: tuple[float, float] = (0.45, 0.6)
    max_angle: float = 20.0
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: tuple[float, float] = (-0.1, 0.1)
    noise: float = 0.02

    @classmethod
    def fixed(cls, scale: float = 0.5) -> "PatchOnObject":
        """No randomness: the patch at ``scale``, upright, with its own colours (to check the placement)."""
        return cls((scale, scale), 0.0, (1.0, 1.0), (0.0, 0.0), 0.0)

    def patch_shape(self, x: torch.Tensor, size: int) -> tuple[int, ...]:
        return (x.shape[1], size, size)

    @staticmethod
    def _uniform(lo_hi, n: int, gen: torch.Generator) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    def squares(self, target: Sequence[Detections], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image the patch's centre [B, 2] (pixels), side [B] and angle [B] (radians)."""
        n = len(target)
        centre, short = torch.zeros(n, 2), torch.zeros(n)
        for i, t in enumerate(target):
            if len(t):
                b = t.boxes[int(box_area(t.boxes).argmax())].detach().cpu()
                centre[i] = (b[:2] + b[2:]) / 2
                short[i] = (b[2:] - b[:2]).min()
        side = short * self._uniform(self.scale_range, n, gen)
        angle = self._uniform((-self.max_angle, self.max_angle), n, gen) * math.pi / 180
        return centre, side, angle

    def __call__(self, x: torch.Tensor, target, patch: torch.Tensor, gen: torch.Generator, *_):
        b, c, h, w = x.shape
        patch = patch.to(x)  # the engine keeps the patch on the CPU; the images may be on a GPU
        centre, side, angle = self.squares(target, gen)
        a = self._uniform(self.contrast, b, gen).view(b, 1, 1, 1).to(x)
        shift = self._uniform(self.brightness, b, gen).view(b, 1, 1, 1).to(x)
        lit = (a * patch.unsqueeze(0) + shift + self.noise * torch.randn(b, *patch.shape, generator=gen).to(x)).clamp(0, 1)
        # an image point P (pixels) is the patch point R(-angle) (P - centre) * 2 / side (in [-1, 1]^2);
        # in grid_sample's normalised coordinates (u = 2 P_x / w - 1) that is the affine map theta
        cos, sin = torch.cos(angle), torch.sin(angle)
        kx, ky = w / side.clamp_min(1e-3), h / side.clamp_min(1e-3)
        u0, v0 = 2 * centre[:, 0] / w - 1, 2 * centre[:, 1] / h - 1
        theta = torch.stack([torch.stack([cos * kx, sin * ky, -(cos * kx * u0 + sin * ky * v0)], -1),
                             torch.stack([-sin * kx, cos * ky, -(-sin * kx * u0 + cos * ky * v0)], -1)], 1)
        grid = F.affine_grid(theta.to(x), (b, c, h, w), align_corners=False)
        rgba = torch.cat([lit, torch.ones(b, 1, *patch.shape[-2:], device=x.device, dtype=x.dtype)], 1)
        pasted = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = pasted[:, -1:] * (side > 0).view(b, 1, 1, 1).to(x)
        return x * (1 - mask) + pasted[:, :-1] * mask, target


def fit_patch(model, x: torch.Tensor, truth: Sequence[Detections], size: int = 16, epochs: int = 20, batch_size: int = 32,
              lr: float = 0.03, placement: PatchOnObject | None = None, seed: int = 0) -> AdversarialPatch:
    """The engine's ``AdversarialPatch.fit`` on the vanishing objective with the EOT placement on the objects."""
    return AdversarialPatch.fit(model, x, list(truth), size, Vanishing(), epochs=epochs, batch_size=batch_size, lr=lr,
                                placement=placement or PatchOnObject(), seed=seed)


def patch_success(model, patch: AdversarialPatch, x: torch.Tensor, truth: Sequence[Detections], draws: int = 5,
                  seed: int = 100) -> float:
    """The vanishing success rate of the patch, averaged over ``draws`` fresh EOT transformations."""
    rates = [patch.success_rate(model, x, list(truth), Vanishing(), seed=seed + k) for k in range(draws)]
    return sum(rates) / len(rates)
