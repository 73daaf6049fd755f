"""Where and how a model runs: one helper per idea, shared by every layer above.

- ``eval_mode(model)``: BatchNorm statistics frozen and dropout off for a ``with`` block; afterwards
  every submodule gets its own ``training`` flag back (mixed modes survive).
- ``device_of(model)``: the device of a model's first parameter (or buffer), CPU for a plain callable.
- ``world()``: (rank, world size) of the default torch.distributed process group, (0, 1) without one.
- ``resolve_device(spec)`` / ``device_description(device)`` / ``device_record(device)``: the ``--device``
  setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a ``torch.device`` of this machine, and what a run
  records about it (type, index, name, torch version).
- ``model_digest(model)`` / ``content_digest(*values)``: SHA-256 identities of a model (architecture and
  weights) and of data (tensors, strings, nested sequences), so a stored result is reused only for them.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
import types
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["available_devices", "content_digest", "device_description", "device_of", "device_problem", "device_record",
           "eval_mode", "model_digest", "plain_settings", "resolve_device", "world"]


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


_DEVICE_SPEC = re.compile(r"(auto|cpu|cuda)(:\d+)?")


def available_devices() -> list[str]:
    """The devices of this machine by their ``--device`` names: ``cpu``, then ``cuda:0`` ... ``cuda:N-1``."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(cuda))]


def _cuda_index(spec: str) -> int:
    """The GPU a ``cuda``/``auto`` spec means: ``cuda:N`` is N; plain ``cuda`` is this process's GPU, the
    ``LOCAL_RANK`` one under torchrun (one GPU per rank), else 0."""
    _, _, index = spec.partition(":")
    return int(index) if index else int(os.environ.get("LOCAL_RANK", "0"))


def device_problem(spec: Any) -> str | None:
    """What is wrong with a device spec on this machine (None when it names one of its devices)."""
    text = str(spec).strip().lower()
    here = f"this machine has: {', '.join(available_devices())}"
    match = _DEVICE_SPEC.fullmatch(text)
    if match is None or (match.group(2) and match.group(1) != "cuda"):
        return f"not a device: give auto, cpu, cuda or cuda:N ({here})"
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return None
    if not torch.cuda.is_available():
        return f"no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); {here}"
    if _cuda_index(text) >= torch.cuda.device_count():
        return f"no CUDA device {_cuda_index(text)} here; {here}"
    return None


def resolve_device(spec: Any = "auto") -> torch.device:
    """The ``torch.device`` of a ``--device`` setting: ``auto`` is CUDA when available, else the CPU;
    ``cpu``; ``cuda:N``; ``cuda`` (and ``auto`` with CUDA) is ``cuda:LOCAL_RANK`` under torchrun, one GPU
    per rank, else ``cuda:0``. A ``torch.device`` passes through. Anything else, or a GPU this machine does
    not have, is one ``InputError`` naming the flag and this machine's devices."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    problem = device_problem(spec)
    if problem is not None:
        raise InputError(f"--device {spec!r}: {problem}")
    text = str(spec).strip().lower()
    if text == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", _cuda_index("cuda" if text == "auto" else text))


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_description(device: Any) -> dict:
    """What a run records about the device it ran on: type, index, name (the GPU's, or the CPU's model
    name) and the torch version (with the CUDA version it was built for)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"type": device.type, "index": device.index, "name": name, "torch": torch.__version__,
            "cuda": torch.version.cuda}


def device_record(device: Any) -> dict:
    """The ``device`` (resolved, e.g. ``cuda:1``) and ``device_description`` keys of a run's config."""
    return {"device": str(torch.device(device)), "device_description": device_description(device)}


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Add ``value`` to the hash ``h``, tagged by kind so different structures never collide: a tensor
    as dtype, shape and raw bytes; a sequence or dict element by element; anything else as its repr."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        t = value.detach()
        t = (t.to_dense() if t.layout != torch.strided else t).resolve_conj().resolve_neg()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}:".encode())
        for v in value:
            _feed(h, v)
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for k in sorted(value, key=lambda k: (type(k).__qualname__, str(k))):
            _feed(h, f"{type(k).__qualname__}:{k}")
            _feed(h, value[k])
    else:
        text = value if isinstance(value, str) else f"{type(value).__qualname__}:{value!r}"
        h.update(f"S{len(text.encode())}:".encode() + text.encode())


def content_digest(*values: Any) -> str:
    """SHA-256 (hex) of ``values``: tensors by dtype, shape and bytes (on any device), strings,
    numbers and nested lists/tuples/dicts of them; equal content gives an equal digest in any process."""
    h = hashlib.sha256()
    _feed(h, list(values))
    return h.hexdigest()


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a closure variable not yet assigned
        return None


_OPAQUE = (str, bytes, int, float, bool, complex, torch.Tensor, np.ndarray, type, types.ModuleType)


