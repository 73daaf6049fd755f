"""Stereo-consistent perturbations: the left view's change is the right view's change warped by the
true disparity (zero on occluded pixels), a texture change of the scene that a correct matcher
should ignore. The attack optimises the right-view perturbation only; the left one follows.

The disparity and the valid mask travel with each sample in the target ``(disparity, mask)``, so
the engine's early stopping and batching stay task-agnostic. A targeted objective carries its own
map first: ``(target, target_mask, disparity, mask)``; the warp always reads the last two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...attacks.base import AttackContext, IterativeAttack
from ...errors import InputError
from ...objectives import Objective
from ...threat import ThreatModel


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


class StereoConsistentPGD(IterativeAttack):
    """PGD on the right-view perturbation (Linf ball of radius eps) of a stereo-consistent attack;
    x_adv = clamp(x + [warp(delta_r, d) * mask, delta_r]). Target: (disparity, mask)."""

    name = "stereo-consistent-pgd"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 10,
                 step_size: float | None = None, random_start: bool = True, early_stop: bool = False, seed: int = 0):
        if threat.norm != "linf":
            raise InputError("stereo-consistent perturbations are implemented for the linf norm")
        super().__init__(threat, objective, early_stop=early_stop, seed=seed)
        self.steps, self.step_size, self.random_start = int(steps), step_size, random_start

    def _pair(self, ctx: AttackContext, delta_r: torch.Tensor) -> torch.Tensor:
        disparity, mask = ctx.target[-2:]
        return (ctx.x + consistent_pair_perturbation(delta_r, disparity, mask)).clamp(*ctx.threat.bounds)

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        if ctx.x.shape[1] != 6:
            raise InputError("stereo pairs travel as [B, 6, H, W] (left then right)")
        eps = ctx.threat.eps
        delta_r = (2 * ctx.rand_full(ctx.x.shape[1:])[:, 3:] - 1) * eps if self.random_start else torch.zeros_like(ctx.x[:, 3:])
        return {"delta_r": delta_r, "x_adv": self._pair(ctx, delta_r)}

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        eps = ctx.threat.eps
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        d = s["delta_r"].detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = self._pair(ctx, d)
        _, grad_x, _, _ = ctx.loss_and_grad(x_adv.detach())
        grad_d, = torch.autograd.grad(x_adv, d, grad_x)
        delta_r = (s["delta_r"] + alpha * grad_d.sign()).clamp(-eps, eps)
        return {"delta_r": delta_r, "x_adv": self._pair(ctx, delta_r).detach()}
