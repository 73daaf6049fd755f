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
    rate: Optional[float] = Field(None, ge=0, le=1, description="poisoned share (round(rate * N) samples; clean-label: "
                                  "of the target class); unset: the attack's own default (0.1 for the backdoors, "
                                  "the whole set for adversarial poisons and unlearnable examples)")
    target: int = Field(0, ge=0, description="the attacker's target class (all-to-one)")
    all_to_all: bool = Field(False, description="all-to-all backdoor: y -> (y + 1) mod K")
    seed: int = Field(0, description="seed of the poisoned-sample draw and of random triggers")
    attack_kwargs: dict[str, Any] = Field({}, description="JSON settings of the attack, e.g. "
                                                          "'{\"position\": [0, 0]}', '{\"alpha\": 0.1}', '{\"s\": 0.75}'")
    model: Optional[str] = Field(None, description="a trained model run (its best weights) for the poisons crafted on a "
                                                   "model: clean_label's surrogate, adversarial_poison's and "
                                                   "unlearnable's model")


def build_attack(s: CraftSettings):
    """The attack of `s`: the common settings its constructor takes, plus ``attack_kwargs`` (any other key
    is an InputError naming the accepted ones)."""
    from ...poisoning import POISONS

    cls = POISONS.get(s.attack)
    params = set(inspect.signature(cls).parameters)
    unknown = sorted(set(s.attack_kwargs) - params)
    if unknown:
        raise InputError(f"--attack-kwargs: {s.attack} takes no {', '.join(unknown)}; it takes {', '.join(sorted(params))}")
    common = {k: getattr(s, k) for k in ("rate", "target", "all_to_all", "seed") if k in params and getattr(s, k) is not None}
    if "target" in common and s.attack in ("label_flip",):
        common.pop("target")  # label flipping's target goes with its source (class-targeted), in attack_kwargs
    return cls(**{**common, **_model_arguments(s, params), **s.attack_kwargs})


def _model_arguments(s: CraftSettings, params: set[str]) -> dict:
    """The trained model a poison is crafted on (``--model RUN``), under the name its constructor takes, and a
    progress bar where it has one; an InputError where it needs what the command line cannot give."""
    if "target_x" in params:
        raise InputError(f"{s.attack} poisons against chosen target images: craft it with the Python API "
                         "(robustlab.poisoning) or `robustlab poison reproduce`")
    name = next((k for k in ("surrogate", "model") if k in params), None)
    if name is None:
        if s.model is not None:
            raise InputError(f"--model: {s.attack} is crafted without a model; leave --model out")
        return {}
    if s.model is None:
        raise InputError(f"{s.attack} is crafted on a trained model: give --model RUN (a model run from `robustlab "
                         "train` on the same data)")
    from ..job import load_model_from_run

    model, _ = load_model_from_run(s.model)
    return {name: model, **({"progress": True} if "progress" in params else {})}


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
    default_name = f"poison-{s.attack}-{s.data.replace('/', '_').replace(':', '_')}" + (f"-{s.rate:g}" if s.rate is not None else "")
    run_dir = Path(target.runs) / (target.name or default_name)
    path = craft(s, run_dir)
    import json

    summary = json.loads((path / "summary.json").read_text())
    print(f"{path}: {summary['n_poisoned']} of {summary['n']} samples poisoned ({s.attack}, rate {summary['rate']:.4f}); "
          f"train on it with `robustlab train --data {path}`")
    return 0
