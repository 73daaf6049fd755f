"""Model weights as safetensors files: save and load (a mismatch names the keys and shapes), the string
metadata, and ``cached_weights`` (train once, reuse while the file was written for the same setup)
with the cache folder ``cache_dir`` and the file-name key ``settings_key`` of the models trained once.
All writes atomic; reading never unpickles. A bottom-layer module, so every measure and task can
cache the models it trains (training, representations, stereo, OCR)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch.nn as nn

from .errors import CheckpointError
from .fileio import atomic_write_bytes, atomic_write_json

__all__ = ["save_weights", "load_weights", "read_metadata", "cached_weights", "check_compatible", "cache_dir",
           "settings_key"]

log = logging.getLogger(__name__)


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


def cache_dir(*parts: str) -> Path:
    """The folder of cached trained weights: ``$ROBUSTLAB_DATA`` (default ``./data-cache``, relative
    to the working directory) joined with ``parts``, e.g. ``cache_dir("stereo")``."""
    return Path(os.environ.get("ROBUSTLAB_DATA", "data-cache"), *parts)


def settings_key(settings: Any, drop_defaults: Iterable[str] = ()) -> str:
    """The cache key of a dataclass of settings: the first 12 hex digits of the SHA-256 of its fields
    as JSON (sorted keys). The fields named in ``drop_defaults`` are left out while they hold their
    default, so adding an option keeps the key, and the file name, of the weights cached before it."""
    fields = dataclasses.asdict(settings)
    for f in dataclasses.fields(settings):
        if f.name in drop_defaults and fields[f.name] == f.default:
            del fields[f.name]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


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
