"""Checkpoints: the full resumable state (model, optimizer, epoch, history, RNG-free schedule position)
with torch.save, and (re-exported from :mod:`robustlab.weights`) weights as safetensors. All writes atomic.

The resumable state holds only tensors and plain types (dict, list, tuple, str, int, float, bool,
None) and is read back with ``torch.load(weights_only=True)``: a state file cannot run code. It is saved
device-independent (CPU tensors) and read onto the CPU; ``load_state_dict`` then copies it to wherever the
model and optimizer live.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_torch_save
from ..weights import cached_weights, check_compatible, load_weights, read_metadata, save_weights

__all__ = ["STATE_FILE", "cached_weights", "check_compatible", "load_state", "load_weights", "plain_state",
           "read_metadata", "save_state", "save_weights"]

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def plain_state(obj: Any) -> Any:
    """`obj` with only tensors and plain types (what ``torch.load(weights_only=True)`` accepts):
    dataclasses become dicts, numpy arrays tensors, numpy scalars and Paths Python values; tensors on a
    GPU are copied to the CPU, so the file loads on any machine."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return type(obj)((plain_state(k), plain_state(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {plain_state(k): plain_state(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(plain_state(v) for v in obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain_state(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain_state(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    raise CheckpointError(
        f"cannot store a {type(obj).__name__} in the training state: it holds only tensors and plain types "
        "(dict, list, tuple, str, int, float, bool, None); convert it first"
    )


def save_state(directory: str | Path, state: dict[str, Any]) -> Path:
    path = Path(directory) / STATE_FILE
    atomic_torch_save(plain_state(state), path)
    return path


def load_state(directory: str | Path, fingerprint: dict | None = None, map_location: Any = "cpu",
               ignore: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The resumable state in `directory` (its tensors on `map_location`), or None if there is none.

    Raises CheckpointError if it is corrupt, or if its fingerprint (the settings that must not
    change across a resume) differs from `fingerprint` in a key not in `ignore` (settings that change only
    what is written alongside, such as ``tensorboard``).
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain types, so loading it "
            f"could run code ({str(e).splitlines()[0][:200]}). If you wrote it yourself with an older robustlab, "
            "delete it and train again; never resume from a state file you did not write"
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt. Delete it to start "
            "over, or restore it from a copy"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a robustlab training state")
    kept = (lambda d: {k: v for k, v in (d or {}).items() if k not in ignore})
    if fingerprint is not None and kept(state.get("fingerprint")) != kept(fingerprint):
        old, fingerprint = kept(state.get("fingerprint")), kept(fingerprint)
        diff = {k: (old.get(k), fingerprint.get(k)) for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)}
        raise CheckpointError(
            f"cannot resume from {path}: the run was started with different settings "
            f"(checkpoint vs now: {diff}); resume with the same config or start a new run"
        )
    return state
