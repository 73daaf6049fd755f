"""Perturbations of stereo pairs meant for the physical world: one universal tile per view, a patch
placed in the scene at a disparity, and EOT over small photometric and geometric changes.

- ``fit_universal_tile``: a [6, t, t] tile (left tile, right tile) repeated over both views, fitted
  on a dataset and applicable to pairs of any size (``UniversalPerturbation(tile=...)``).
- ``PatchAtDisparity``: a placement hook for ``AdversarialPatch``. A flat, fronto-parallel texture
  at disparity d appears at (top, left) in the left view and at (top, left - d) in the right view;
  the ground truth becomes d on the patch, and left pixels behind it whose match in the right view
  the patch now hides become occluded (removed from the mask). With a ``PairJitter`` the placement
  also draws a photometric and geometric change at every call (EOT, Athalye et al. 2018).
- ``PairJitter``: brightness/contrast common to both cameras, a small exposure difference between
  them, sensor noise, and a vertical misalignment of the right view (a rectification error) of
  up to ``max_row_shift`` pixels. ``RandomPairTransform`` sees a model through it, so
  an attack's ``eot=n`` option averages gradients over n draws; ``jittered_metrics`` measures how an
  adversarial pair survives such changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...attacks.universal import AdversarialPatch, UniversalPerturbation, place_patch
from ...errors import InputError
from .data import StereoDataset
from .metrics import stereo_metrics
from .train import disparity_objective, predict, stereo_threat


@dataclass
class PairJitter:
    """Random photometric and geometric changes of a pair [B, 6, H, W] that keep its disparity."""

    contrast: float = 0.1        # common gain in [1 - c, 1 + c]
    brightness: float = 0.05     # common offset in [-b, b]
    exposure_gap: float = 0.03   # extra right-view gain in [1 - g, 1 + g]
    noise: float = 0.01          # Gaussian sensor noise (std)
    max_row_shift: int = 1       # vertical misalignment of the right view, in whole pixels

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        b = x.shape[0]

        def u(*shape):
            return 2 * torch.rand(*shape, generator=gen, dtype=x.dtype) - 1

        gain = 1 + self.contrast * u(b, 1, 1, 1)
        offset = self.brightness * u(b, 1, 1, 1)
        gap = torch.ones(b, 6, 1, 1, dtype=x.dtype)
        gap[:, 3:] = 1 + self.exposure_gap * u(b, 1, 1, 1)
        out = x * gain * gap + offset
        if self.noise > 0:
            out = out + self.noise * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        if self.max_row_shift > 0:
            shifts = torch.randint(-self.max_row_shift, self.max_row_shift + 1, (b,), generator=gen)
            right = torch.stack([torch.roll(out[i, 3:], int(s), dims=-2) for i, s in enumerate(shifts)])
            out = torch.cat([out[:, :3], right], 1)
        return out.clamp(0, 1)


class RandomPairTransform(nn.Module):
    """The model seen through a fresh ``PairJitter`` draw at every call (use with an attack's ``eot`` option)."""

    def __init__(self, model: nn.Module, jitter: PairJitter | None = None, seed: int = 0):
        super().__init__()
        self.model, self.jitter = model, jitter or PairJitter()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):
        return self.model(self.jitter(x, self.generator))


@torch.no_grad()
def jittered_metrics(model, x: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor, jitter: PairJitter | None = None,
                     n: int = 10, seed: int = 0, batch_size: int = 8) -> dict:
    """Mean EPE / bad-3 of `x` over n random jitters (how an attack survives physical changes)."""
    jitter = jitter or PairJitter()
    gen = torch.Generator().manual_seed(seed)
    epe, bad3 = [], []
    for _ in range(n):
        m = stereo_metrics(predict(model, jitter(x, gen), batch_size), disparity, mask)
        epe.append(m["epe"])
        bad3.append(m["bad3"])
    return {"epe": sum(epe) / n, "bad3": sum(bad3) / n, "epe_min": min(epe), "n": n}


def fit_universal_tile(model, data: StereoDataset, eps: float = 0.02, tile: int = 16, views: str = "both",
                       epochs: int = 10, batch_size: int = 8, seed: int = 0) -> UniversalPerturbation:
    """One Linf tile per view, repeated over the image, maximising the mean disparity error over `data`."""
    return UniversalPerturbation.fit(model, data.x, (data.disparity, data.mask), stereo_threat(eps, views),
                                     disparity_objective(3.0), epochs=epochs, batch_size=batch_size,
                                     tile=(tile, tile), seed=seed)


