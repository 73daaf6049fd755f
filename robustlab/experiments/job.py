"""Jobs that leave a run directory: train a model, evaluate it, run a YAML config of several.

A model run ``runs/<name>/`` holds ``config.yaml`` (model, data, training settings),
``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (``best.safetensors``, ``last.safetensors``,
``state.pt``) and ``evaluations/``, one folder per evaluation (``evaluation.json``, ``examples.pt``; see
``runs.evaluations``: an evaluation with other settings is stored beside the others); a zoo model's run
(``robustlab evaluate --model robustbench:<name>``) has no checkpoints: its config names the source and the SHA-256 of its weights files.
A job run (``robustlab run CONFIG``) holds one model run per entry under ``models/`` (an entry may be a
zoo source, or ``run: DIR``, a model run made elsewhere), a combined ``report.html`` and the models
ranked in ``leaderboard.json`` / ``leaderboard.html`` (``runs.leaderboard``).
"""
from __future__ import annotations

import copy
import math
import inspect
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from pydantic import Field, field_validator

from ..data import AnyDataset, Dataset, data_identity, is_poisoned_run, load_dataset, poisoned_digest
from ..errors import CheckpointError, InputError
from ..evaluation.sharded import sharded_robustness_curve
from ..runtime import device_of, device_record, resolve_device, world
from ..targets import target_to
from ..settings import StrictSettings
from ..fileio import atomic_torch_save, atomic_write_json
from ..models import create_model
from ..models.zoo import files_digest, is_zoo_source, load_recorded, record_digest, zoo_spec
from ..threat import ThreatModel
from ..training import TrainConfig, load_state, load_weights, train
from ..runs import evaluations
from ..runs.rundir import Run, check_name, split_run_dir
from ..runs.schema import EvaluationSettings, ExecutorSettings, validate_job
from .executors import Cell, make_executor

log = logging.getLogger(__name__)


def model_for_data(spec: dict, data: Dataset, trust_code: bool = False) -> nn.Module:
    """Build the model of `spec` ({name, kwargs}), filling in input channels, size and classes.

    A ``module:callable`` name runs code, so it needs ``trust_code=True`` (see ``create_model``)."""
    name = spec["name"]
    kwargs = dict(spec.get("kwargs") or {})
    if ":" not in name:
        from ..models import MODELS

        factory = MODELS.get(name.lower().replace("-", "_"))
        if factory is not None:
            params = inspect.signature(factory).parameters
            c, h, w = data.input_shape if len(data.input_shape) == 3 else (1, *data.input_shape[-2:])
            auto = {"in_channels": c, "num_classes": data.num_classes, "input_size": h, "in_features": c * h * w}
            for k, v in auto.items():
                if k in params and k not in kwargs:
                    kwargs[k] = v
    return create_model(name, trust_code=trust_code, **kwargs)


def on_device(data: Dataset, device: torch.device) -> Dataset:
    """`data` with its inputs and targets on `device` (itself when they are there already)."""
    if data.x.device == device:
        return data
    return Dataset(data.x.to(device), target_to(data.y, device), data.name, data.classes)


def parse_data_spec(spec: dict | str) -> dict:
    if isinstance(spec, str):
        return {"name": spec, "seed": 0}
    return {"seed": 0, **spec}


def load_split(spec: dict, split: str) -> AnyDataset:
    """One split ("train", "val", "test") of the dataset a parsed data spec names (see ``parse_data_spec``):
    in memory, or streamed from disk for ``imagefolder:`` / ``imagenet:`` sources (``robustlab.data``)."""
    return load_dataset(spec["name"], split, seed=spec.get("seed", 0), data_dir=spec.get("data_dir"))


