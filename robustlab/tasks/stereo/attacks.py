"""Disparity attacks in one call, all through the common engine.

Untargeted: maximise the mean |d_pred - d_ref| over valid pixels, with d_ref the ground truth or
the model's own clean prediction (``reference="prediction"``: no labels needed, random start).
Targeted: minimise the error to a target map built from the clean prediction: every disparity
shifted by s pixels (``shift_target``), scaled by k (``scale_target``), or a region set to the
background's disparity (``region_target``: the object "disappears into the background").
Views: perturb ``left``, ``right``, ``both``, or ``consistent`` (the left perturbation is the
right one warped by the true disparity, see ``consistent.py``).
"""
from __future__ import annotations

import torch

from ...attacks import FGSM, PGD
from ...attacks.base import AttackResult
from ...errors import InputError
from ...objectives import RegressionError, RegressionTarget
from .consistent import StereoConsistentThreat
from .train import UNREACHED, predict, stereo_threat

METHODS = ("fgsm", "pgd")
VIEWS = ("left", "right", "both", "consistent")


def shift_target(disparity: torch.Tensor, shift: float) -> torch.Tensor:
    """Every disparity moved by `shift` pixels (positive = everything looks nearer)."""
    return disparity + shift


def scale_target(disparity: torch.Tensor, factor: float) -> torch.Tensor:
    """Every disparity scaled by `factor` (< 1: the scene looks farther away)."""
    return disparity * factor


def region_target(disparity: torch.Tensor, region: torch.Tensor, value: float | None = None) -> torch.Tensor:
    """The disparity inside `region` [B, 1, H, W] (bool) replaced by `value` (default: the median
    disparity outside the region, per sample: the object merges into the background)."""
    region = region.bool()
    out = disparity.clone()
    for i in range(disparity.shape[0]):
        v = value if value is not None else float(disparity[i][~region[i]].median())
        out[i][region[i]] = v
    return out


def stereo_attack(model, x: torch.Tensor, disparity: torch.Tensor | None = None, mask: torch.Tensor | None = None, *,
                  eps: float = 0.02, views: str = "both", method: str = "pgd", steps: int = 10,
                  step_size: float | None = None, target: torch.Tensor | None = None, target_mask: torch.Tensor | None = None,
                  success_px: float = 1.0, reference: str = "gt", seed: int = 0) -> AttackResult:
    """Attack stereo pairs x [B, 6, H, W] in an Linf ball of radius eps.

    Untargeted (``target=None``): maximise the error to the ground truth (``reference="gt"``, needs
    `disparity` and `mask`) or to the clean prediction (``reference="prediction"``). Targeted:
    minimise the mean error to `target` over `target_mask` (default: all pixels); success = error <
    `success_px`. PGD uses step eps/4 by default (10 steps reach the boundary from anywhere);
    FGSM one step of eps. ``views="consistent"`` needs the ground-truth disparity for the warp.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if views not in VIEWS:
        raise InputError(f"views must be one of {VIEWS}, got {views!r}")
    if x.dim() != 4 or x.shape[1] != 6:
        raise InputError(f"stereo pairs travel as [B, 6, H, W] (left then right), got {tuple(x.shape)}")
    if target is not None:
        objective = RegressionTarget(threshold=success_px, error="l1")
        tmask = target_mask if target_mask is not None else torch.ones_like(target, dtype=torch.bool)
        y = (target, tmask)
    elif reference == "gt":
        if disparity is None or mask is None:
            raise InputError("an untargeted attack against the ground truth needs `disparity` and `mask` "
                             "(or pass reference='prediction' to attack the model's own clean prediction)")
        objective, y = RegressionError(threshold=UNREACHED, error="l1"), (disparity, mask)
    elif reference == "prediction":
        clean = predict(model, x)
        objective, y = RegressionError(threshold=UNREACHED, error="l1"), (clean, torch.ones_like(clean, dtype=torch.bool))
    else:
        raise InputError("reference must be 'gt' or 'prediction'")
    threat = stereo_threat(eps, "both" if views == "consistent" else views)
    alpha = step_size if step_size is not None else (eps if method == "fgsm" else eps / 4)
    early_stop = target is not None
    if views == "consistent":
        if disparity is None or mask is None:
            raise InputError("stereo-consistent perturbations are warped by the true disparity: pass `disparity` and `mask`")
        threat = StereoConsistentThreat(eps, disparity, mask)
    if method == "fgsm":
        attack = FGSM(threat, objective, step_size=alpha, early_stop=False, seed=seed)
    else:
        attack = PGD(threat, objective, steps=int(steps), step_size=alpha, random_start=True, early_stop=early_stop, seed=seed)
    return attack(model, x, y)
