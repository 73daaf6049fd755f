"""One schema for job YAML files and the CLI's arguments, checked before anything runs (pydantic v2).

Unknown keys are errors with a did-you-mean (``difflib``), types are checked and every number has
its range (``n >= 1``, ``steps >= 1``, batch sizes >= 1, non-empty eps and attack lists). An Linf
eps beyond the input range [0, 1] only warns (it is legal, just pointless). All problems of one
file or command line are reported together, as one ``InputError``.
"""
from __future__ import annotations

import difflib
import logging
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..argtypes import ListArgumentError, int_list, name_list
from ..errors import InputError
from .rundir import check_name

log = logging.getLogger(__name__)

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    """Training settings (the fields of ``robustlab.training.TrainConfig``)."""

    method: str = "standard"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cyclic", "step"] = "constant"
    step_milestones: list[float] = [0.5, 0.75]
    lr_scaling: Literal["none", "linear"] = "none"
    warmup_epochs: float = Field(0.0, ge=0)
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(0.3, ge=0)
    eps_warmup_epochs: float = Field(0.0, ge=0)
    attack_steps: int = Field(10, ge=1)
    attack_step_size: Optional[float] = Field(None, gt=0)
    fgsm_alpha: Optional[float] = Field(None, gt=0)
    grad_align: float = Field(0.0, ge=0)
    trades_beta: float = Field(1.0, ge=0)
    llr_lambda: float = Field(4.0, ge=0)
    llr_mu: float = Field(3.0, ge=0)
    llr_steps: int = Field(10, ge=1)
    eval_n: int = Field(500, ge=1)
    eval_steps: int = Field(10, ge=1)
    co_action: Literal["warn", "stop"] = "warn"
    snapshot_every: int = Field(0, ge=0)
    snapshot_steps: int = Field(0, ge=0)
    local_sgd_period: int = Field(0, ge=0)
    seed: int = 0


class DataSpec(_Strict):
    name: str
    seed: int = Field(0, ge=0)
    data_dir: Optional[str] = None


class ModelSpec(_Strict):
    name: str
    kwargs: dict[str, Any] = {}


class ModelEntry(_Strict):
    name: str
    model: Union[str, ModelSpec] = "fast_mnist"
    train: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return check_name(v, "model name")


def _check_eps_list(v):
    bad = [e for e in v if not (e >= 0 and e < float("inf"))]
    if bad:
        raise ValueError(f"eps values must be finite and >= 0, got {bad}")
    return v


def _check_attacks(v):
    names = name_list(v, allow_empty=True) if isinstance(v, str) else [str(a).strip() for a in v]
    if not [a for a in names if a]:
        raise ValueError("the attack list is empty; name at least one attack or a suite (standard, rand, fast)")
    return v


class EvaluationSettings(_Strict):
    eps: list[float] = Field([0.0, 0.1, 0.2, 0.3], min_length=1)
    norm: Literal["linf", "l2", "l1"] = "linf"
    attacks: Union[str, list[str]] = "standard"
    n: int = Field(1000, ge=1)
    batch_size: int = Field(500, ge=1)
    seed: int = 0

    _eps = field_validator("eps")(_check_eps_list)
    _attacks = field_validator("attacks")(_check_attacks)


class JobConfig(_Strict):
    name: Optional[str] = None
    data: Union[str, DataSpec] = "mnist"
    train: dict[str, Any] = {}
    models: list[ModelEntry] = Field(min_length=1)
    evaluation: EvaluationSettings = EvaluationSettings()

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return None if v is None else check_name(v, "job name")


# ----- CLI arguments -------------------------------------------------------------------------------
class AttackArgs(_Strict):
    n: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eps: float = Field(ge=0)
    steps: Optional[int] = Field(None, ge=1)
    step_size: Optional[float] = Field(None, gt=0)
    restarts: Optional[int] = Field(None, ge=1)
    queries: Optional[int] = Field(None, ge=1)
    seed: int = 0


class EvaluateArgs(_Strict):
    n: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eps: list[float] = Field(min_length=1)
    attacks: str
    seed: int = 0

    _eps = field_validator("eps")(_check_eps_list)
    _attacks = field_validator("attacks")(_check_attacks)


class SweepArgs(_Strict):
    batch_sizes: list[int] = Field(min_length=1)
    lr_rules: list[Literal["constant", "linear", "sqrt"]] = Field(min_length=1)
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    eps: float = Field(ge=0)
    attack_steps: int = Field(ge=1)
    eval_n: int = Field(ge=1)
    seed: int = 0

    @field_validator("batch_sizes")
    @classmethod
    def _bs(cls, v):
        if any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be >= 1, got {v}")
        return v


class LaunchArgs(_Strict):
    nproc: int = Field(ge=1)
    threads: int = Field(ge=1)


