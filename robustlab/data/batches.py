"""Reading data of any task as batches of ``(inputs, targets)``: the one batch iterator that
evaluation, geometry and the other measures use, its first-n cut and fixed-order materialisation.

``data`` may be an ``(x, target)`` pair, a data set with ``batches(batch_size)`` (a robustlab
``Dataset``, stereo pairs) or any iterable of ``(x, target)`` batches (a ``DataLoader``). Targets
may be label tensors, tuples of tensors (a disparity map and its valid mask) or lists (strings).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from ..errors import InputError, check_positive_int, target_length
from ..targets import concat_targets, index_target

__all__ = ["batch_list", "first_batches", "iterate_batches", "materialize"]


def iterate_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, Any]]:
    """Batches ``(x, target)`` of ``data`` in order. A pair is cut into consecutive batches of
    ``batch_size`` (indexed copies, so a caller may change a batch in place); a data set's own
    ``batches(batch_size)`` and a loader's batches are passed through."""
    check_positive_int(batch_size, "batch_size")
    if data is None:
        raise InputError("data is required: an (x, y) pair, a robustlab Dataset or an iterable of (x, target) batches")
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        yield from _pair_batches(data[0], data[1], batch_size)
        return
    if callable(getattr(data, "batches", None)):
        yield from data.batches(batch_size)
        return
    try:
        batches = iter(data)
    except TypeError:
        raise InputError(f"cannot read batches from {type(data).__name__}; pass (x, y), a Dataset or a loader") from None
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise InputError("each batch must be an (inputs, targets) pair")
        yield batch[0], batch[1]


def _pair_batches(x: torch.Tensor, target: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, Any]]:
    n = target_length(target)
    if n is not None and x.shape[0] != n:
        raise InputError(f"batch size mismatch: {x.shape[0]} inputs but {n} targets")
    for i in range(0, x.shape[0], batch_size):
        idx = torch.arange(i, min(i + batch_size, x.shape[0]))
        yield x[idx], index_target(target, idx)


def batch_list(data: Any, batch_size: int) -> list[tuple[torch.Tensor, Any]]:
    """Every batch of ``iterate_batches``, read once into a list (for measures that sweep the data
    many times); InputError if there is none."""
    batches = list(iterate_batches(data, batch_size))
    if not batches:
        raise InputError("data is empty")
    return batches


def first_batches(data: Any, n: int | None, batch_size: int) -> Iterator[tuple[torch.Tensor, Any]]:
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
