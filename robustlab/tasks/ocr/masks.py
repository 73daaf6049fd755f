"""Where a text perturbation may go (noise on a white page is visible; near the strokes it is not).

Masks are float {0, 1} tensors ``[B, 1, H, W]`` for ThreatModel(mask=...):
- ``whole``: everywhere (no mask);
- ``strokes``: the ink dilated by ``radius`` pixels (a square structuring element);
- ``edges``: pixels where the image gradient is large: the anti-aliased glyph borders;
- ``watermark``: the glyphs of a large light text drawn across the line, the shape of the watermark
  attack (Chen et al. 2020, "Attacking Optical Character Recognition (OCR) Systems with Adversarial
  Watermarks"): the perturbation then looks like a watermark. The same for every line of a shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...threat import ThreatModel

MASKS = ("whole", "strokes", "edges", "watermark")


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"text masks need grey lines [B, 1, H, W], got {tuple(x.shape)}")


def ink(x: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Ink pixels: darker than the midpoint between each line's darkest and lightest levels."""
    _check(x)
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.quantile(0.9, dim=1)
    thr = (lo + hi) / 2 if threshold is None else torch.full_like(lo, float(threshold))
    return (x < thr[:, None, None, None]).to(x.dtype)


def stroke_mask(x: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """The ink dilated by ``radius`` pixels."""
    k = 2 * int(radius) + 1
    return F.max_pool2d(ink(x), k, stride=1, padding=int(radius))


def edge_mask(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """Pixels whose Sobel gradient magnitude exceeds ``threshold`` (grey levels per pixel)."""
    _check(x)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device) / 8
    pad = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(pad, kx[None, None])
    gy = F.conv2d(pad, kx.T[None, None])
    return ((gx ** 2 + gy ** 2).sqrt() > threshold).to(x.dtype)


def watermark_mask(x: torch.Tensor, text: str = "SAMPLE", size: int | None = None, radius: int = 1) -> torch.Tensor:
    """A watermark-shaped region: ``text`` in a large bold font centred on the line, dilated by ``radius``."""
    from .render import render_lines

    _check(x)
    b, _, h, w = x.shape
    size = size or max(int(h * 0.9), 8)
    img = render_lines([text], height=h, size=size, font="DejaVuSans-Bold", margin=0)
    m = (img < 0.5).to(x.dtype)
    out = torch.zeros(1, 1, h, w, dtype=x.dtype)
    reps = max(1, w // (m.shape[-1] + h))   # tile the mark along long lines, as watermarks repeat
    step = w // reps
    for r in range(reps):
        left = r * step + max((step - m.shape[-1]) // 2, 0)
        part = m[..., : min(m.shape[-1], w - left)]
        out[..., left:left + part.shape[-1]] = torch.maximum(out[..., left:left + part.shape[-1]], part)
    if radius:
        out = F.max_pool2d(out, 2 * radius + 1, stride=1, padding=radius)
    return out.expand(b, 1, h, w).to(x.device).contiguous()


def text_mask(name: str, x: torch.Tensor, **kwargs) -> torch.Tensor | None:
    """The mask called ``name`` for lines x (None for ``whole``)."""
    if name == "whole":
        return None
    if name == "strokes":
        return stroke_mask(x, **kwargs)
    if name == "edges":
        return edge_mask(x, **kwargs)
    if name == "watermark":
        return watermark_mask(x, **kwargs)
    raise InputError(f"unknown text mask {name!r}; known: {', '.join(MASKS)}")


def text_threat(norm: str = "linf", eps: float = 0.2, mask: str = "whole", x: torch.Tensor | None = None,
                **kwargs) -> ThreatModel:
    """A ThreatModel for lines ``x`` with one of the text masks. A per-line mask (strokes, edges) has
    the batch's shape and ``mask_per_sample=True``: the engine subsets it with the lines still attacked."""
    if mask != "whole" and x is None:
        raise InputError(f"the {mask!r} mask is computed from the lines: pass x=")
    m = text_mask(mask, x, **kwargs) if mask != "whole" else None
    if m is not None and not per_line(m):
        m = m[:1]   # one mask for every line: it then broadcasts to any subset of the batch
    return ThreatModel(norm, eps, mask=m, mask_per_sample=per_line(m))


def per_line(mask: torch.Tensor | None) -> bool:
    """Whether a mask differs between the lines of its batch (so it must be indexed per line)."""
    return mask is not None and mask.dim() == 4 and mask.shape[0] > 1 and not torch.equal(mask, mask[:1].expand_as(mask))
