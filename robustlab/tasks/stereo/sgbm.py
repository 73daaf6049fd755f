"""OpenCV's semi-global block matching (Hirschmuller 2008) as a classical baseline and a black-box
target: a score oracle from uint8 pairs to disparity maps."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from ...oracles import ScoreOracle


class SGBM:
    """Callable: uint8 or [0, 1] pairs [B, 6, H, W] -> disparity [B, 1, H, W] (invalid matches -> 0)."""

    def __init__(self, max_disp: int = 32, block_size: int = 5, uniqueness: int = 5, speckle_window: int = 0):
        try:
            import cv2
        except ImportError:
            raise InputError("SGBM needs OpenCV: pip install opencv-python-headless") from None
        num = int(np.ceil(max_disp / 16) * 16)
        self.matcher = cv2.StereoSGBM_create(
            minDisparity=0, numDisparities=num, blockSize=block_size, P1=8 * block_size ** 2,
            P2=32 * block_size ** 2, uniquenessRatio=uniqueness, speckleWindowSize=speckle_window,
            mode=cv2.STEREO_SGBM_MODE_SGBM)
        self.cv2 = cv2

    def __call__(self, pairs: torch.Tensor) -> torch.Tensor:
        if pairs.dim() != 4 or pairs.shape[1] != 6:
            raise InputError(f"SGBM takes stereo pairs [B, 6, H, W], got {tuple(pairs.shape)}")
        if pairs.dtype != torch.uint8:
            pairs = (pairs.clamp(0, 1) * 255).round().to(torch.uint8)
        out = []
        for p in pairs.cpu().numpy():
            left = self.cv2.cvtColor(np.ascontiguousarray(p[:3].transpose(1, 2, 0)), self.cv2.COLOR_RGB2GRAY)
            right = self.cv2.cvtColor(np.ascontiguousarray(p[3:].transpose(1, 2, 0)), self.cv2.COLOR_RGB2GRAY)
            d = self.matcher.compute(left, right).astype(np.float32) / 16.0
            out.append(np.where(d < 0, 0.0, d)[None])
        return torch.from_numpy(np.stack(out))


def sgbm_oracle(max_disp: int = 32, **kwargs) -> ScoreOracle:
    """SGBM behind a score oracle that quantises queries to uint8, as a real system sees them."""
    return ScoreOracle(SGBM(max_disp, **kwargs), input_dtype="uint8")
