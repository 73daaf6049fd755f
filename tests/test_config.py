"""Training settings are declared once (``robustlab.training.TrainConfig``): every field is reachable
from the CLI (``robustlab train --flag``), from a job's YAML ``train:`` section, and round-trips
through a run's ``config.yaml``; every method's own settings are among them."""
from __future__ import annotations

import typing

import pytest
import yaml

from robustlab.errors import InputError
from robustlab.settings import flag
from robustlab.training import METHODS, TrainConfig

# the fingerprint of the default settings before TrainConfig became one pydantic model: resume
# compatibility (existing state.pt files compare their stored fingerprint with this dict)
DEFAULTS_BEFORE = {
    "method": "standard", "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
    "weight_decay": 0.0, "schedule": "constant", "step_milestones": [0.5, 0.75], "lr_scaling": "none",
    "warmup_epochs": 0.0, "norm": "linf", "eps": 0.3, "eps_warmup_epochs": 0.0, "attack_steps": 10,
    "attack_step_size": None, "fgsm_alpha": None, "grad_align": 0.0, "trades_beta": 1.0, "llr_lambda": 4.0,
    "llr_mu": 3.0, "llr_steps": 10, "eval_n": 500, "eval_steps": 10, "co_action": "warn", "snapshot_every": 0,
    "snapshot_steps": 0, "local_sgd_period": 0, "seed": 0,
}

# values other than the defaults that keep a 1-epoch digits run tiny
CHEAP = {"method": "trades", "epochs": 1, "batch_size": 64, "eval_n": 16, "eval_steps": 1, "attack_steps": 1,
         "llr_steps": 1, "snapshot_every": 1, "snapshot_steps": 3, "co_action": "stop", "eps": 0.05, "seed": 3}


def _other_value(name: str):
    """A valid value of field `name` that differs from its default."""
    if name in CHEAP:
        return CHEAP[name]
    field = TrainConfig.model_fields[name]
    annotation = typing.get_args(field.annotation) or (field.annotation,)
    if typing.get_origin(field.annotation) is typing.Literal:
        return next(c for c in typing.get_args(field.annotation) if c != field.default)
    if name == "step_milestones":
        return (0.25, 0.6)
    if int in annotation and float not in annotation:
        return field.default + 2
    return 0.05 if field.default is None else field.default + 0.25


def _cli_text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def _non_default() -> dict:
    return {name: _other_value(name) for name in TrainConfig.model_fields}


def test_fingerprint_of_the_defaults_is_unchanged():
    assert TrainConfig().fingerprint() == DEFAULTS_BEFORE
    cfg = TrainConfig(method="pgd", eps=0.1, step_milestones=[0.3])
    assert cfg.method == "pgd" and cfg.eps == 0.1 and cfg.fingerprint()["step_milestones"] == [0.3]


def test_bad_settings_are_one_input_error_with_a_did_you_mean():
    with pytest.raises(InputError) as e:
        TrainConfig(method="nope", epochs=0, trades_bta=2)
    msg = str(e.value)
    for part in ["train.method: unknown training method 'nope'", "train.epochs", "did you mean 'trades_beta'"]:
        assert part in msg, msg


def test_every_field_is_reachable_from_the_cli():
    from robustlab.cli import build_parser

    values = _non_default()
    argv = ["train"]
    for name, value in values.items():
        argv += [flag(name), _cli_text(value)]
    args = build_parser().parse_args(argv)
    from robustlab.settings import values_from_args

    assert TrainConfig(**values_from_args(TrainConfig, args)) == TrainConfig(**values)
    defaults = build_parser().parse_args(["train"])
    assert TrainConfig(**values_from_args(TrainConfig, defaults)) == TrainConfig()


def test_every_field_is_reachable_from_yaml():
    from robustlab.runs.schema import validate_job

    values = _non_default()
    text = yaml.safe_dump({"data": "digits", "train": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                           "models": [{"name": "a", "model": "mlp", "train": {"seed": 5}}]})
    job = validate_job(yaml.safe_load(text))
    assert TrainConfig(**job["train"]) == TrainConfig(**values)
    assert TrainConfig(**{**job["train"], **job["models"][0]["train"]}).seed == 5


def test_settings_round_trip_through_the_runs_config_yaml(tmp_path):
    from robustlab.experiments.job import train_model_run
    from robustlab.runs.rundir import Run

    cfg = TrainConfig(**_non_default())
    train_model_run(tmp_path / "r", {"name": "mlp", "kwargs": {"hidden": [16]}}, {"name": "digits"},
                    cfg.fingerprint(), progress=False)
    stored = Run(tmp_path / "r").read_config()["train"]
    assert TrainConfig(**stored) == cfg and stored == cfg.fingerprint()


@pytest.mark.parametrize("method", sorted(n for n, meta in METHODS.items() if meta.get("settings")))
def test_every_methods_settings_are_training_settings_and_flags(method):
    from robustlab.cli import build_parser

    settings = METHODS.metadata(method)["settings"]
    assert settings.model_fields, method
    parser = build_parser()
    for name, field in settings.model_fields.items():
        assert TrainConfig.model_fields[name].default == field.default and field.description, name
        value = _other_value(name)
        args = parser.parse_args(["train", flag(name), _cli_text(value)])
        assert getattr(args, name) == value
        assert getattr(TrainConfig(**{name: value}), name) == value
