"""Reading evaluation data of any task: batches of (inputs, targets), fixed-order materialisation,
the model's device and eval mode."""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from ..errors import InputError, target_length
from ..runtime import device_of, eval_mode
from ..targets import concat_targets, index_target

__all__ = ["device_of", "eval_mode", "first_batches", "iterate_batches", "materialize"]


def iterate_batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, Any]]:
    """Batches (x, target) from an (x, target) pair, a robustlab Dataset, a DataLoader or any
    iterable of (x, target) batches. Targets may be label tensors or tuples of tensors (a
    disparity map and its valid mask) or lists (strings)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, target = data
        n = target_length(target)
        if n is not None and x.shape[0] != n:
            raise InputError(f"batch size mismatch: {x.shape[0]} inputs but {n} targets")
        for i in range(0, x.shape[0], batch_size):
            idx = torch.arange(i, min(i + batch_size, x.shape[0]))
            yield x[idx], index_target(target, idx)
        return
    if hasattr(data, "batches"):
        yield from data.batches(batch_size)
        return
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise InputError("each batch must be an (inputs, targets) pair")
        yield batch[0], batch[1]


def first_batches(data: Any, n: int | None, batch_size: int) -> Iterable[tuple[torch.Tensor, Any]]:
    """The batches of ``iterate_batches`` up to the first n points (all with n=None); the batch
    that crosses n is cut there, and no batch is read after it."""
    seen = 0
    if n is not None and n <= 0:
        return
    for xb, tb in iterate_batches(data, batch_size):
        if n is not None and xb.shape[0] > n - seen:
            keep = torch.arange(n - seen)
            xb, tb = xb[keep], index_target(tb, keep)
        seen += xb.shape[0]
        yield xb, tb
        if n is not None and seen >= n:
            return


def materialize(data: Any, n: int | None = None, batch_size: int = 500) -> tuple[torch.Tensor, Any]:
    """The first n points of `data` as one (x, target) pair, in a fixed order (a shuffled loader is
    read once, so every later pass pairs each point with itself)."""
    xs, ts = [], []
    for xb, tb in first_batches(data, n, batch_size):
        xs.append(xb)
        ts.append(tb)
    if not xs:
        raise InputError("no data to evaluate")
    return torch.cat(xs), concat_targets(ts)
