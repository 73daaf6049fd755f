"""``robustlab attack RUN``: one attack on a model run's test points, recorded as a run of its own
(``config.yaml``, ``summary.json``, ``report.html``, ``adversarial.pt``).

Any task's model run: clean correctness is the run's task objective (``~objective.success`` on
the clean outputs; for a classifier, argmax equals the label)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import Field

from ..attacks import ATTACKS, Attack, create_attack
from ..data import in_memory
from ..errors import InputError
from ..fileio import atomic_torch_save
from ..oracles import DecisionOracle, ScoreOracle
from ..progress import progress_bar
from ..runs import Run, write_page
from ..runtime import device_record, resolve_device
from ..taskspec import run_task
from ..threat import ThreatModel
from .geometry import task_objective
from ..runs.schema import warn_if_beyond_input_range
from .job import ModelRunSource, load_model_from_run, load_split, on_device, parse_data_spec


class AttackSettings(ModelRunSource):
    """One attack on a model run's first ``n`` test points (``robustlab attack``'s flags, recorded in
    the attack run's ``config.yaml``). Unset options (None) keep the attack's own defaults."""

    attack: str = Field("pgd", description="attack (details: `robustlab list attacks`)", json_schema_extra={"known": ATTACKS.names})
    norm: Literal["linf", "l2", "l1"] = Field("linf", description="threat norm")
    eps: float = Field(0.3, ge=0, description="threat radius")
    n: int = Field(1000, ge=1, description="number of test points")
    batch_size: int = Field(500, ge=1, description="points per batch")
    seed: int = Field(0, description="seed of the attack's random starts")
    steps: Optional[int] = Field(None, ge=1, description="attack steps")
    step_size: Optional[float] = Field(None, gt=0, description="attack step size")
    restarts: Optional[int] = Field(None, ge=1, description="random restarts")
    max_queries: Optional[int] = Field(None, ge=1, description="query budget per point (black-box attacks)",
                                       json_schema_extra={"aliases": ["--queries"]})
    black_box: bool = Field(False, description="give the attack only a score/decision oracle of the model")

    def options(self) -> dict:
        """The attack's constructor options (None: its default)."""
        return {"steps": self.steps, "step_size": self.step_size, "restarts": self.restarts,
                "max_queries": self.max_queries}

    def warn_pointless_eps(self, where: str) -> None:
        warn_if_beyond_input_range([self.eps], self.norm, where)


def build_attack(name: str, threat: ThreatModel, seed: int, **options) -> tuple[str, Attack, dict]:
    """The attack by (any spelling of) its name with the options that are set (not None)."""
    name = ATTACKS.canonical(name)
    kwargs = {k: v for k, v in options.items() if v is not None}
    try:
        return name, create_attack(name, threat, seed=seed, **kwargs), kwargs
    except TypeError:
        raise InputError(f"attack {name!r} does not take {', '.join('--' + k.replace('_', '-') for k in kwargs)}; "
                         f"see its documentation: {ATTACKS.metadata(name)['doc']}") from None


def _target(model, attack: Attack, name: str, black_box: bool):
    """The model, or for ``black_box`` the oracle the attack queries (scores or decisions only)."""
    if not black_box:
        return model
    if attack.needs_gradients:
        raise InputError(f"{name} is a white-box attack; --black-box needs a score- or decision-based attack")
    oracle_cls = DecisionOracle if attack.oracle_kind == "decision" else ScoreOracle
    return oracle_cls.from_model(model)