def train_model_run(run_dir: str | Path, model_spec: dict, data_spec: dict | str, train_cfg: dict,
                    resume: bool = False, progress: bool = True, trust_code: bool = False, device: Any = "auto") -> dict:
    """Train one model into `run_dir` on `device` (``runtime.resolve_device``); returns its summary.

    Holds the run's lock while it writes (a second writer gets RunLockedError). A resume must name the
    same data, split (data seed), model and method as the stored config."""
    data_spec = parse_data_spec(data_spec)
    if is_poisoned_run(data_spec["name"]):  # recorded, and a resume on other poisoned data is refused
        data_spec = {**data_spec, "sha256": poisoned_digest(data_spec["name"])}
    cfg = TrainConfig(**train_cfg)
    # under DDP every rank runs this; rank 0 writes the run and holds its lock
    ddp_worker = torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0
    with Run.writing(*split_run_dir(run_dir), "model", lock=not ddp_worker) as run:
        return _train_model_run(run, model_spec, data_spec, cfg, resume, progress, trust_code, resolve_device(device))


def _resume_mismatch(stored: dict, model_spec: dict, data_spec: dict, cfg: TrainConfig) -> dict:
    """The settings (model, data, split, method) where a stored run config differs from this one."""
    def model_key(spec):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
        return {"name": spec.get("name"), "kwargs": dict(spec.get("kwargs") or {})}

    def data_key(spec):
        spec = parse_data_spec(spec or {})
        return {"name": data_identity(spec.get("name")), "seed": spec.get("seed", 0), "data_dir": spec.get("data_dir"),
                "sha256": spec.get("sha256")}

    diff = {}
    if model_key(stored.get("model")) != model_key(model_spec):
        diff["model"] = (model_key(stored.get("model")), model_key(model_spec))
    old_d, new_d = data_key(stored.get("data")), data_key(data_spec)
    for k, label in (("name", "data"), ("data_dir", "data_dir"), ("seed", "data seed (split)"),
                     ("sha256", "poisoned data sha256")):
        if old_d[k] != new_d[k]:
            diff[label] = (old_d[k], new_d[k])
    old_method = (stored.get("train") or {}).get("method")
    if old_method != cfg.method:
        diff["method"] = (old_method, cfg.method)
    return diff


def _check_resume(run: Run, model_spec: dict, data_spec: dict, cfg: TrainConfig, resume: bool) -> None:
    """A resume continues only a run whose stored config names the same model, data, split and method
    (without config.yaml the split cannot be checked, so it is refused); a fresh start never overwrites one."""
    if resume and not (run.path / "config.yaml").exists() and (run.checkpoints / "state.pt").exists():
        raise InputError(
            f"cannot resume {run.path}: its config.yaml is missing, so the data split (data seed), data and model it "
            "was trained with cannot be checked (another split would mix test points into training); restore "
            "config.yaml, or start a new run with another --name"
        )
    if resume and (run.path / "config.yaml").exists():
        diff = _resume_mismatch(run.read_config(), model_spec, data_spec, cfg)
        if diff:
            raise InputError(
                f"cannot resume {run.path}: it was started with other settings (stored vs now: "
                + "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
                + "); resume with the same --model/--data/--data-seed/--method, or start a new run with another --name"
            )
    if not resume and (run.checkpoints / "state.pt").exists():
        raise InputError(
            f"{run.path} already holds a training run; pass --resume to continue it or choose a new run name"
        )


