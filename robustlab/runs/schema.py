"""One schema for job YAML files, checked before anything runs (pydantic v2), and the settings of an
evaluation (``EvaluationSettings``: a job's ``evaluation:`` section and ``robustlab evaluate``'s flags)
and of ``robustlab launch``, and where a job's cells run (``ExecutorSettings``). The ``train:`` sections are ``robustlab.training.TrainConfig`` (declared
once, in training); the other commands' settings are declared with their drivers in ``experiments``.

Unknown keys are errors with a did-you-mean (``difflib``), types are checked and every number has
its range (``n >= 1``, ``steps >= 1``, batch sizes >= 1, non-empty eps and attack lists of registered
attacks or one suite name). An Linf
eps beyond the input range [0, 1] only warns (it is legal, just pointless). All problems of one
file or command line are reported together, as one ``InputError``.
"""
from __future__ import annotations

import difflib
import logging
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..argtypes import name_list
from ..attacks import ATTACKS
from ..errors import InputError
from ..evaluation.suite import SUITES
from ..runtime import device_problem
from ..settings import SettingsError, StrictSettings
from ..settings import format_problems as _format
from ..settings import raise_problems as _raise
from ..settings import validation_error
from ..training import TrainConfig
from .rundir import check_name

log = logging.getLogger(__name__)

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    run: Optional[str] = None  # an existing model run to evaluate instead (a job's leaderboard entry)
    train: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return check_name(v, "model name")


def check_eps_list(v):
    bad = [e for e in v if not (e >= 0 and e < float("inf"))]
    if bad:
        raise ValueError(f"eps values must be finite and >= 0, got {bad}")
    return v


