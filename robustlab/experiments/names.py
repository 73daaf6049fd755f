"""The names a command or a job gives (models, datasets, attacks, training methods, landscape measures,
representation analyses, model runs) checked against what is registered before any work starts: a misspelt name
fails in a second with the known names, not after a model has trained or a run folder was made.

Each ``*_problem`` function returns the one-line problem of one value (None when it is fine); the
lookups are the registries' own (``Registry.get``, ``load_dataset``), so the messages list the names
``robustlab list`` shows. Nothing is built or loaded: a code reference (``module:callable``) is only
looked up as a module, a zoo model and a streamed dataset are checked where they load.

    check_names([("--model", "model", "mpl")], "`robustlab train` arguments")   # InputError: known models ...
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Iterable

from ..attacks import ATTACKS
from ..data import DATASETS, load_dataset
from ..data.streaming import STREAM_SOURCES
from ..errors import InputError, UnknownNameError
from ..models import MODELS, is_code_reference
from ..models.zoo import is_zoo_source
from ..runs.schema import EvaluationSettings
from ..settings import SettingsError, raise_problems
from ..training import METHODS
from .geometry import landscape_measures
from .job import model_run_problem
from .represent import ANALYSES


def _lookup_problem(lookup: Callable[[], Any]) -> str | None:
    """The message of the InputError (or unknown name) `lookup` raises, None when it raises none."""
    try:
        lookup()
    except (InputError, UnknownNameError) as e:
        return str(e)
    return None


def model_problem(name: str) -> str | None:
    """A registered model, a zoo source (``timm:<name>``, checked when it loads) or ``module:callable``
    whose top-level package exists (it is not imported here)."""
    name = str(name)
    if is_zoo_source(name):
        return None
    if is_code_reference(name):
        package = name.partition(":")[0].split(".")[0]
        if package and importlib.util.find_spec(package) is not None:
            return None
        return (f"model {name!r}: no module {package!r}; a model is a registered name ({', '.join(MODELS.names())}), "
                "a zoo source (robustbench:<name>, timm:<name>, torchvision:<name>) or package.module:callable")
    return _lookup_problem(lambda: MODELS.get(name))


def data_problem(name: str, data_dir: str | None = None) -> str | None:
    """A registered dataset, a data spec whose folder exists, or a path that exists (nothing is read)."""
    name = str(name)
    if data_dir is not None and not Path(data_dir).is_dir():
        return f"data folder {data_dir!r} (--data-dir, data_dir:): no such folder"
    source, colon, rest = name.partition(":")
    if name in DATASETS or (colon and source.lower() in STREAM_SOURCES) or Path(name).exists():
        return None
    # anything else the loader refuses at once (an unknown name, a SOURCE:PATH without its folder) with its own message
    return _lookup_problem(lambda: load_dataset(name, "test"))


def attack_problem(name: str) -> str | None:
    return _lookup_problem(lambda: ATTACKS.get(name))


def attacks_problem(value: str | list[str]) -> str | None:
    """A suite name alone, or registered attack names (a comma-separated string or a list)."""
    try:
        EvaluationSettings(attacks=value)
    except SettingsError as e:
        return e.validation_error.errors()[0]["msg"].removeprefix("Value error, ")
    return None


def method_problem(name: str) -> str | None:
    return _lookup_problem(lambda: METHODS.get(name))


def _known_items(kind: str, kinds: str, items: list[str], known: Iterable[str], extra: tuple[str, ...] = ()) -> str | None:
    known = list(known)
    bad = [m for m in items if m not in known and m not in extra]
    if not bad:
        return None
    return f"unknown {kind} {', '.join(map(repr, bad))}; known {kinds}: {', '.join([*known, *extra])}"


def measures_problem(value: str | list[str]) -> str | None:
    """Landscape measures: comma-separated names of ``landscape_measures()``, or ``all``."""
    items = [m.strip() for m in value.split(",")] if isinstance(value, str) else list(value)
    return _known_items("landscape measure", "landscape measures", [m for m in items if m], landscape_measures(), extra=("all",))


def analyses_problem(value: list[str]) -> str | None:
    return _known_items("analysis", "analyses", list(value), ANALYSES)


def model_runs_problem(paths: str | list[str]) -> str | None:
    """Model run folders (a job's folder is not one: its model runs are named); nothing is loaded."""
    problems = [p for p in map(model_run_problem, [paths] if isinstance(paths, (str, Path)) else paths) if p]
    return "; ".join(problems) or None


#: kind of name -> its check (``check_names``' second item)
CHECKS: dict[str, Callable[..., str | None]] = {
    "model": model_problem, "data": data_problem, "attack": attack_problem, "attacks": attacks_problem,
    "method": method_problem, "measures": measures_problem, "analyses": analyses_problem,
    "run": model_runs_problem}


def name_problems(given: Iterable[tuple]) -> list[str]:
    """``(where, kind, value[, more arguments of the check])`` -> one ``<where>: <problem>`` line per bad
    value (None values are skipped: a setting left unset)."""
    out = []
    for where, kind, value, *more in given:
        problem = None if value is None else CHECKS[kind](value, *more)
        if problem is not None:
            out.append(f"{where}: {problem}")
    return out


def check_names(given: Iterable[tuple], what: str) -> None:
    """One InputError listing every bad name of `given` (see ``name_problems``), nothing when all are known."""
    raise_problems(name_problems(given), what)


def job_names(config: dict) -> list[tuple]:
    """The names a validated job config gives (``runs.schema.validate_job``; its attacks and training
    methods are checked there): its data and every model entry's model, or the run it names."""
    data = config.get("data") or "mnist"
    data = {"name": data} if isinstance(data, str) else data
    given = [("data", "data", data["name"], data.get("data_dir"))]
    for i, entry in enumerate(config.get("models") or []):
        where = f"models.{i} ({entry.get('name')})"
        if entry.get("run"):
            given.append((f"{where}.run", "run", entry["run"]))
            continue
        spec = entry.get("model") or "fast_mnist"
        given.append((f"{where}.model", "model", spec if isinstance(spec, str) else spec.get("name")))
    return given
