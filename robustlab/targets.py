"""Targets of any task travel with their inputs: a label tensor [B], a tuple of tensors (a
disparity map and its valid mask), or a list of objects (strings). These helpers index, join and
move them without knowing which."""
from __future__ import annotations

from typing import Any

import torch

from .errors import InputError


def index_target(target: Any, idx: torch.Tensor) -> Any:
    """Select samples `idx` of a target: a tensor, a tuple of tensors, or a list of objects."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor):
        return target[idx.to(target.device)]
    if isinstance(target, tuple) and all(isinstance(t, torch.Tensor) for t in target):
        return tuple(t[idx.to(t.device)] for t in target)
    if isinstance(target, tuple) and target and all(isinstance(t, (list, torch.Tensor)) for t in target):
        return tuple(index_target(t, idx) for t in target)  # e.g. (truth strings, wanted strings)
    if isinstance(target, (list, tuple)):
        return [target[i] for i in idx.tolist()]
    raise InputError(f"unsupported target type {type(target).__name__}")


def concat_targets(parts: list) -> Any:
    """Concatenate batch targets: tensors, tuples of tensors, or lists."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, tuple) and all(isinstance(t, torch.Tensor) for t in first):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))
    return [t for p in parts for t in p]


def target_to(target: Any, device: torch.device) -> Any:
    """Move a target's tensors to `device` (lists of objects stay as they are)."""
    if isinstance(target, torch.Tensor):
        return target.to(device)
    if isinstance(target, tuple) and all(isinstance(t, torch.Tensor) for t in target):
        return tuple(t.to(device) for t in target)
    return target
