"""Training settings are declared once (``robustlab.training.TrainConfig``): every field is reachable
from the CLI (``robustlab train --flag``), from a job's YAML ``train:`` section, and round-trips
through a run's ``config.yaml``; every method's own settings are among them."""
from __future__ import annotations

import importlib.util
import json
import typing

import pytest
import yaml

from robustlab.errors import InputError
from robustlab.runs.evaluations import default_evaluation
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
         "llr_steps": 1, "snapshot_every": 1, "snapshot_steps": 3, "co_action": "stop", "eps": 0.05, "seed": 3,
         "compile": "aot_eager", "channels_last": True,
         "tensorboard": importlib.util.find_spec("tensorboard") is not None}  # True needs the package (the extra)


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
        argv += [flag(name)] if isinstance(value, bool) else [flag(name), _cli_text(value)]  # a boolean is a switch
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


# ----- every other command's settings (robustlab.cli.SETTINGS) -----------------------------------------
#: values other than the defaults where the type alone does not give a valid one
OTHER = {"attacks": "fgsm", "measures": "trace", "attack": "fgsm", "name": "other", "nnodes": "2", "model": "mlp",
         "data": "digits", "runs": "elsewhere", "model_kwargs": {"hidden": [8]}, "analyses": ["cka", "probe"],
         "compare": ["a", "b"], "data_dir": "/data", "lr_rules": ["sqrt"], "out": "cmp", "rdzv_endpoint": "h:1",
         "executor": "ray:auto", "device": "cpu"}
#: the zoo settings' other values (its --weights is a file, ModelRunSource's is best or last)
ZOO_OTHER = {"weights": "w.safetensors", "model_dir": "zoo", "zoo_dataset": "imagenet", "zoo_threat": "L2"}
#: the positional arguments of each command
POSITIONAL = {"attack": ["r"], "evaluate": ["r"], "represent": ["r"], "landscape": ["r"], "compare-geometry": ["r", "s"],
              "sweep": ["eps"], "train": [], "launch": []}


def _other_setting(model, name: str):
    """A valid value of `model`'s field `name` that differs from its default."""
    if model is TrainConfig:
        return _other_value(name)
    if model.__name__ == "ZooSettings":
        return ZOO_OTHER[name]
    if name in OTHER:
        return OTHER[name]
    field = model.model_fields[name]
    kinds = typing.get_args(field.annotation) or (field.annotation,)
    if typing.get_origin(field.annotation) is typing.Literal:
        return next(c for c in kinds if c != field.default)
    if bool in kinds:
        return not field.default
    if typing.get_origin(field.annotation) is list:
        return [7, 9] if kinds[0] is int else [0.25, 0.5]
    if int in kinds and float not in kinds:
        return 7 if field.default is None else field.default + 2
    return 0.05 if field.default is None else field.default + 0.25


def _cli_words(model, name: str, value) -> list[str]:
    from robustlab.settings import field_flag

    field = model.model_fields[name]
    if isinstance(value, bool):
        return [field_flag(name, field)]
    if isinstance(field.json_schema_extra, dict) and "nargs" in field.json_schema_extra:
        return [flag(name), *value]
    text = json.dumps(value) if isinstance(value, dict) else _cli_text(tuple(value) if isinstance(value, list) else value)
    return [flag(name), text]


def _entries(command: str):
    from robustlab.cli import SETTINGS

    for entry in SETTINGS[command]:
        model, include = entry if isinstance(entry, tuple) else (entry, None)
        yield model, list(model.model_fields) if include is None else list(include)


def _commands():
    from robustlab.cli import SETTINGS

    return sorted(SETTINGS)


@pytest.mark.parametrize("command", _commands())
def test_every_field_of_every_commands_settings_is_reachable_from_the_cli(command):
    from robustlab.cli import SETTINGS, build_parser
    from robustlab.settings import settings_from_args

    argv, expected = [command, *POSITIONAL[command]], {}
    for model, names in _entries(command):
        expected[model] = {name: _other_setting(model, name) for name in names}
        for name, value in expected[model].items():
            argv += _cli_words(model, name, value)
    got = settings_from_args(SETTINGS[command], build_parser().parse_args(argv), command)
    for model, values in expected.items():
        assert got[model] == model.model_validate(values), (model.__name__, got[model], values)
        assert all(getattr(got[model], k) != model.model_fields[k].default for k in values), model.__name__


@pytest.mark.parametrize("command", _commands())
def test_every_commands_flag_defaults_are_its_settings_defaults(command):
    from robustlab.cli import _SWEEP_DEFAULTS, SETTINGS, build_parser
    from robustlab.settings import settings_from_args

    got = settings_from_args(SETTINGS[command], build_parser().parse_args([command, *POSITIONAL[command]]), command)
    for model, names in _entries(command):
        differ = _SWEEP_DEFAULTS if (command, model) == ("sweep", TrainConfig) else {}
        assert got[model] == model(**differ), model.__name__


def test_every_field_of_the_evaluation_section_is_reachable_from_yaml():
    from robustlab.runs.schema import EvaluationSettings, validate_job

    values = {name: _other_setting(EvaluationSettings, name) for name in EvaluationSettings.model_fields}
    text = yaml.safe_dump({"data": "digits", "models": [{"name": "a", "model": "mlp"}], "evaluation": values})
    job = validate_job(yaml.safe_load(text))
    assert EvaluationSettings(**job["evaluation"]) == EvaluationSettings(**values) != EvaluationSettings()
    assert validate_job({"models": [{"name": "a"}]})["evaluation"] == EvaluationSettings().model_dump()


def test_evaluation_and_attack_settings_round_trip_through_their_records(tmp_path):
    from robustlab.experiments.attack import AttackSettings, attack_model_run
    from robustlab.experiments.job import evaluate_model_run, train_model_run
    from robustlab.runs.schema import EvaluationSettings

    run = tmp_path / "m"
    train_model_run(run, {"name": "mlp", "kwargs": {"hidden": [16]}}, {"name": "digits"}, {"epochs": 1, "eval_n": 16,
                    "eval_steps": 1}, progress=False)
    ev = EvaluationSettings(eps=[0.0, 0.05], attacks=["fgsm"], n=12, batch_size=5, seed=3, norm="linf")
    evaluate_model_run(run, ev, "last", progress=False)
    assert EvaluationSettings(**default_evaluation(run).record["settings"]) == ev
    atk = AttackSettings(attack="fgsm", eps=0.05, n=10, seed=2, weights="last")
    _, attack_run = attack_model_run(run, atk, runs=tmp_path)
    stored = attack_run.read_config()
    assert AttackSettings(**{k: stored[k] for k in AttackSettings.model_fields}) == atk
