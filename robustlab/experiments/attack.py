"""``robustlab attack RUN``: one attack on a model run's test points, recorded as a run of its own
(``config.yaml``, ``summary.json``, ``report.html``, ``adversarial.pt``).

Any task's model run: clean correctness is the run's task objective (``~objective.success`` on
the clean outputs; for a classifier, argmax equals the label)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..attacks import ATTACKS, Attack, create_attack
from ..data import load_dataset
from ..errors import InputError
from ..fileio import atomic_torch_save
from ..oracles import DecisionOracle, ScoreOracle
from ..runs import Run, write_page
from ..taskspec import run_task
from ..threat import ThreatModel
from .geometry import task_objective
from .job import load_model_from_run, parse_data_spec


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


def attack_model_run(run_dir: str | Path, attack: str, norm: str, eps: float, *, n: int, runs: str | Path,
                     name: str | None = None, weights: str = "best", seed: int = 0, black_box: bool = False,
                     save: str | Path | None = None, trust_code: bool = False, options: dict | None = None,
                     settings: dict | None = None) -> tuple[dict, Run]:
    """Attack the first ``n`` test points of the model run ``run_dir`` and record it in
    ``runs/<name>`` (default ``attack-<attack>-<run>``); ``options``: the attack's steps,
    step_size, restarts, max_queries (None: its default); ``settings``: more to record in the
    config (the CLI's arguments). Returns the summary and the new run."""
    model, config = load_model_from_run(run_dir, weights, trust_code=trust_code)
    spec = parse_data_spec(config["data"])
    test = load_dataset(spec["name"], "test", seed=spec.get("seed", 0), data_dir=spec.get("data_dir")).subset(n)
    threat = ThreatModel(norm, eps)
    attack_name, atk, kwargs = build_attack(attack, threat, seed, **(options or {}))
    objective = task_objective(config)
    with torch.no_grad():
        clean_ok = ~objective.success(model(test.x), test.y)
    target = _target(model, atk, attack_name, black_box)
    start = time.perf_counter()
    result = atk(target, test.x, test.y)
    robust = clean_ok & ~result.success
    out = {**result.summary(), "clean_accuracy": float(clean_ok.float().mean()),
           "robust_accuracy": float(robust.float().mean()), "seconds": round(time.perf_counter() - start, 2)}
    run = Run(Path(runs) / (name or f"attack-{attack_name}-{Path(run_dir).name}"))
    run.write_config({"kind": "attack", "task": run_task(config), "model_run": str(run_dir), "attack": attack_name,
                      "threat": threat.describe(), **(settings or {})})
    run.write_summary(out)
    _write_record(run, out, atk, attack_name, kwargs, run_dir, f"{len(test)} test points of {spec['name']}")
    atomic_torch_save({"x": test.x, "x_adv": result.x_adv, "y": test.y, "success": result.success},
                      save or run.path / "adversarial.pt")
    return out, run


def _write_record(run: Run, out: dict, attack: Attack, name: str, kwargs: dict, run_dir, points: str) -> None:
    """The attack run's report page: the attack, and one table of its numbers."""
    rows: list[list[Any]] = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in out.items()]
    write_page(run.path / "report.html", f"{name} on {Path(run_dir).name}", [("attack", f"{attack!r} on {points}")],
               [("result", ["quantity", "value"], rows)], [], {"attack": name, "kwargs": kwargs, "model_run": str(run_dir)})
