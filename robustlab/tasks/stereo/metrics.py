"""Stereo metrics over valid pixels: end-point error, bad-k and D1 (KITTI: |e| > 3 px and > 5%)."""
from __future__ import annotations

import torch


def valid_mask(disparity: torch.Tensor, max_disp: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels with finite ground truth in [0, max_disp), intersected with `mask` (e.g. non-occluded)."""
    valid = torch.isfinite(disparity) & (disparity >= 0) & (disparity < max_disp)
    return valid if mask is None else valid & mask.bool()


def stereo_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """EPE, bad-1/2/3 and D1 over the pixels where `mask` is True (all samples pooled)."""
    m = mask.bool()
    if not m.any():
        raise ValueError("no valid pixel to evaluate")
    err = (pred - torch.nan_to_num(gt, posinf=0.0))[m].abs()
    d = torch.nan_to_num(gt, posinf=0.0)[m]
    return {
        "epe": float(err.mean()),
        "bad1": float((err > 1).float().mean()),
        "bad2": float((err > 2).float().mean()),
        "bad3": float((err > 3).float().mean()),
        "d1": float(((err > 3) & (err > 0.05 * d)).float().mean()),
        "n_pixels": int(m.sum()),
    }
