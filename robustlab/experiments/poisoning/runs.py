"""Poisoned-data runs: a crafted poisoned training set on disk, which ``robustlab train --data`` accepts.

A run folder holds ``config.yaml`` (``kind: poisoned-data``; ``source``: the data spec it was crafted from,
with its split seed; ``attack``: the attack's settings; ``name``/``classes``), ``data.safetensors`` (``x``,
``y``, ``poisoned``, ``original_y`` and the trigger's tensors as ``trigger.<name>``, e.g. WaNet's warp
grid or a Blend pattern) and ``summary.json`` (n, rate, counts, the data's SHA-256). Written atomically;
an existing poisoned-data run is never overwritten."""
from __future__ import annotations

import inspect
from pathlib import Path

from ...data import poisoned_digest
from ...data.poisoned import POISONED_KIND, poisoned_config, poisoned_tensors
from ...errors import InputError
from ...fileio import atomic_write_bytes
from ...poisoning import POISONS, Poison, PoisonedDataset
from ...runs.rundir import Run, split_run_dir

__all__ = ["write_poisoned_run", "read_poisoned_run", "attack_from_run", "attack_from_settings", "source_split"]

TRIGGER_PREFIX = "trigger."


def _summary(poisoned: PoisonedDataset) -> dict:
    idx = poisoned.poisoned_indices
    changed = poisoned.y[idx] != poisoned.original_y[idx]
    return {"n": len(poisoned), "n_poisoned": int(poisoned.poisoned.sum()), "rate": poisoned.rate,
            "relabelled": int(changed.sum()),
            "poisoned_per_original_class": {str(int(c)): int((poisoned.original_y[idx] == c).sum())
                                            for c in poisoned.original_y[idx].unique()},
            "poisoned_per_new_class": {str(int(c)): int((poisoned.y[idx] == c).sum()) for c in poisoned.y[idx].unique()}}


def write_poisoned_run(path: str | Path, poisoned: PoisonedDataset, source: dict, attack: Poison | None = None) -> Path:
    """Write `poisoned` (crafted from the data spec `source`: name, seed, data_dir) as a poisoned-data run
    at `path`, with `attack`'s trigger tensors. Refuses a folder that already holds one."""
    from safetensors.torch import save

    tensors = {"x": poisoned.x.detach().cpu().float().contiguous(), "y": poisoned.y.cpu().long(),
               "poisoned": poisoned.poisoned.cpu(), "original_y": poisoned.original_y.cpu().long()}
    trigger = attack.trigger_tensors() if attack is not None and hasattr(attack, "trigger_tensors") else {}
    tensors.update({TRIGGER_PREFIX + k: v.float().contiguous() for k, v in trigger.items()})
    with Run.writing(*split_run_dir(path), POISONED_KIND) as run:
        if (run.path / "data.safetensors").exists():
            raise InputError(f"{run.path} already holds a poisoned-data run; choose another --name (runs are never "
                             "overwritten)")
        atomic_write_bytes(run.path / "data.safetensors", save(tensors), inside=run.path)
        run.write_config({"kind": POISONED_KIND, "source": {"seed": 0, "data_dir": None, **source},
                          "attack": dict(poisoned.settings), "name": poisoned.name, "classes": list(poisoned.classes),
                          "trigger_tensors": sorted(trigger)})
        run.write_summary({**_summary(poisoned), "attack": poisoned.settings.get("attack"),
                           "sha256": poisoned_digest(run.path)})
        return run.path


def read_poisoned_run(path: str | Path) -> tuple[PoisonedDataset, dict]:
    """The poisoned training set of a run (with its exact mask and original labels) and its config."""
    config = poisoned_config(path)
    t = poisoned_tensors(path)
    data = PoisonedDataset(t["x"].float(), t["y"].long(), str(config.get("name") or "data"),
                           list(config.get("classes") or []), t["poisoned"].bool(), t["original_y"].long(),
                           dict(config.get("attack") or {}))
    return data, config


def attack_from_settings(settings: dict, tensors: dict | None = None) -> Poison:
    """The attack named by ``settings['attack']``, built from the settings its constructor takes (and the
    trigger tensors)."""
    name = (settings or {}).get("attack")
    if not name:
        raise InputError("the run's config names no attack (attack: settings missing)")
    cls = POISONS.get(name)
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in {**settings, **(tensors or {})}.items() if k in params}
    if isinstance(kwargs.get("position"), list):
        kwargs["position"] = tuple(kwargs["position"])
    return cls(**kwargs)


def attack_from_run(path: str | Path) -> Poison:
    """The run's attack rebuilt with its trigger (the same patch, pattern or warp grid): for the ASR."""
    config = poisoned_config(path)
    t = poisoned_tensors(path)
    trigger = {k[len(TRIGGER_PREFIX):]: v for k, v in t.items() if k.startswith(TRIGGER_PREFIX)}
    return attack_from_settings(config.get("attack") or {}, trigger)


def source_split(path: str | Path, split: str):
    """The clean `split` of the data the run was crafted from (its own split seed)."""
    from ...data import load_dataset

    source = poisoned_config(path).get("source") or {}
    return load_dataset(source["name"], split, seed=int(source.get("seed", 0)), data_dir=source.get("data_dir"))