def attack_model_run(run_dir: str | Path, settings: AttackSettings, *, runs: str | Path = "runs", name: str | None = None,
                     save: str | Path | None = None, record: dict | None = None, device: Any = "auto",
                     progress: bool = True) -> tuple[dict, Run]:
    """Attack the first ``settings.n`` test points of the model run ``run_dir`` on `device` and record it in
    ``runs/<name>`` (default ``attack-<attack>-<run>``); ``record``: more to record in the config
    (the CLI's arguments); ``progress``: a bar (tqdm, or heartbeat lines in a log) while the attack runs.
    Returns the summary and the new run; what it saves is on the CPU."""
    s, device = settings, resolve_device(device)
    model, config = load_model_from_run(run_dir, s.weights, trust_code=s.trust_code, device=device)  # no run: nothing made
    name = name or f"attack-{ATTACKS.canonical(s.attack)}-{Path(run_dir).name}"
    # everything that can refuse the input (data, attack and budget, access) before the run is touched
    spec = parse_data_spec(config["data"])
    test = on_device(in_memory(load_split(spec, "test"), s.n, "robustlab attack", s.batch_size), device)  # streamed: the first n only
    threat = ThreatModel(s.norm, s.eps)
    attack_name, atk, kwargs = build_attack(s.attack, threat, s.seed, **s.options())
    target = _target(model, atk, attack_name, s.black_box)
    with Run.writing(runs, name, "attack") as run:  # name, kind and lock checked before the attack runs
        objective = task_objective(config)
        with torch.no_grad():
            clean_ok = ~objective.success(model(test.x), test.y)
        start = time.perf_counter()
        result = _attack_with_progress(atk, attack_name, threat, target, test, clean_ok, progress)
        robust = clean_ok & ~result.success
        out = {**_summary(result, attack_name), "clean_accuracy": float(clean_ok.float().mean()),
               "robust_accuracy": float(robust.float().mean()), "time_s": round(time.perf_counter() - start, 2)}
        run.write_config({"kind": "attack", "task": run_task(config), "model_run": str(run_dir), "attack": attack_name,
                          "threat": threat.describe(), **s.model_dump(), **(record or {}), **device_record(device)})
        run.write_summary(out)
        _write_record(run, out, atk, attack_name, kwargs, run_dir, f"{len(test)} test points of {spec['name']}")
        atomic_torch_save({k: v.cpu() for k, v in {"x": test.x, "x_adv": result.x_adv, "y": test.y,
                                                     "success": result.success}.items()}, save or run.path / "adversarial.pt")
    return out, run


def _attack_with_progress(atk: Attack, name: str, threat: ThreatModel, target, test, clean_ok, progress: bool):
    """One call of the attack on every point, under a progress bar: on a non-terminal a heartbeat line every
    30 s while it runs (attack, points done, broken so far, elapsed), then the count it broke. The counts
    are read once before and once after the call, never during it."""
    if not progress:
        return atk(target, test.x, test.y)
    with progress_bar(total=len(test), desc=f"attack {name} {threat.describe()}", unit="pt", disable=not progress) as bar:
        bar.set_postfix_str(f"{name} on {len(test)} points ({int(clean_ok.sum())} clean-correct), 0 broken so far")
        result = atk(target, test.x, test.y)
        bar.update(len(test))
        bar.set_postfix_str(f"{int((clean_ok & result.success).sum())} broken")
    return result


def _summary(result, attack_name: str) -> dict:
    """The attack's summary for the record: query statistics only for attacks that count queries (a white-box
    attack's passes are its steps), and the time once (the caller's, which includes the model's clean pass)."""
    out = {k: v for k, v in result.summary().items() if k != "time_s"}
    if ATTACKS.metadata(attack_name).get("access") == "white-box":
        out = {k: v for k, v in out.items() if not k.startswith("queries_per_success")}
    return out


def _write_record(run: Run, out: dict, attack: Attack, name: str, kwargs: dict, run_dir, points: str) -> None:
    """The attack run's report page: the attack, and one table of its numbers."""
    rows: list[list[Any]] = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in out.items()]
    write_page(run.path / "report.html", f"{name} on {Path(run_dir).name}", [("attack", f"{attack!r} on {points}")],
               [("result", ["quantity", "value"], rows)], [], {"attack": name, "kwargs": kwargs, "model_run": str(run_dir)})