def _train_model_run(run: Run, model_spec: dict, data_spec: dict, cfg: TrainConfig, resume: bool, progress: bool,
                     trust_code: bool, device: torch.device) -> dict:
    _check_resume(run, model_spec, data_spec, cfg, resume)
    state = load_state(run.checkpoints, cfg.fingerprint(), ignore=cfg.output_only) if resume else None  # checks settings and integrity
    if resume and run.read_summary().get("trained"):
        log.info("%s: already trained, skipping", run.path)
        return run.read_summary()
    torch.manual_seed(cfg.seed)
    train_data, val_data = load_split(data_spec, "train"), load_split(data_spec, "val")
    model = model_for_data(model_spec, train_data, trust_code=trust_code).to(device)  # train() follows the model
    # a model run trains with the classification objective (TrainConfig's default: cross-entropy)
    run.write_config({"kind": "model", "task": "classification", "model": model_spec, "data": data_spec,
                      "train": cfg.fingerprint(), **device_record(device)})
    if resume:
        run.rewrite_metrics([r for r in run.read_metrics() if r.get("kind") != "epoch"])
        for rec in (state or {}).get("history", []):
            run.log_metrics({"kind": "epoch", **rec})
    result = train(model, train_data, val_data, cfg, checkpoint_dir=run.checkpoints, resume=resume,
                   on_epoch=lambda rec: run.log_metrics({"kind": "epoch", **rec}), progress=progress)
    summary = {
        "trained": True, "best_epoch": result.best_epoch, "best_val_robust_acc": result.best_val_robust_acc,
        "catastrophic_overfitting_epoch": result.catastrophic_overfitting_epoch, "train_time_s": result.time_s,
        "stopped_early": result.stopped_early, "checkpoint_selection": result.checkpoint_selection,
        "final": result.history[-1] if result.history else {},
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    run.write_summary(summary)
    return summary


class ModelRunSource(StrictSettings):
    """Which weights of a model run a command loads, and whether its config may name code."""

    weights: Literal["best", "last"] = Field("best", description="the run's best or last weights")
    trust_code: bool = Field(False, description="allow run configs that name a model factory module:callable "
                                                "(imports and runs that code)")


class RunTarget(StrictSettings):
    """Where a run-writing command writes: ``<runs>/<name>``."""

    runs: str = Field("runs", description="root folder of run directories")
    name: Optional[str] = Field(None, description="run name (default: named after the command's inputs)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)


class ModelDataSettings(StrictSettings):
    """The model to train and the data it is trained on."""

    model: str = Field("fast_mnist", description="registered model name or package.module:callable")
    data: str = Field("mnist", description="dataset name, path (.npz, image folder, IDX dir, CIFAR dir) or spec: "
                                           "cifar10:PATH, cifar100:PATH, mnist:PATH (in memory), imagefolder:PATH, "
                                           "imagenet:PATH (streamed; ?size=224&workers=8)")


class TrainSourceSettings(ModelDataSettings):
    """``robustlab train``'s settings besides the training settings (``TrainConfig``)."""

    model_kwargs: dict[str, Any] = Field({}, description="JSON keyword arguments for the model")
    data_dir: Optional[str] = Field(None, description="directory with the full MNIST (IDX) or CIFAR-10 batches")
    data_seed: int = Field(0, ge=0, description="seed of the train/val/test split")
    dist_timeout: float = Field(300.0, gt=0, description="seconds before a collective gives up")


def _not_a_model_run(run_dir: Path, config: dict) -> str:
    """What to say for a folder that is not a model run: a job's model runs are named; else how to make one."""
    models = sorted(p for p in (run_dir / "models").glob("*") if (p / "config.yaml").is_file()) \
        if (run_dir / "models").is_dir() else []
    if models:
        names = ", ".join(str(p) for p in models[:6]) + (", ..." if len(models) > 6 else "")
        return f"{run_dir} is a {config.get('kind') or 'job'} run, not a model run; its model runs are {names}: give one of them"
    return f"{run_dir} is not a model run (no model config.yaml); train one with `robustlab train`"


def model_run_problem(run_dir: str | Path) -> str | None:
    """Why `run_dir` is not a model run (a job's folder: its model runs are named), None when it is one."""
    if not Path(run_dir).is_dir():
        return f"{run_dir} is not a model run (no such directory); train one with `robustlab train`"
    config = Run(run_dir, create=False).read_config()
    return None if config.get("kind") == "model" else _not_a_model_run(Path(run_dir), config)


def load_model_from_run(run_dir: str | Path, which: str = "best", trust_code: bool = False,
                        device: Any = "auto") -> tuple[nn.Module, dict]:
    """The trained model of a model run (``best`` or ``last`` weights, read onto `device`) and its config.
    Creates nothing.

    A config naming a ``module:callable`` model is refused unless ``trust_code=True`` (``--trust-code``)."""
    if which not in ("best", "last"):
        raise InputError(f"weights must be 'best' or 'last', got {which!r}")
    problem = model_run_problem(run_dir)
    if problem is not None:
        raise InputError(problem)
    run = Run(run_dir, create=False)
    config = run.read_config()
    if is_zoo_source(config["model"]["name"]):  # one set of weights, from the zoo: `which` does not apply
        return load_recorded(config["model"]).to(resolve_device(device)), config
    path = run.checkpoints / f"{which}.safetensors"
    if not path.exists():
        other = "last" if which == "best" else "best"
        hint = (f"; pass --weights {other} to use {other}.safetensors" if (run.checkpoints / f"{other}.safetensors").exists()
                else "; train the model first (robustlab train ... --resume continues a killed run)")
        raise CheckpointError(f"{run_dir} has no {which} weights ({path} is missing){hint}")
    data = load_split(parse_data_spec(config["data"]), "test")
    model = model_for_data(config["model"], data, trust_code=trust_code).to(resolve_device(device))
    load_weights(model, path)  # onto the model's device
    model.eval()
    return model, config


def evaluate_model_run(run_dir: str | Path, settings: EvaluationSettings | Sequence[float], which: str = "best", *,
                       trust_code: bool = False, progress: bool = True, device: Any = "auto", **fields) -> dict:
    """Evaluate a model run on its dataset's test split with ``settings`` (an ``EvaluationSettings``,
    or the eps list with the other settings as keywords: ``attacks="fgsm", n=5``) on `device` (the points
    go where the model is); writes ``evaluations/<slug>-<hash>/evaluation.json`` (``runs.evaluations``),
    which records the device, and returns that record.

    Every finished (eps, attack, batch) cell is stored in that folder's ``cells/`` as it completes, so the
    same settings again continue a killed evaluation and reuse a complete one. Other settings or weights go into another folder; replacing a stored one needs
    ``settings.overwrite``."""
    if not isinstance(settings, EvaluationSettings):
        settings = EvaluationSettings(eps=list(settings), **fields)
    model, config = load_model_from_run(run_dir, which, trust_code=trust_code, device=device)
    # under torchrun: rank 0 holds the run's lock and writes the record
    with Run.writing(*split_run_dir(run_dir), "model", create=False, lock=world()[0] == 0) as run:
        return _evaluate(run, model, config, settings, which, progress)


class ZooEvaluationSource(StrictSettings):
    """``robustlab evaluate --model SOURCE --data DATA``: a model not trained here (a zoo source such as
    ``robustbench:Standard``) evaluated into a new model run (``--runs``/``--name``)."""

    model: Optional[str] = Field(None, description="evaluate this model (robustbench:<name>, timm:<name>, "
                                                   "torchvision:<name>) instead of a RUN")
    data: Optional[str] = Field(None, description="with --model: dataset name or path (.npz, image folder, CIFAR dir)")
    data_dir: Optional[str] = Field(None, description="with --model: directory with the full MNIST (IDX) or CIFAR-10")
    data_seed: int = Field(0, ge=0, description="with --model: seed of the train/val/test split")


def zoo_run_name(source: str) -> str:
    """A run name for a zoo source: ``robustbench:Carmon2019Unlabeled`` -> ``robustbench-Carmon2019Unlabeled``."""
    return "".join(c if c.isalnum() or c in "_.+=@-" else "-" for c in source).strip(".-") or "zoo-model"


def evaluate_zoo_model(run_dir: str | Path, model_spec: dict, data_spec: dict | str, settings: EvaluationSettings, *,
                       progress: bool = True, device: Any = "auto") -> dict:
    """Evaluate a zoo model (``{name, kwargs}``, kwargs: ``ZooSettings``) on `data_spec`'s test split into
    the model run `run_dir` on `device`: its config.yaml names the source and the SHA-256 of the weights files."""
    if not is_zoo_source(model_spec["name"]):
        raise InputError(f"model {model_spec['name']!r} is not a zoo source (robustbench:<name>, timm:<name>, "
                         "torchvision:<name>); a model of robustlab's own is trained first (robustlab train)")
    data_spec = parse_data_spec(data_spec)
    spec = zoo_spec(model_spec, data_spec["name"], settings.norm)
    device = resolve_device(device)
    model = create_model(spec["name"], **spec["kwargs"]).to(device)
    spec = record_digest(spec)
    config = {"kind": "model", "task": "classification", "model": spec, "data": data_spec}
    writer = world()[0] == 0  # under torchrun: rank 0 holds the run's lock and writes the record
    with Run.writing(*split_run_dir(run_dir), "model", lock=writer) as run:
        if writer:
            _check_same_model(run, config)
            run.write_config(config)
        out = _evaluate(run, model, config, settings, f"sha256:{spec['weights_sha256'][:16] or 'none'}", progress)
        if writer:
            run.write_summary({**run.read_summary(), "evaluated": True, "source": spec["name"]})
        return out


def _check_same_model(run: Run, config: dict) -> None:
    """A run directory holds one model: evaluating another model (or other weights) into it is refused."""
    if not (run.path / "config.yaml").exists():
        return
    old = run.read_config()
    if (old.get("model"), old.get("data")) != (config["model"], config["data"]):
        raise InputError(f"{run.path} already holds a run of {(old.get('model') or {}).get('name')!r} (or other weights "
                         "or data); evaluate into a new run with another --name")


def _evaluate(run: Run, model, config: dict, settings: EvaluationSettings, which: str, progress: bool) -> dict:
    """Evaluate `model` into its folder under ``RUN/evaluations/`` (``runs.evaluations``): a complete one with
    the same settings and weights is returned as stored; an incomplete one continues from its cells (each
    cell checks the weights and points it was computed for)."""
    rank, size = world()
    key = evaluations.evaluation_key(settings, *_weights_identity(run, config, which), config)
    action, folder, record = _plan_on_every_rank(run, key, settings.overwrite, rank, size)
    if action == "reuse":
        return record
    eps, norm, attacks, n = settings.eps, settings.norm, settings.attacks, settings.n
    test = load_split(parse_data_spec(config["data"]), "test")
    if n > len(test):
        log.warning("asked for %d test points but %s has only %d; evaluating all %d", n, run.path, len(test), len(test))
    test = test.subset(n)
    start = time.perf_counter()
    cells = folder / evaluations.CELLS
    curve = sharded_robustness_curve(model, test, ThreatModel(norm, max(eps)), eps, attacks, batch_size=settings.batch_size,
                                     seed=settings.seed, cells_dir=cells, progress=progress)
    if rank != 0:
        return curve.to_dict()
    out = {
        "norm": norm, "attacks": attacks if isinstance(attacks, str) else [str(a) for a in attacks],
        "weights": which, "n": len(test), "time_s": time.perf_counter() - start, "world_size": size, **curve.to_dict(),
        "settings": settings.model_dump(), **device_record(device_of(model)),
        "precision": "float32",  # evaluate() turns autocast off (robustlab.evaluation.suite)
        "key": key,
    }
    last = curve.reports[-1]
    atomic_torch_save({"eps": last.threat.eps, **last.examples}, folder / evaluations.EXAMPLES)
    atomic_write_json(folder / evaluations.RECORD, out)  # last: its presence marks the evaluation complete
    run.log_metrics({"kind": "evaluation", "eps": curve.eps, "robust_acc": curve.robust_accuracy,
                     "evaluation": folder.name})
    shutil.rmtree(cells, ignore_errors=True)  # the record is complete; the cells served only a resume
    return out


def _weights_identity(run: Run, config: dict, which: str) -> tuple[str, str | None]:
    """The weights part of an evaluation's key: a zoo model's recorded SHA-256, or that of the run's
    ``best``/``last`` weights file."""
    if is_zoo_source(config["model"]["name"]):
        return "zoo", config["model"].get("weights_sha256")
    return which, files_digest([run.checkpoints / f"{which}.safetensors"])


def _plan_on_every_rank(run: Run, key: dict, overwrite: bool, rank: int, size: int) -> tuple:
    """``evaluations.plan`` on rank 0, the same decision (or error) on every rank under torchrun."""
    if size == 1:
        return evaluations.plan(run.path, key, overwrite)
    decision: tuple = ()
    if rank == 0:
        try:
            decision = evaluations.plan(run.path, key, overwrite)
        except InputError as e:
            decision = ("error", str(e), None)
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise InputError(box[0][1])
    return box[0]


def read_job_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read and validate a YAML job file (see ``runs.schema``): a clear InputError for a missing file,
    a YAML syntax error, unknown keys (with a did-you-mean), wrong types or out-of-range values."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no job config at {path}; pass a YAML file such as configs/quickstart.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path} is not valid YAML: {str(e).strip()}") from None
    if overrides:
        if isinstance(config, dict) and isinstance(config.get("executor"), str):  # `executor: ray` alone
            config["executor"] = {"executor": config["executor"]}
        config = _merge(config, overrides)
    if not isinstance(config, dict) or "models" not in config:
        raise InputError(f"{path}: a job config needs a 'models' list (see configs/quickstart.yaml)")
    validate_job(config, str(path))
    return config


def run_config(path: str | Path, runs_root: str | Path = "runs", resume: bool = False,
               progress: bool = True, overrides: dict | None = None, trust_code: bool = False) -> Path:
    """Run a YAML job: train every model entry, evaluate it, render the report. Returns the job dir.
    Every model trains and is evaluated on the job's ``device:`` (default ``auto``).

    The whole file is validated first; models named ``module:callable`` need ``trust_code=True``."""
    from ..models import is_code_reference
    from .names import check_names, job_names

    config = read_job_config(path, overrides)
    check_names(job_names(config), str(path))  # every model and data name before the first model trains
    name = check_name(config.get("name") or Path(path).stem, "job name")
    if not trust_code:
        for entry in config["models"]:
            spec = entry.get("model", "fast_mnist")
            mname = spec if isinstance(spec, str) else (spec or {}).get("name", "")
            if is_code_reference(mname):
                raise InputError(f"{path}: model {entry['name']!r} is a code reference {mname!r}: running the job would "
                                 "import and run that code. Pass --trust-code if you trust this file")
    with Run.writing(runs_root, name, "job", what="job name") as job:
        return _run_job(job, config, resume, progress, trust_code)


def _run_job(job: Run, config: dict, resume: bool, progress: bool, trust_code: bool) -> Path:
    """Train and evaluate every model of the job, or evaluate a zoo model (one executor cell each; on
    ``resume`` the evaluated ones are skipped), evaluate the model runs it names (``run:``), then
    summarise, report and rank them from their run directories."""
    from ..runs.leaderboard import write_leaderboard
    from ..runs.report import render_report

    device_spec = str(config.get("device", "auto"))  # each cell resolves it where it runs (a Ray task: its GPU)
    job.write_config({"kind": "job", **config, **device_record(resolve_device(device_spec))})
    data = parse_data_spec(config.get("data", "mnist"))
    evaluation = EvaluationSettings(**config.get("evaluation", {})).model_dump()
    defaults = config.get("train", {})
    model_runs, cells = {}, []
    for entry in config["models"]:
        entry = copy.deepcopy(entry)
        label = entry.pop("name")
        model_spec = entry.pop("model", {"name": "fast_mnist"})
        if isinstance(model_spec, str):
            model_spec = {"name": model_spec}
        if entry.get("run"):  # a model run made elsewhere (e.g. one of many checkpoints): evaluated where it is
            model_runs[label] = Path(entry["run"])
            cells.append(Cell(f"run {entry['run']}", run_cell, {
                "run_dir": entry["run"], "evaluation": evaluation, "resume": resume, "progress": progress,
                "trust_code": trust_code, "device": device_spec}, device=device_spec))
            continue
        run_dir = job.path / "models" / label
        model_runs[label] = run_dir
        if resume and Run(run_dir).read_summary().get("evaluated"):
            continue
        train_cfg = {**defaults, **entry.get("train", {})}
        common = {"run_dir": str(run_dir), "model_spec": model_spec, "data_spec": data, "evaluation": evaluation,
                  "resume": resume, "progress": progress, "device": device_spec}
        cells.append(Cell(f"models/{label}", zoo_cell, common, device=device_spec) if is_zoo_source(model_spec["name"])
                     else Cell(f"models/{label}", model_cell, {**common, "train_cfg": train_cfg, "trust_code": trust_code},
                               device=device_spec))
    make_executor(config.get("executor")).run(cells)
    job.write_summary({"models": {label: Run(p).read_summary() for label, p in model_runs.items()}})
    if (job.path / "models").is_dir():  # the job's own model runs (entries naming runs made elsewhere are ranked only)
        render_report([job.path], job.path / "report.html")
    write_leaderboard(job.path, model_runs, settings=evaluation)
    return job.path


def model_cell(run_dir: str, model_spec: dict, data_spec: dict, train_cfg: dict, evaluation: dict, resume: bool = False,
               progress: bool = True, trust_code: bool = False, device: str = "auto") -> None:
    """One executor cell of a job or sweep: train a model run into `run_dir` on `device`, evaluate it with
    the ``evaluation`` settings (an ``EvaluationSettings`` as a dict) and mark it evaluated in its summary."""
    train_model_run(run_dir, model_spec, data_spec, train_cfg, resume=resume, progress=progress, trust_code=trust_code,
                    device=device)
    evaluate_model_run(run_dir, EvaluationSettings(**evaluation), trust_code=trust_code, progress=progress, device=device)
    run = Run(run_dir)
    run.write_summary({**run.read_summary(), "evaluated": True})


def zoo_cell(run_dir: str, model_spec: dict, data_spec: dict, evaluation: dict, resume: bool = False,
             progress: bool = True, device: str = "auto") -> None:
    """One executor cell of a job: evaluate a zoo model into the model run `run_dir` on `device` (``evaluate_zoo_model``)."""
    evaluate_zoo_model(run_dir, model_spec, data_spec, EvaluationSettings(**evaluation), progress=progress, device=device)


def run_cell(run_dir: str, evaluation: dict, resume: bool = False, progress: bool = True, trust_code: bool = False,
             device: str = "auto") -> None:
    """One executor cell of a job's ``run:`` entry: evaluate that model run in place on `device` with the
    job's settings (as ``robustlab evaluate RUN`` does); an evaluation already stored with these settings
    and weights is reused (``runs.evaluations``), its other evaluations are left as they are (an incomplete
    one continues, whether or not `resume` is set)."""
    evaluate_model_run(run_dir, EvaluationSettings(**evaluation), trust_code=trust_code, progress=progress, device=device)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class BatchSizeSweepSettings(StrictSettings):
    """The cells of ``robustlab sweep batch-size``: global batch sizes x learning-rate rules."""

    batch_sizes: list[int] = Field([32, 128, 512], min_length=1, description="global batch sizes")
    lr_rules: list[Literal["constant", "linear", "sqrt"]] = Field(["constant", "linear"], min_length=1,
                                                                 description="LR rules: constant, linear, sqrt")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be >= 1, got {v}")
        return v


def sweep_batch_size(root: str | Path, model_spec: dict, data_spec: dict | str, train_cfg: dict,
                     batch_sizes: list[int], lr_rules: list[str], base_batch: int | None = None,
                     resume: bool = False, progress: bool = True, executor: ExecutorSettings | None = None,
                     device: Any = "auto") -> Path:
    """The large-batch generalisation experiment (Keskar et al. 2017): train one model per
    (global batch size, LR rule) and record clean and robust generalisation gaps.

    LR rules: "constant" keeps the base lr; "linear" scales it by batch / base_batch (Goyal et al.
    2017); "sqrt" by sqrt(batch / base_batch). Writes ``sweep.json`` and one model run per cell, each
    trained on `device`; the cells run on ``executor`` (default: in this process, see ``executors``).
    """
    root = Path(root)
    with Run.writing(*split_run_dir(root), "sweep", what="sweep name") as sweep:
        return _sweep_batch_size(sweep, model_spec, data_spec, train_cfg, batch_sizes, lr_rules, base_batch, resume,
                                 progress, executor, str(device))


def _sweep_batch_size(sweep: Run, model_spec: dict, data_spec: dict | str, train_cfg: dict, batch_sizes: list[int],
                      lr_rules: list[str], base_batch: int | None, resume: bool, progress: bool,
                      executor: ExecutorSettings | None, device: str) -> Path:
    root = sweep.path
    base_batch = base_batch or min(batch_sizes)
    cells, lrs = [], []
    for bs in batch_sizes:
        for rule in lr_rules:
            factor = {"constant": 1.0, "linear": bs / base_batch, "sqrt": math.sqrt(bs / base_batch)}.get(rule)
            if factor is None:
                raise InputError(f"unknown LR rule {rule!r}; known: constant, linear, sqrt")
            cfg = {**train_cfg, "batch_size": bs, "lr": train_cfg.get("lr", 1e-3) * factor}
            lrs.append((bs, rule, cfg["lr"]))
            cells.append(Cell(f"runs/bs{bs}-{rule}", train_model_run, {
                "run_dir": str(root / "runs" / f"bs{bs}-{rule}"), "model_spec": model_spec, "data_spec": data_spec,
                "train_cfg": cfg, "resume": resume, "progress": progress, "device": device}, device=device))
    make_executor(executor).run(cells)  # a finished cell is skipped by train_model_run itself on resume
    rows = [_batch_size_row(root / "runs" / f"bs{bs}-{rule}", bs, rule, lr) for bs, rule, lr in lrs]
    atomic_write_json(root / "sweep.json", {"kind": "batch-size sweep", "rows": rows})
    sweep.write_config({"kind": "sweep", "model": model_spec, "data": data_spec, "train": train_cfg,
                        "batch_sizes": batch_sizes, "lr_rules": lr_rules, "base_batch": base_batch,
                        **device_record(resolve_device(device))})
    sweep.write_summary({"rows": rows})
    return root


def _batch_size_row(run_dir: Path, bs: int, rule: str, lr: float) -> dict:
    """The batch-size sweep's row of one cell, read from its run's summary."""
    summary = Run(run_dir).read_summary()
    final = summary.get("final", {})
    return {"batch_size": bs, "lr_rule": rule, "lr": lr, "run": str(run_dir),
            "train_acc": final.get("train_acc"), "val_acc": final.get("val_acc"),
            "train_robust_acc": final.get("train_robust_acc"), "val_robust_acc": final.get("val_robust_acc"),
            "generalization_gap": final.get("generalization_gap"),
            "robust_generalization_gap": final.get("robust_generalization_gap"),
            "train_time_s": summary.get("train_time_s")}