def _check_attacks(v):
    """A suite name, or attack names (a comma-separated string or a list) that are all registered."""
    if isinstance(v, str) and v in SUITES:
        return v
    names = name_list(v, allow_empty=True) if isinstance(v, str) else [str(a).strip() for a in v]
    if not [a for a in names if a]:
        raise ValueError("the attack list is empty; name at least one attack or a suite (standard, rand, fast)")
    suites = [a for a in names if a in SUITES]
    if suites:
        raise ValueError(f"the suite {suites[0]!r} stands alone (attacks: {suites[0]}), not in a list of attacks")
    unknown = [a for a in names if a and a not in ATTACKS]
    if unknown:
        close = difflib.get_close_matches(unknown[0].lower(), ATTACKS.names() + list(SUITES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown attack {', '.join(map(repr, unknown))}{hint}; known attacks: {', '.join(ATTACKS.names())}, "
                         f"or one suite name alone: {', '.join(SUITES)}")
    return v


class EvaluationSettings(StrictSettings):
    """The settings of one evaluation (``robustlab evaluate``'s flags, a job's ``evaluation:``
    section, and what ``evaluation.json`` records): robust accuracy over ``eps`` with a cascade."""

    settings_name: ClassVar[str] = "the evaluation settings"
    settings_prefix: ClassVar[str] = "evaluation."

    eps: list[float] = Field([0.0, 0.1, 0.2, 0.3], min_length=1, description="eps values")
    norm: Literal["linf", "l2", "l1"] = Field("linf", description="threat norm")
    attacks: Union[str, list[str]] = Field("standard", description="a suite (standard, rand, fast) or comma-separated attack names",
                                           json_schema_extra={"known": ATTACKS.names})
    n: int = Field(1000, ge=1, description="number of test points")
    batch_size: int = Field(500, ge=1, description="points per attack batch")
    seed: int = Field(0, description="seed of the attacks' random starts")
    overwrite: bool = Field(False, description="replace a stored evaluation with these settings and weights (or a "
                                               "clashing one in its folder) instead of reusing it")

    _eps = field_validator("eps")(check_eps_list)
    _attacks = field_validator("attacks")(_check_attacks)

    def attack_list(self) -> str | list[str]:
        """The suite name, or the attack names of a comma-separated string."""
        if isinstance(self.attacks, str) and self.attacks not in SUITES:
            return name_list(self.attacks, allow_empty=True)
        return self.attacks

    def warn_pointless_eps(self, where: str) -> None:
        warn_if_beyond_input_range(self.eps, self.norm, where)


class ExecutorSettings(StrictSettings):
    """Where the independent cells of a job or sweep run (``robustlab.experiments.executors``): one
    after another in this process, or one Ray task per cell. A job config's ``executor:`` key takes
    these settings as a mapping, or the executor alone (``executor: ray``)."""

    settings_name: ClassVar[str] = "the executor settings"
    settings_prefix: ClassVar[str] = "executor."

    executor: str = Field("local", description="where the models of a job or a sweep run: local "
                          "(in this process), ray (a local Ray started here) or ray:ADDRESS (a Ray cluster)")
    executor_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each model of a job or sweep")

    @field_validator("executor")
    @classmethod
    def _executor(cls, v: str) -> str:
        if v != "local" and v != "ray" and not (v.startswith("ray:") and v[4:].strip()):
            raise ValueError(f"the executor is local, ray or ray:ADDRESS (e.g. ray:auto, ray:10.0.0.1:6379)")
        return v


def _check_device(v: str) -> str:
    problem = device_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


class DeviceSettings(StrictSettings):
    """Where a command runs its models, batches, attacks and measures (every verb's ``--device``, a job's
    or sweep's ``device:`` key); resolved by ``runtime.resolve_device`` and recorded in the run's config."""

    settings_name: ClassVar[str] = "the device setting"

    device: str = Field("auto", description="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; "
                                            "under torchrun cuda means cuda:LOCAL_RANK")

    _device = field_validator("device")(_check_device)


class JobConfig(_Strict):
    name: Optional[str] = None
    data: Union[str, DataSpec] = "mnist"
    device: str = "auto"
    train: dict[str, Any] = {}
    models: list[ModelEntry] = Field(min_length=1)
    evaluation: EvaluationSettings = EvaluationSettings()
    executor: ExecutorSettings = ExecutorSettings()

    _device = field_validator("device")(_check_device)

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return None if v is None else check_name(v, "job name")

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_alone(cls, v):
        return {"executor": v} if isinstance(v, str) else v


class LaunchSettings(StrictSettings):
    """``robustlab launch``: the torchrun processes a command runs on."""

    nproc: int = Field(2, ge=1, description="processes on this node")
    nnodes: str = Field("1", description="number of nodes (torchrun --nnodes)")
    rdzv_endpoint: Optional[str] = Field(None, description="host:port of the rendezvous (multi-node)")
    threads: int = Field(1, ge=1, description="intra-op threads per process")


_JOB_MODELS = {(): JobConfig, ("data",): DataSpec, ("models",): ModelEntry, ("models", "model"): ModelSpec,
               ("evaluation",): EvaluationSettings, ("train",): TrainConfig, ("executor",): ExecutorSettings}


def warn_if_beyond_input_range(eps_values, norm: str, where: str) -> None:
    if norm == "linf":
        big = [e for e in eps_values if e > 1]
        if big:
            log.warning("%s: Linf eps %s exceeds the input range [0, 1]: every input is reachable, so robust "
                        "accuracy is 0 by construction; did you mean %s?", where, big, [round(e / 255, 4) for e in big])


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
        problems += _job_problems(e)
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
    job.evaluation.warn_pointless_eps(source)
    return job.model_dump()


def _job_problems(e: ValidationError) -> list[str]:
    """One line per problem of a job config; a nested settings model's (``evaluation:``) own
    problems are listed under its key, not as its whole multi-line message."""
    nested = [x for x in e.errors() if isinstance((x.get("ctx") or {}).get("error"), SettingsError)]
    plain = [x for x in e.errors() if x not in nested]
    out = _format(ValidationError.from_exception_data(e.title, plain), "", _JOB_MODELS) if plain else []
    for x in nested:
        inner = x["ctx"]["error"].validation_error
        model = _JOB_MODELS.get(tuple(p for p in x["loc"] if not isinstance(p, int)))
        out += _format(inner, ".".join(map(str, x["loc"])) + ".", {(): model} if model else None)
    return out


def _train_problems(settings: dict, where: str, only: set | None = None) -> list[str]:
    e = validation_error(TrainConfig, settings)
    errs = [x for x in e.errors() if only is None or (x["loc"] and x["loc"][0] in only)] if e is not None else []
    if errs:
        return _format(ValidationError.from_exception_data(e.title, errs), where, {(): TrainConfig})
    return []
