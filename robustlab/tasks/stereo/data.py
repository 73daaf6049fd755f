"""Stereo data: procedurally generated rectified scenes with exact disparity and occlusion masks,
and the Middlebury 2014 motorcycle pair bundled with scikit-image.

Convention: left(y, x) matches right(y, x - d(y, x)), d >= 0, disparity given in the left view.

A scene is a slanted background plane plus textured planar layers (rectangles and ellipses, each
with its own slanted disparity plane d = a + b x + c y) composited with a z-buffer (larger disparity
= nearer). Both views sample the same continuous textures, so the right view is exact: the right
pixel x_r sees, on layer k, the left-view point x = (x_r + a + c y) / (1 - b). Textures: random dots,
multi-scale noise, stripes and weak texture.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError

TEXTURES = ("dots", "noise", "stripes", "weak")


def _texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A [3, h, w] texture in [0, 1] (continuous enough for bilinear resampling: features >= 2 px)."""
    base = rng.uniform(0.15, 0.85, 3)[:, None, None]
    if kind == "dots":
        cell = int(rng.integers(2, 4))
        small = rng.random((3, h // cell + 2, w // cell + 2))
        tex = np.repeat(np.repeat(small, cell, 1), cell, 2)[:, :h, :w]
        tex = 0.5 * base + 0.5 * tex
    elif kind == "noise":
        tex = np.zeros((3, h, w))
        for scale, amp in ((16, 0.5), (8, 0.3), (4, 0.2)):
            small = torch.from_numpy(rng.standard_normal((1, 3, h // scale + 2, w // scale + 2)))
            tex += amp * F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
        tex = base + 0.25 * tex
    elif kind == "stripes":
        period, angle = rng.uniform(4, 12), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        tex = base + 0.3 * wave[None] * rng.uniform(0.5, 1.0, 3)[:, None, None]
    elif kind == "weak":
        small = torch.from_numpy(rng.standard_normal((1, 3, h // 16 + 2, w // 16 + 2)))
        tex = base + 0.04 * F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    else:
        raise InputError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")
    return np.clip(tex, 0, 1).astype(np.float32)


@dataclass
class _Layer:
    a: float
    b: float
    c: float
    shape: str          # "full", "rect" or "ellipse"
    box: tuple[float, float, float, float]  # y0, x0, y1, x1 in left-view coordinates
    texture: torch.Tensor  # [3, H, Wt] covering left x in [-pad, W + pad)


def _sample(tex: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, pad: int) -> torch.Tensor:
    """Bilinear samples of a texture at left-view coordinates (ys, xs) [H, W] -> [3, H, W]."""
    th, tw = tex.shape[-2:]
    gx = (xs + pad + 0.5) / tw * 2 - 1
    gy = (ys + 0.5) / th * 2 - 1
    grid = torch.stack([gx, gy], -1)[None].float()
    return F.grid_sample(tex[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def _covers(layer: _Layer, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    if layer.shape == "full":
        return torch.ones_like(xs, dtype=torch.bool)
    y0, x0, y1, x1 = layer.box
    if layer.shape == "rect":
        return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1


def render_scene(h: int = 64, w: int = 128, max_disp: int = 32, n_layers: int = 4, seed: int = 0) -> dict:
    """One scene: left, right [3, H, W] in [0, 1], disparity [H, W] (left view), non-occluded mask [H, W]."""
    rng = np.random.default_rng(seed)
    pad = max_disp + 8
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    layers = []
    bg_d = rng.uniform(1, max_disp * 0.25)
    layers.append(_Layer(bg_d, rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), "full", (0, 0, h, w),
                         torch.from_numpy(_texture(str(rng.choice(TEXTURES[:3])), h, w + 2 * pad, rng))))
    for _ in range(n_layers):
        d0 = rng.uniform(max_disp * 0.3, max_disp * 0.85)
        bh, bw = rng.uniform(0.2, 0.6) * h, rng.uniform(0.15, 0.45) * w
        y0, x0 = rng.uniform(-0.1 * h, h - bh * 0.5), rng.uniform(0, w - bw * 0.3)
        b, c = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
        a = d0 - b * (x0 + bw / 2) - c * (y0 + bh / 2)
        layers.append(_Layer(a, b, c, str(rng.choice(["rect", "ellipse"])), (y0, x0, y0 + bh, x0 + bw),
                             torch.from_numpy(_texture(str(rng.choice(TEXTURES)), h, w + 2 * pad, rng))))

    def composite(view: str):
        best_d = torch.full((h, w), -1.0, dtype=torch.float64)
        layer_id = torch.zeros((h, w), dtype=torch.long)
        img = torch.zeros(3, h, w)
        for k, L in enumerate(layers):
            x_left = xs if view == "left" else (xs + L.a + L.c * ys) / (1 - L.b)
            d = L.a + L.b * x_left + L.c * ys
            on = _covers(L, ys, x_left) & (d > best_d) & (d >= 0)
            if not on.any():
                continue
            colour = _sample(L.texture, ys, x_left, pad)
            img = torch.where(on[None], colour, img)
            best_d = torch.where(on, d, best_d)
            layer_id = torch.where(on, torch.full_like(layer_id, k), layer_id)
        return img.clamp(0, 1), best_d, layer_id

    left, disp, left_id = composite("left")
    right, _, right_id = composite("right")
    xr = xs - disp
    inside = (xr >= 0) & (xr <= w - 1)
    xr_idx = xr.round().clamp(0, w - 1).long()
    same = right_id.gather(1, xr_idx) == left_id
    non_occluded = inside & same & (disp < max_disp)
    return {"left": left.float(), "right": right.float(), "disparity": disp.float(), "non_occluded": non_occluded}


@dataclass
class StereoDataset:
    """Stereo pairs stacked on the channel axis: x [N, 6, H, W] (left then right), ground-truth
    disparity [N, 1, H, W] and a mask [N, 1, H, W] of valid, non-occluded pixels with d < max_disp."""

    x: torch.Tensor
    disparity: torch.Tensor
    mask: torch.Tensor
    max_disp: int
    name: str = "stereo"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def left(self) -> torch.Tensor:
        return self.x[:, :3]

    @property
    def right(self) -> torch.Tensor:
        return self.x[:, 3:]

    def to(self, device: torch.device) -> "StereoDataset":
        """The pairs, disparities and masks on `device`."""
        return StereoDataset(self.x.to(device), self.disparity.to(device), self.mask.to(device), self.max_disp, self.name)

    def take(self, idx: torch.Tensor) -> "StereoDataset":
        """The pairs at ``idx`` (a new dataset)."""
        return StereoDataset(self.x[idx], self.disparity[idx], self.mask[idx], self.max_disp, self.name)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], (self.disparity[idx], self.mask[idx])


def synthetic_stereo(n: int, h: int = 64, w: int = 128, max_disp: int = 32, seed: int = 0) -> StereoDataset:
    """n procedural scenes (deterministic in `seed`)."""
    scenes = [render_scene(h, w, max_disp, n_layers=int(np.random.default_rng(seed + i).integers(2, 6)), seed=seed * 100_003 + i)
              for i in range(n)]
    x = torch.stack([torch.cat([s["left"], s["right"]]) for s in scenes])
    disp = torch.stack([s["disparity"] for s in scenes])[:, None]
    mask = torch.stack([s["non_occluded"] for s in scenes])[:, None]
    return StereoDataset(x, disp, mask, max_disp, "synthetic")


def motorcycle(scale: str = "half", max_disp: int | None = None) -> StereoDataset:
    """The Middlebury 2014 motorcycle pair from scikit-image (quarter resolution, 500 x 741).

    Invalid ground truth is +inf there (not NaN, whatever its docstring says) and is masked out, as
    are pixels whose match falls outside the right image. ``scale="half"`` halves the images
    (area averaging) and the disparities.
    """
    from skimage.data import stereo_motorcycle

    left, right, disp = stereo_motorcycle()
    l = torch.from_numpy(np.ascontiguousarray(left)).permute(2, 0, 1).float() / 255
    r = torch.from_numpy(np.ascontiguousarray(right)).permute(2, 0, 1).float() / 255
    d = torch.from_numpy(np.ascontiguousarray(disp)).float()
    if scale == "half":
        l, r = F.avg_pool2d(l[None], 2)[0], F.avg_pool2d(r[None], 2)[0]
        all_valid = F.avg_pool2d(torch.isfinite(d).float()[None, None], 2)[0, 0] == 1  # inf if any of the 4 is invalid
        d_avg = F.avg_pool2d(torch.nan_to_num(d, posinf=0.0)[None, None], 2)[0, 0] / 2
        d = torch.where(all_valid, d_avg, torch.full_like(d_avg, float("inf")))
    elif scale != "full":
        raise InputError("scale must be 'full' or 'half'")
    w = d.shape[1]
    xs = torch.arange(w, dtype=torch.float32)[None].expand_as(d)
    finite = torch.isfinite(d)
    inside = (xs - torch.where(finite, d, torch.zeros_like(d))) >= 0
    md = max_disp or (int(torch.where(finite, d, torch.zeros_like(d)).max().ceil()) + 1)
    mask = finite & inside & (d < md)
    return StereoDataset(torch.cat([l, r])[None], d[None, None], mask[None, None], md, f"middlebury-motorcycle-{scale}")
