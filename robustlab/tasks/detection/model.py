"""A small one-stage detector trained in minutes on a CPU (CenterNet-style, Zhou et al. 2019,
"Objects as Points"): a fully convolutional net at stride 4 whose every output cell is one candidate
anchored at the cell's centre, with K class logits, a centre offset and a box size.

Its forward returns the task's dense raw tensor (``boxes.py``): [B, N, 6 + K] with N = cells,
the anchor (cell centre, pixels), the box xyxy (pixels) and the class logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .boxes import Detections, decode

#: the initial class prior of the logits' bias (Lin et al. 2017: a rare-positive start)
PRIOR = 0.05


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyDetector(nn.Module):
    """``width`` channels at stride 2, 2 x width at stride 4, then dilated
    convs (dilation 2 and 4) so a cell sees objects up to about 40 px; one 1x1 head for K logits,
    2 offsets (centre = anchor + stride * tanh(o)) and 2 log sizes (size = stride * exp(s))."""

    stride = 4

    def __init__(self, num_classes: int = 4, width: int = 16, in_channels: int = 3):
        super().__init__()
        self.num_classes = int(num_classes)
        w = int(width)
        self.body = nn.Sequential(_conv(in_channels, w, 2), _conv(w, 2 * w, 2),
                                  _conv(2 * w, 2 * w, dilation=2), _conv(2 * w, 2 * w, dilation=4), _conv(2 * w, 2 * w))
        self.head = nn.Conv2d(2 * w, self.num_classes + 4, 1)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[: self.num_classes] = math.log(PRIOR / (1 - PRIOR))

    def anchors(self, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The cell centres (x, y) in pixels of an h x w output map, row-major: [h * w, 2]."""
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * self.stride
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * self.stride
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))                        # [B, K + 4, h, w]
        b, _, h, w = out.shape
        out = out.flatten(2).transpose(1, 2)                 # [B, N, K + 4]
        k = self.num_classes
        anchor = self.anchors(h, w, x.device, out.dtype).expand(b, -1, -1)
        centre = anchor + self.stride * torch.tanh(out[..., k:k + 2])
        size = self.stride * torch.exp(out[..., k + 2:k + 4].clamp(-4.0, 4.0))
        box = torch.cat([centre - size / 2, centre + size / 2], -1)
        return torch.cat([anchor, box, out[..., :k]], -1)

    def decode(self, raw: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
        return decode(raw, score_threshold, iou_threshold)

    @torch.no_grad()
    def detect(self, x: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
        """Detections per image of x (eval mode is the caller's)."""
        return self.decode(self(x), score_threshold, iou_threshold)
