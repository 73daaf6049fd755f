"""A poisoned-data run as a data set: ``load_dataset("runs/<poisoned run>", split)``.

A poisoned-data run (``robustlab poison craft``) holds ``config.yaml`` (``kind: poisoned-data``, the source
data spec ``source: {name, seed, data_dir}`` and the attack's settings) and ``data.safetensors`` (the poisoned
training split: ``x``, ``y``, ``poisoned``, ``original_y`` and the trigger's tensors). Its ``train`` split is
the poisoned one; ``val`` and ``test`` are the source data's clean splits under the same split seed (the
poisoned points came from the source's train split, so none of them is in val or test).
Tensors are read with safetensors (never unpickled)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import yaml

from ..errors import InputError

__all__ = ["POISONED_KIND", "is_poisoned_run", "poisoned_config", "poisoned_tensors", "poisoned_digest",
           "load_poisoned_split"]

POISONED_KIND = "poisoned-data"


def is_poisoned_run(name) -> bool:
    """Whether `name` is a folder whose config.yaml says ``kind: poisoned-data``."""
    path = Path(str(name))
    config = path / "config.yaml"
    if not config.is_file():
        return False
    try:
        return (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("kind") == POISONED_KIND
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return False


def poisoned_config(path) -> dict:
    """The run's config.yaml (an InputError when it is not a poisoned-data run)."""
    if not is_poisoned_run(path):
        raise InputError(f"{path} is not a poisoned-data run (no config.yaml with kind: {POISONED_KIND}); "
                         "make one with `robustlab poison craft`")
    return yaml.safe_load((Path(path) / "config.yaml").read_text(encoding="utf-8"))


def poisoned_tensors(path) -> dict[str, torch.Tensor]:
    """The tensors of the run's data.safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = Path(path) / "data.safetensors"
    if not f.is_file():
        raise InputError(f"{path}: data.safetensors is missing; craft the run again with `robustlab poison craft`")
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{f} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e}); "
                         "craft the run again") from None
    missing = [k for k in ("x", "y", "poisoned", "original_y") if k not in tensors]
    if missing:
        raise InputError(f"{f} lacks {', '.join(missing)}; craft the run again with `robustlab poison craft`")
    return tensors


def poisoned_digest(path) -> str:
    """SHA-256 of the run's data.safetensors (a training run records it; a resume on other data is refused)."""
    h = hashlib.sha256()
    with open(Path(path) / "data.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_poisoned_split(path, split: str, seed: int, load_source):
    """`split` of the poisoned-data run at `path`: ``train`` the poisoned samples, the others the source's
    clean split through ``load_source(name, split, seed, data_dir)``. A split seed other than the one the
    run was crafted with is refused (val/test would then overlap the poisoned training points)."""
    from . import Dataset

    config = poisoned_config(path)
    source = config.get("source") or {}
    src_seed = int(source.get("seed", 0))
    if int(seed) != src_seed:
        raise InputError(f"{path} was crafted from {source.get('name')} with split seed {src_seed}; train on it with "
                         f"--data-seed {src_seed} (another split would put poisoned training points in val/test)")
    if split in ("val", "test"):
        return load_source(source["name"], split, src_seed, source.get("data_dir"))
    if split != "train":
        raise InputError(f"a poisoned-data run has train, val and test splits, not {split!r}")
    t = poisoned_tensors(path)
    return Dataset(t["x"].float().contiguous(), t["y"].long(), str(config.get("name") or Path(path).name),
                   list(config.get("classes") or []))
