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
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch.nn as nn

from .errors import CheckpointError, InputError
from .fileio import atomic_write_bytes, atomic_write_json
from .runtime import device_of

__all__ = ["save_weights", "load_weights", "read_metadata", "setup_from_metadata", "check_utf8_path", "cached_weights",
           "check_compatible", "cache_dir", "settings_key"]

log = logging.getLogger(__name__)


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata or {}))


def load_weights(model: nn.Module, path: str | Path, device: Any = None) -> nn.Module:
    """Load safetensors weights into `model`, read straight onto `device` (default: where the model's
    parameters live, so a model moved to a GPU first loads there); a mismatch says which keys/shapes differ."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no weights at {path}")
    check_utf8_path(path)
    try:
        tensors = load_file(str(path), device=str(device if device is not None else device_of(model)))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be corrupt") from None
    check_compatible(model.state_dict(), tensors, path)
    model.load_state_dict(tensors)
    return model


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (CheckpointError when it cannot be read)."""
    from safetensors import safe_open

    check_utf8_path(Path(path))
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be corrupt") from None


def check_utf8_path(path: str | Path) -> None:
    """InputError for a path that is not valid UTF-8 (a folder or file name in another encoding): it cannot
    be opened by safetensors nor shown on a page, and the data in it is not corrupt."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the path {ascii(str(path))} is not valid UTF-8; rename the folder or file to a UTF-8 "
                         "name (runs are best named with letters, digits and _ . + = @ -) and run again") from None


Bounds = dict[str, tuple[float, float]]


def setup_from_metadata(path: str | Path, setup_type: type, bounds: Bounds, what: str) -> Any:
    """The frozen dataclass `setup_type` stored as JSON under "setup" in the metadata of the weights file
    `path`, checked before any model is built from it: its keys are fields of `setup_type`, each value has
    its field's type (an int, a number, or a tuple of ints as long as the default) and every number lies
    in ``bounds[field] = (low, high)`` (inclusive), so a file cannot ask for a model of any size.
    Missing keys take their defaults. CheckpointError (one line, naming the file) otherwise."""
    meta = read_metadata(path)
    if "setup" not in meta:
        raise CheckpointError(f"{path} has no {what} setup in its metadata; was it written by robustlab?")
    try:
        raw = json.loads(meta["setup"])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: the {what} setup in its metadata is not valid JSON") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: the {what} setup in its metadata is a {type(raw).__name__}, not an object")
    fields = {f.name: f for f in dataclasses.fields(setup_type)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise CheckpointError(f"{path}: unknown key {key!r} in the {what} setup of its metadata "
                                  f"(known: {', '.join(fields)}); was it written by another robustlab version?")
        values[key] = _checked_setting(path, what, key, value, fields[key].default, bounds.get(key))
    return setup_type(**values)


def _checked_setting(path, what: str, key: str, value: Any, default: Any, bound: tuple[float, float] | None) -> Any:
    """`value` of the setup field `key` checked against its default's type and its `bound`."""
    items = list(value) if isinstance(default, tuple) and isinstance(value, list) else [value]
    ok_type = (len(items) == len(default) if isinstance(default, tuple) else True) and all(
        _is_number(v, int if isinstance(default, (int, tuple)) else float) for v in items)
    within = ok_type and (bound is None or all(bound[0] <= v <= bound[1] for v in items))
    if not within:
        expected = f"{len(default)} integers" if isinstance(default, tuple) else type(default).__name__
        limits = f" in [{bound[0]:g}, {bound[1]:g}]" if bound is not None else ""
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CheckpointError(f"{path}: the {what} setup in its metadata has {key}={shown}; expected {expected}"
                              f"{limits}. Refused before building the model: the file is corrupt or not robustlab's")
    return tuple(items) if isinstance(default, tuple) else value


def _is_number(v: Any, kind: type) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) if kind is int else math.isfinite(v)


def weights_file(spec: str | Path, model_file: str, what: str, sources: str) -> Path:
    """The weights file `spec` names: a run directory's ``checkpoints/<model_file>`` or a .safetensors path; a
    CheckpointError ``no <what> at <spec>: pass <sources>`` when there is none."""
    path = Path(spec)
    if path.is_dir():
        path = path / "checkpoints" / model_file
    if not path.exists():
        raise CheckpointError(f"no {what} at {spec}: pass {sources}")
    return path


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