def _format(err: ValidationError, where: str, models: dict[tuple, type[BaseModel]] | None = None) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            known = _known_keys(models or {}, tuple(e["loc"][:-1]))
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(sorted(known))}" if known else "")
            out.append(f"{where}{loc}: unknown key {key!r}{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) and len(repr(got)) > 60 else f" (got {got!r})"
            out.append(f"{where}{loc}: {msg}{shown}")
    return out


def _known_keys(models: dict[tuple, type[BaseModel]], loc: tuple) -> list[str]:
    # match the location with list indices removed
    key = tuple(p for p in loc if not isinstance(p, int))
    model = models.get(key)
    return list(model.model_fields) if model is not None else []


_JOB_MODELS = {(): JobConfig, ("data",): DataSpec, ("models",): ModelEntry, ("models", "model"): ModelSpec,
               ("evaluation",): EvaluationSettings, ("train",): TrainSettings}


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise InputError(f"problems in {what}:\n  " + "\n  ".join(problems) + "\nfix these and run again")


def _warn_eps(eps_values, norm: str, where: str) -> None:
    if norm == "linf":
        big = [e for e in eps_values if e > 1]
        if big:
            log.warning("%s: Linf eps %s exceeds the input range [0, 1]: every input is reachable, so robust "
                        "accuracy is 0 by construction; did you mean %s?", where, big, [round(e / 255, 4) for e in big])


def validate_train_settings(settings: dict, where: str = "train") -> dict:
    """Check training settings (types, ranges, unknown keys); returns them with defaults filled in."""
    try:
        return TrainSettings.model_validate(settings).model_dump()
    except ValidationError as e:
        _raise(_format(e, f"{where}.", {(): TrainSettings}), "the training settings")
    raise AssertionError  # unreachable


def validate_job(config: Any, source: str = "the job config") -> dict:
    """Check a job config (the YAML of ``robustlab run``) before anything runs; returns it with defaults."""
    if not isinstance(config, dict):
        raise InputError(f"{source}: a job config is a mapping with a 'models' list (see configs/quickstart.yaml), "
                         f"got {type(config).__name__}")
    problems: list[str] = []
    job = None
    try:
        job = JobConfig.model_validate(config)
    except ValidationError as e:
        problems += _format(e, "", _JOB_MODELS)
    defaults = config.get("train") if isinstance(config.get("train"), dict) else {}
    problems += _train_problems(defaults, "train.")
    for i, entry in enumerate(config.get("models") or []):
        if isinstance(entry, dict) and isinstance(entry.get("train"), dict):
            problems += _train_problems({**defaults, **entry["train"]}, f"models.{i}.train.", only=set(entry["train"]))
    if job is not None:
        names = [m.name for m in job.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"models: names must be unique, {dup} repeated")
    _raise(list(dict.fromkeys(problems)), source)
    ev = job.evaluation
    _warn_eps(ev.eps, ev.norm, source)
    return job.model_dump()


def _train_problems(settings: dict, where: str, only: set | None = None) -> list[str]:
    try:
        TrainSettings.model_validate(settings)
    except ValidationError as e:
        errs = [x for x in e.errors() if only is None or (x["loc"] and x["loc"][0] in only)]
        if errs:
            return _format(ValidationError.from_exception_data(e.title, errs), where, {(): TrainSettings})
    return []


def check_cli_args(command: str, args: dict) -> None:
    """Check the numeric arguments of a CLI command before it runs (InputError listing every problem)."""
    problems: list[str] = []

    def check(model: type[BaseModel], values: dict, prefix: str = "--") -> None:
        try:
            model.model_validate(values)
        except ValidationError as e:
            for line in _format(e, ""):
                key, _, rest = line.partition(":")
                problems.append(f"{prefix}{key.split('.')[0].replace('_', '-')}:{rest}")

    if command == "train":
        fields = {k: args[k] for k in TrainSettings.model_fields if k in args}
        check(TrainSettings, fields)
        if args.get("data_seed", 0) < 0:
            problems.append(f"--data-seed: must be >= 0 (got {args['data_seed']})")
        if args.get("name") is not None:
            try:
                check_name(args["name"])
            except InputError as e:
                problems.append(f"--name: {e}")
        if args.get("dist_timeout", 1) <= 0:
            problems.append(f"--dist-timeout: must be > 0 (got {args['dist_timeout']})")
    elif command == "attack":
        check(AttackArgs, {k: args[k] for k in AttackArgs.model_fields if k in args})
    elif command == "evaluate":
        check(EvaluateArgs, {k: args[k] for k in EvaluateArgs.model_fields if k in args})
        _warn_eps(args.get("eps") or [], args.get("norm", "linf"), "--eps")
    elif command == "sweep":
        vals = {k: args[k] for k in SweepArgs.model_fields if k in args}
        vals["batch_sizes"] = _int_list(args.get("batch_sizes", ""), "--batch-sizes", problems)
        vals["lr_rules"] = name_list(args.get("lr_rules", ""), allow_empty=True)
        if vals["batch_sizes"] is not None:
            check(SweepArgs, vals)
        try:
            check_name(args.get("name", ""))
        except InputError as e:
            problems.append(f"--name: {e}")
    elif command == "launch":
        check(LaunchArgs, {k: args[k] for k in LaunchArgs.model_fields if k in args})
    if command in ("attack",) and args.get("norm") == "linf":
        _warn_eps([args.get("eps", 0)], "linf", "--eps")
    _raise(problems, f"`robustlab {command}` arguments")


def _int_list(text: str, flag: str, problems: list[str]):
    try:
        return int_list(text, allow_empty=True)
    except ListArgumentError as e:
        problems.append(f"{flag}: {e}")
        return None


def train_fields() -> set[str]:
    return set(TrainSettings.model_fields)