def _parts_of(obj: Any) -> list:
    """What an object may reach a module through: a container's elements; a function's closure, the
    globals it names, ``functools.partial`` arguments, ``__self__`` and ``__wrapped__``; an object's attributes."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return list(obj.values())
    parts: list = [getattr(obj, "__self__", None), getattr(obj, "__wrapped__", None)]
    if isinstance(obj, functools.partial):
        parts += [obj.func, *obj.args, *obj.keywords.values()]
    code = getattr(obj, "__code__", None)
    if code is not None:
        parts += [_cell_value(c) for c in (getattr(obj, "__closure__", None) or ())]
        glob = getattr(obj, "__globals__", {})
        parts += [glob[n] for n in code.co_names if n in glob]
    elif hasattr(obj, "__dict__") and not str(getattr(type(obj), "__module__", "")).startswith(("torch", "numpy")):
        parts += list(vars(obj).values())
    return parts


def _modules_behind(obj: Any, depth: int = 0) -> list[nn.Module]:
    """The ``nn.Module``s a callable runs: itself, or those a plain function reaches through its closure,
    the globals it names (and the lists, dicts and objects those hold), a bound method's object,
    ``functools.partial`` arguments or ``__wrapped__``."""
    if isinstance(obj, nn.Module):
        return [obj]
    if depth > 4 or obj is None or isinstance(obj, _OPAQUE) or getattr(obj, "__module__", "") in ("builtins",):
        return []
    found: list[nn.Module] = []
    for p in _parts_of(obj):
        found += [m for m in _modules_behind(p, depth + 1) if all(m is not f for f in found)]
    return found


def plain_settings(obj: Any) -> dict:
    """An object's class and its plain settings (numbers, strings, booleans, None and lists of them),
    e.g. an attack's steps, step size, budget and EOT options: what a resume must match."""
    plain = (int, float, str, bool, type(None))
    values = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and (
        isinstance(v, plain) or (isinstance(v, (list, tuple)) and all(isinstance(e, plain) for e in v)))}
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", **values}


def model_digest(model: Any) -> str:
    """SHA-256 (hex) of what a model computes: its architecture (the module tree as ``repr`` prints it,
    memory addresses removed) and every ``state_dict`` tensor (weights and buffers such as BatchNorm
    statistics) in sorted key order, with its dtype and shape. Train/eval mode does not count. A plain
    callable is identified by the modules it runs (see ``_modules_behind``); one that runs none gets a
    digest of its own, so nothing computed for it is ever reused. One pass over the weights: about a second per GB on a CPU."""
    modules = _modules_behind(model)
    if not modules:  # nothing to identify it by: a digest no other call shares, so nothing is ever reused
        log.info("model_digest: %r runs no nn.Module robustlab can see; its cells will not be reused", model)
        return "unidentified-" + uuid.uuid4().hex
    h = hashlib.sha256()
    for m in modules:
        _feed(h, re.sub(r"0x[0-9a-fA-F]+", "0x", f"{type(m).__module__}.{type(m).__qualname__}:{m!r}"))
        _feed(h, m.state_dict())
    return h.hexdigest()


def host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor's value on the host costs only the read (tensors in host memory, the CPU): code
    may then check at once, or compact a batch every step, where on an accelerator it defers to save a
    stall. The one place this is decided; tests that count the syncs an accelerator would see
    (``robustlab.hostsync``) patch it to return False, so they count the accelerator's code path on a CPU."""
    return torch.device(device).type == "cpu"


# ----- optional speed-ups on a GPU: torch.compile and channels_last ----------------------------------
#: what ``compile=True`` means: TorchInductor, torch.compile's default backend
DEFAULT_COMPILE_BACKEND = "inductor"
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compile_backend(option: Any) -> str | None:
    """The torch.compile backend an option names: None for False/"off", the default for True, else its name."""
    if option is None or option is False or option == "off":
        return None
    return DEFAULT_COMPILE_BACKEND if option is True else str(option)


def compiled_model(model: Callable, option: Any) -> Callable:
    """`model` through ``torch.compile`` with the backend `option` names (``compile_backend``), compiled once per
    model and backend and reused; the compiled module shares the model's parameters, so training it trains the
    model and saving the model saves them. Anything but an ``nn.Module`` (an oracle, a function) is returned as
    is. Off by default everywhere: compiled kernels may round differently in the last bits."""
    backend = compile_backend(option)
    if backend is None or not isinstance(model, torch.nn.Module):
        return model
    per_model = _COMPILED.setdefault(model, {})
    if backend not in per_model:
        per_model[backend] = torch.compile(model, backend=backend)
    return per_model[backend]


def to_channels_last(t: Any) -> Any:
    """A 4-d tensor (a batch of images, or a convolutional model's weights) in the channels-last memory format,
    which tensor cores prefer; the values are unchanged. Anything else is returned as is."""
    if isinstance(t, torch.nn.Module):
        return t.to(memory_format=torch.channels_last)
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t
