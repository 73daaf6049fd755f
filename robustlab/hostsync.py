"""Count the operations that would make the host wait for a GPU, on any device (a CPU included).

On a GPU, an operation whose result the host must read stalls the stream until every queued kernel
has run: a scalar read (``.item()``, ``float(t)``, ``bool(t)``, ``if t.any():``), an output whose size
depends on the data (``nonzero``, ``x[mask]`` with a boolean mask, ``masked_select``, ``unique``), and
a device-to-host copy (``.cpu()``, ``.tolist()``, ``.numpy()``). ``torch.cuda.set_sync_debug_mode``
reports them only on a GPU; this counter finds them on a CPU too, so a test can pin how many an attack
step makes without a GPU:

    with count_host_syncs() as syncs:
        PGD(threat, steps=20)(model, x, y)
    syncs.total, syncs.by_op       # e.g. 3, {'aten._local_scalar_dense': 2, 'aten.nonzero': 1}

It counts with a ``TorchDispatchMode`` (every ATen operation passes through it) and, for the copies to
the host that a CPU tensor does not dispatch (``.cpu()`` and ``.to("cpu")`` of a CPU tensor return it
as is; ``.tolist()`` and ``.numpy()`` read its memory), by wrapping those ``Tensor`` methods while the
counter is active. ``.to(d)`` is counted only when ``d`` is the string ``"cpu"``: code passes the working device as
a ``torch.device`` (``x.device``), which on a GPU machine is the GPU. Not thread-safe: count in one thread at a time.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: operations that read a value on the host, or whose output size depends on the data
SYNCING_OPS = {
    "aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t), if t: ...
    "aten.is_nonzero",
    "aten.equal",                # torch.equal returns a Python bool
    "aten.nonzero",
    "aten.masked_select",
    "aten.unique_dim", "aten._unique", "aten._unique2", "aten.unique_consecutive",
}


def _is_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _syncing_op(name: str, args, kwargs) -> str | None:
    """The name to count `name` under when it would synchronise a GPU (None when it would not)."""
    if name in SYNCING_OPS:
        return name
    if name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_") and len(args) > 1 \
            and _is_bool_index(args[1]):
        return name + "[bool]"
    if name == "aten.repeat_interleave" and kwargs.get("output_size") is None and args and \
            isinstance(args[0], torch.Tensor) and args[0].dtype != torch.bool and len(args) == 1:
        return name  # repeats as a tensor: the output size is read on the host
    return None


class HostSyncCounter(TorchDispatchMode):
    """The counts of host-synchronising operations seen while active: ``by_op`` (name -> count) and ``total``."""

    def __init__(self):
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _syncing_op(str(func.overloadpacket).replace("aten::", "aten."), args, kwargs)
        if name is not None:
            self.by_op[name] += 1
        return func(*args, **kwargs)


_HOST_METHODS = ("cpu", "tolist", "numpy")


def _counting(counter: HostSyncCounter, method: str, original):
    def wrapped(self, *args, **kwargs):
        counter.by_op[f"Tensor.{method}"] += 1
        return original(self, *args, **kwargs)
    return wrapped


def _counting_to(counter: HostSyncCounter, original):
    def wrapped(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, str) and target == "cpu":  # a torch.device is the working device: not counted
            counter.by_op["Tensor.to(cpu)"] += 1
        return original(self, *args, **kwargs)
    return wrapped


@contextmanager
def count_host_syncs() -> Iterator[HostSyncCounter]:
    """Count, in the block, the operations that would synchronise a GPU with the host (module docstring)."""
    counter = HostSyncCounter()
    saved = {m: getattr(torch.Tensor, m) for m in (*_HOST_METHODS, "to")}
    try:
        for m in _HOST_METHODS:
            setattr(torch.Tensor, m, _counting(counter, m, saved[m]))
        torch.Tensor.to = _counting_to(counter, saved["to"])
        with counter:
            yield counter
    finally:
        for m, original in saved.items():
            setattr(torch.Tensor, m, original)
