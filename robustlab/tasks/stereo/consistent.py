"""Stereo-consistent perturbations: the left view's change is the right view's change warped by the
true disparity (zero on occluded pixels), a texture change of the scene that a correct matcher
should ignore. It is a threat model (``StereoConsistentThreat``): the variable is the right view's
change, the left one follows; the disparity and mask it warps with are per-sample threat state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...threat import VariableThreat


def warp_to_left(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """left_hat(y, x) = right(y, x - d(y, x)), bilinear; right [B, C, H, W], disparity [B, 1, H, W]."""
    b, _, h, w = right.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=right.dtype, device=right.device),
                            torch.arange(w, dtype=right.dtype, device=right.device), indexing="ij")
    d = torch.nan_to_num(disparity[:, 0], posinf=0.0)
    gx = (xs[None] - d) / max(w - 1, 1) * 2 - 1
    gy = (ys[None] / max(h - 1, 1) * 2 - 1).expand_as(gx)
    return F.grid_sample(right, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=True)


def consistent_pair_perturbation(delta_right: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 6-channel perturbation [warp(delta_right) * mask, delta_right]."""
    left = warp_to_left(delta_right, disparity) * mask.to(delta_right.dtype)
    return torch.cat([left, delta_right], 1)


class StereoConsistentThreat(VariableThreat):
    """A stereo-consistent perturbation as a threat model: the variable is the right view's change
    delta_r (an Lp ball of radius eps), and x_adv = clamp(x + [warp(delta_r, d) * mask, delta_r]).
    The disparity d and the valid mask are per-sample state, subset with the samples when the
    engine drops finished ones; plain PGD / APGD / FGSM attack it unchanged."""

    per_sample_fields = ("disparity", "valid")

    def __init__(self, eps: float, disparity: torch.Tensor, mask: torch.Tensor, norm: str = "linf",
                 bounds: tuple[float, float] = (0.0, 1.0)):
        super().__init__(norm, eps, bounds)
        if disparity.dim() != 4 or disparity.shape[1] != 1 or mask.shape != disparity.shape:
            raise InputError("disparity and mask must be [B, 1, H, W] maps of the same shape")
        self.disparity, self.valid = disparity, mask

    def variable_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 6:
            raise InputError("stereo pairs travel as [B, 6, H, W] (left then right)")
        return torch.zeros_like(x[:, 3:])

    def transform(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + consistent_pair_perturbation(v, self.disparity.to(x), self.valid.to(x.device))
