"""A small differentiable stereo network, trainable on a CPU in minutes.

Shared feature extractor at 1/4 resolution, cosine-correlation cost volume, 2-D aggregation (the
disparity axis as channels: no Conv3d, whose backward is slow on CPUs), soft-argmin, upsampling and
a residual refinement guided by the left image. No ReLU on the output disparity (it would kill
gradients). Input: a pair stacked on channels [B, 6, H, W] in [0, 1]; output: disparity [B, 1, H, W].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StereoNet(nn.Module):
    def __init__(self, max_disp: int = 32, features: int = 32, hidden: int = 64):
        super().__init__()
        if max_disp % 4:
            raise ValueError("max_disp must be a multiple of 4 (the cost volume is at 1/4 resolution)")
        self.max_disp = max_disp
        self.d4 = max_disp // 4
        self.features = nn.Sequential(_conv(3, 16, 2), _conv(16, features, 2), _conv(features, features),
                                      nn.Conv2d(features, features, 3, 1, 1))
        self.aggregate = nn.Sequential(_conv(self.d4, hidden), _conv(hidden, hidden), _conv(hidden, hidden),
                                       nn.Conv2d(hidden, self.d4, 3, 1, 1))
        self.refine = nn.Sequential(_conv(4, 16), _conv(16, 16), nn.Conv2d(16, 1, 3, 1, 1))

    def cost_volume(self, fl: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of left features with right features shifted by d = 0..D/4-1."""
        fl, fr = F.normalize(fl, dim=1), F.normalize(fr, dim=1)
        vols = [(fl * fr).sum(1)]
        for d in range(1, self.d4):
            shifted = F.pad(fr[..., :-d], (d, 0))
            vols.append((fl * shifted).sum(1))
        return torch.stack(vols, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        left, right = pair[:, :3], pair[:, 3:]
        h, w = left.shape[-2:]
        f = self.features(torch.cat([left, right]))
        fl, fr = f[: left.shape[0]], f[left.shape[0]:]
        logits = self.aggregate(self.cost_volume(fl, fr))
        prob = F.softmax(logits, 1)
        disp4 = (prob * torch.arange(self.d4, dtype=prob.dtype, device=prob.device)[None, :, None, None]).sum(1, keepdim=True)
        disp = F.interpolate(disp4 * 4, size=(h, w), mode="bilinear", align_corners=False)
        return disp + self.refine(torch.cat([left, disp / self.max_disp], 1))
