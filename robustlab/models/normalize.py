"""Input normalisation as part of the model, so attacks always work in [0, 1] input space."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class Normalize(nn.Module):
    """``Normalize(mean, std, model)(x) = model((x - mean) / std)`` with per-channel mean/std.

    Without ``model`` it is the normalisation layer alone (put it first in a Sequential).
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float, model: nn.Module | None = None):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.model(z) if self.model is not None else z
