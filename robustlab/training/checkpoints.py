"""Checkpoints: weights as safetensors (for sharing and evaluation) and the full resumable state
(model, optimizer, epoch, history, RNG-free schedule position) with torch.save. All writes atomic.

The resumable state holds only tensors and plain types (dict, list, tuple, str, int, float, bool,
None) and is read back with ``torch.load(weights_only=True)``: a state file cannot run code.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..fileio import atomic_torch_save, atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata or {}))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into `model`; a mismatch says which keys/shapes differ."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no weights at {path}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be corrupt") from None
    check_compatible(model.state_dict(), tensors, path)
    model.load_state_dict(tensors)
    return model


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (CheckpointError when it cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be corrupt") from None


def cached_weights(model: nn.Module, path: str | Path, train: Callable[[nn.Module], dict], setup: dict,
                   retrain: bool = False) -> nn.Module:
    """Train once and reuse: load ``path`` into ``model`` when it holds weights written for ``setup``
    (a JSON-able dict kept in the file's metadata under "setup"); otherwise (no file, ``retrain``, a
    corrupt or mismatched file, another setup) call ``train(model)``, save the weights with the setup
    atomically, and write ``{"setup", "train_seconds", **train's dict}`` next to them as JSON.
    Returns the model in eval mode."""
    path = Path(path)
    wanted = json.loads(json.dumps(setup))
    if path.exists() and not retrain:
        try:
            found = read_metadata(path).get("setup")
            if found is not None and json.loads(found) == wanted:
                return load_weights(model, path).eval()
            log.warning("%s was written for another setup; retraining", path)
        except CheckpointError as e:
            log.warning("%s; retraining", e)
    start = time.perf_counter()
    info = train(model) or {}
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path, {"setup": json.dumps(wanted)})
    atomic_write_json(path.with_suffix(".json"), {"setup": wanted, "train_seconds": seconds, **info})
    return model.eval()


def check_compatible(expected: dict, found: dict, path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}")
        raise CheckpointError(
            f"checkpoint {path} does not match the model ({'; '.join(parts)}); "
            "was it written for another architecture or width?"
        )


def plain_state(obj: Any) -> Any:
    """`obj` with only tensors and plain types (what ``torch.load(weights_only=True)`` accepts):
    dataclasses become dicts, numpy arrays tensors, numpy scalars and Paths Python values."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
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


def load_state(directory: str | Path, fingerprint: dict | None = None) -> dict[str, Any] | None:
    """The resumable state in `directory`, or None if there is none.

    Raises CheckpointError if it is corrupt, or if its fingerprint (the settings that must not
    change across a resume) differs from `fingerprint`.
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint") or {}
        diff = {k: (old.get(k), fingerprint.get(k)) for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)}
        raise CheckpointError(
            f"cannot resume from {path}: the run was started with different settings "
            f"(checkpoint vs now: {diff}); resume with the same config or start a new run"
        )
    return state