class PatchAtDisparity:
    """Placement hook: a [3, s, s] texture in both views at a disparity drawn from `disparity_range`
    (whole pixels), the target (disparity, mask) updated to the scene with the patch in it."""

    def __init__(self, disparity_range: tuple[int, int] = (8, 24), jitter: PairJitter | None = None, focus: str = "scene"):
        lo, hi = disparity_range
        if not 0 <= lo <= hi:
            raise InputError(f"disparity_range must satisfy 0 <= low <= high, got {disparity_range}")
        if focus not in ("scene", "patch"):
            raise InputError("focus must be 'scene' (error over every valid pixel) or 'patch' (on the patch only)")
        self.disparity_range, self.jitter, self.focus = (int(lo), int(hi)), jitter, focus

    def patch_shape(self, x: torch.Tensor, size: int) -> tuple[int, ...]:
        if x.shape[1] != 6:
            raise InputError("stereo patches are placed in pairs [B, 6, H, W]")
        return (3, size, size)

    def sample(self, x: torch.Tensor, size: int, gen: torch.Generator):
        b, _, h, w = x.shape
        lo, hi = self.disparity_range
        if hi + size > w or size > h:
            raise InputError(f"a {size}-pixel patch at disparity up to {hi} does not fit {w}-pixel-wide views")
        d = torch.randint(lo, hi + 1, (b,), generator=gen)
        top = torch.randint(0, h - size + 1, (b,), generator=gen)
        left = d + (torch.rand(b, generator=gen) * (w - size - d + 1)).long()  # keeps left - d >= 0
        return top, left, d

    def paste(self, x: torch.Tensor, target, patch: torch.Tensor, where):
        """(pair, (disparity, mask), on_patch [B, 1, H, W]) for placements where = (top, left, d)."""
        size = patch.shape[-1]
        top, left, d = where
        out = torch.cat([place_patch(x[:, :3], patch, top, left), place_patch(x[:, 3:], patch, top, left - d)], 1)
        disparity, mask = target
        h, w = x.shape[-2:]
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w, dtype=disparity.dtype)[None, None, :]
        in_rows = (rows >= top[:, None, None]) & (rows < (top + size)[:, None, None])
        on_patch = in_rows & (cols >= left[:, None, None]) & (cols < (left + size)[:, None, None])
        behind_match = cols - torch.nan_to_num(disparity[:, 0], posinf=0.0)
        hidden = in_rows & ~on_patch & (behind_match >= (left - d)[:, None, None]) & (behind_match < (left - d + size)[:, None, None])
        new_disp = torch.where(on_patch[:, None], d[:, None, None, None].to(disparity.dtype), disparity)
        new_mask = (mask.bool() | on_patch[:, None]) & ~hidden[:, None]
        return out, (new_disp, new_mask), on_patch[:, None]

    def __call__(self, x: torch.Tensor, target, patch: torch.Tensor, gen: torch.Generator):
        out, (disparity, mask), on_patch = self.paste(x, target, patch, self.sample(x, patch.shape[-1], gen))
        if self.jitter is not None:
            out = self.jitter(out, gen)
        return out, (disparity, on_patch if self.focus == "patch" else mask)


@torch.no_grad()
def patch_metrics(model, patch: torch.Tensor, data: StereoDataset, disparity_range: tuple[int, int] = (8, 24),
                  n: int = 5, jitter: PairJitter | None = None, seed: int = 0) -> dict:
    """EPE over the whole patched scene and over the patch itself, averaged over n random placements
    (each seen through a random `jitter` if given)."""
    placement = PatchAtDisparity(disparity_range)
    gen = torch.Generator().manual_seed(seed)
    scene, on = [], []
    for _ in range(n):
        x, (d, m), region = placement.paste(data.x, (data.disparity, data.mask), patch,
                                            placement.sample(data.x, patch.shape[-1], gen))
        pred = predict(model, jitter(x, gen) if jitter is not None else x)
        scene.append(stereo_metrics(pred, d, m)["epe"])
        on.append(stereo_metrics(pred, d, region)["epe"])
    return {"epe": sum(scene) / n, "patch_epe": sum(on) / n, "n": n}


def fit_stereo_patch(model, data: StereoDataset, size: int = 16, disparity_range: tuple[int, int] = (8, 24),
                     eot: bool = False, focus: str = "patch", epochs: int = 10, batch_size: int = 8, lr: float = 0.02,
                     seed: int = 0) -> AdversarialPatch:
    """A patch placed in the scene at random locations and disparities, maximising the mean disparity
    error on the patch (``focus="patch"``: the object is seen at the wrong depth) or over every valid
    pixel of the patched scene (``"scene"``); EOT over placements, and over ``PairJitter`` if `eot`."""
    placement = PatchAtDisparity(disparity_range, PairJitter() if eot else None, focus)
    return AdversarialPatch.fit(model, data.x, (data.disparity, data.mask), size, disparity_objective(3.0), epochs=epochs,
                                batch_size=batch_size, lr=lr, placement=placement, seed=seed)
