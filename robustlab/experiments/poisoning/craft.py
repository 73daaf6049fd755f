"""`robustlab poison craft --attack badnets --data mnist --rate 0.01 --target 0`: poison a data set's train
split into a poisoned-data run (``runs.write_poisoned_run``), which `robustlab train --data` accepts."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from ...errors import InputError
from ...settings import StrictSettings, add_model_arguments, settings_from_args
from ..job import RunTarget

__all__ = ["CraftSettings", "craft", "add_parser", "main"]


class CraftSettings(StrictSettings):
    """What `robustlab poison craft` poisons and how."""

    attack: str = Field("badnets", description="poisoning attack (robustlab.poisoning.POISONS): badnets, blend, "
                                               "wanet, label_flip, ...")
    data: str = Field("mnist", description="data set whose train split is poisoned (as `robustlab train --data`)")
    data_seed: int = Field(0, ge=0, description="seed of the train/val/test split")
    data_dir: Optional[str] = Field(None, description="directory with the full MNIST (IDX) or CIFAR-10 batches")
    rate: float = Field(0.1, ge=0, le=1, description="poisoned share of the train split (round(rate * N) samples)")
    target: int = Field(0, ge=0, description="the attacker's target class (all-to-one)")
    all_to_all: bool = Field(False, description="all-to-all backdoor: y -> (y + 1) mod K")
    seed: int = Field(0, description="seed of the poisoned-sample draw and of random triggers")
    attack_kwargs: dict[str, Any] = Field({}, description="JSON settings of the attack, e.g. "
                                                          "'{\"position\": [0, 0]}', '{\"alpha\": 0.1}', '{\"s\": 0.75}'")


def build_attack(s: CraftSettings):
    """The attack of `s`: the common settings its constructor takes, plus ``attack_kwargs`` (any other key
    is an InputError naming the accepted ones)."""
    from ...poisoning import POISONS

    cls = POISONS.get(s.attack)
    params = set(inspect.signature(cls).parameters)
    unknown = sorted(set(s.attack_kwargs) - params)
    if unknown:
        raise InputError(f"--attack-kwargs: {s.attack} takes no {', '.join(unknown)}; it takes {', '.join(sorted(params))}")
    common = {k: getattr(s, k) for k in ("rate", "target", "all_to_all", "seed") if k in params}
    if "target" in common and s.attack in ("label_flip",):
        common.pop("target")  # label flipping's target goes with its source (class-targeted), in attack_kwargs
    return cls(**{**common, **s.attack_kwargs})


def craft(s: CraftSettings, run_dir: str | Path) -> Path:
    """Poison `s.data`'s train split with `s`'s attack and write the poisoned-data run `run_dir`."""
    from ...data import load_dataset
    from .runs import write_poisoned_run

    attack = build_attack(s)
    train = load_dataset(s.data, "train", seed=s.data_seed, data_dir=s.data_dir)
    if not hasattr(train, "x"):
        raise InputError(f"{s.data} is streamed from disk; poisoning needs an in-memory data set")
    poisoned = attack.poison(train)
    source = {"name": s.data, "seed": s.data_seed, "data_dir": s.data_dir}
    return write_poisoned_run(run_dir, poisoned, source, attack)


def add_parser(subparsers):
    p = subparsers.add_parser("craft", help="poison a data set's train split into a poisoned-data run",
                              description="Writes <runs>/<name>/ with config.yaml, data.safetensors, summary.json; "
                                          "train on it with `robustlab train --data <runs>/<name>`.")
    add_model_arguments(p, CraftSettings)
    add_model_arguments(p, RunTarget)
    return p


def main(args) -> int:
    settings = settings_from_args((CraftSettings, RunTarget), args, "`robustlab poison craft` arguments")
    s, target = settings[CraftSettings], settings[RunTarget]
    run_dir = Path(target.runs) / (target.name or f"poison-{s.attack}-{s.data.replace('/', '_').replace(':', '_')}-{s.rate:g}")
    path = craft(s, run_dir)
    import json

    summary = json.loads((path / "summary.json").read_text())
    print(f"{path}: {summary['n_poisoned']} of {summary['n']} samples poisoned ({s.attack}, rate {summary['rate']:.4f}); "
          f"train on it with `robustlab train --data {path}`")
    return 0
