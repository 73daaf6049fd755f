"""Where and how a model runs: one helper per idea, shared by every layer above.

- ``eval_mode(model)``: BatchNorm statistics frozen and dropout off for a ``with`` block; afterwards
  every submodule gets its own ``training`` flag back (mixed modes survive).
- ``device_of(model)``: the device of a model's first parameter (or buffer), CPU for a plain callable.
- ``world()``: (rank, world size) of the default torch.distributed process group, (0, 1) without one.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["device_of", "eval_mode", "world"]


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode inside the block, every submodule's own mode restored after it.
    Anything that is not an ``nn.Module`` passes through unchanged."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def device_of(model: Any) -> torch.device:
    """Where a model's parameters (or, without any, its buffers) live; CPU for a plain callable."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return torch.device("cpu")


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
