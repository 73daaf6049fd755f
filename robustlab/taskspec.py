"""What a task plug-in declares, and the registry of tasks.

A task (classification, stereo disparity, OCR, ...) is a package under ``robustlab/tasks/`` that
builds one ``Task`` and is registered in ``TASKS`` by name. Everything shared (``evaluate``,
``robustness_curve``, ``sanity_checks``, every training method, geometry, representations, run
records and reports) is driven by the task's objective and metrics, so a task writes only what is
new about it.

Lower layers never import a task package: they look it up here by name (``TASKS.get("stereo")``),
and the entries are registered lazily as ``"module:attribute"`` strings so that looking up one task
does not import the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .registry import Registry


@dataclass
class RunInputs:
    """What run-level measures (``robustlab landscape``, ``compare-geometry``) need of a task's run:
    its trained model (eval mode), ``n`` training and ``n`` held-out points (objects with
    ``batches(batch_size)``, ``take(indices)`` and ``len``, e.g. a robustlab Dataset), the task
    objective every measure and attack uses, and the threat model of the robust quantities."""

    model: Any
    train: Any
    test: Any
    objective: Any
    threat: Any


@dataclass
class Task:
    """One task plug-in.

    Attributes:
        name: registry name ("classification", "stereo", "ocr").
        description: one line for ``robustlab list``.
        objectives: name -> factory of an ``Objective`` (loss + per-sample success); the first is
            the default attack objective. ``train_objective`` names the training loss.
        metrics: ``metrics(output, target) -> dict[str, float]`` of task metrics over a batch
            (accuracy, EPE, CER, ...); evaluation reports them clean and adversarial.
        datasets: name -> factory of a dataset.
        models: name -> model factory (``pretrained`` for cached reference weights, if any).
        threats: name -> factory of a threat model (view masks, stroke masks, ...).
        oracles: name -> factory of an oracle for a real engine (SGBM, Tesseract).
        report_sections: ``fn(run_path) -> list[Section]``: what the shared report writer adds for a
            run of this task (figures, tables).
        run_inputs: ``fn(run_path, config, *, n, eps, which, trust_code) -> RunInputs`` for a run of
            this task (its model, data, objective and threat); None: a model run (``robustlab
            train``: weights, dataset splits, training norm), read by the shared loader.
        add_cli / run_cli: the task's CLI verbs (``robustlab <task> <verb>``); registered by the CLI,
            never imported by the task from it.
    """

    name: str
    description: str
    objectives: dict[str, Callable[..., Any]] = field(default_factory=dict)
    train_objective: str | None = None
    metrics: Callable[..., dict] | None = None
    datasets: dict[str, Callable[..., Any]] = field(default_factory=dict)
    models: dict[str, Callable[..., Any]] = field(default_factory=dict)
    threats: dict[str, Callable[..., Any]] = field(default_factory=dict)
    oracles: dict[str, Callable[..., Any]] = field(default_factory=dict)
    report_sections: Callable[..., list] | None = None
    run_inputs: Callable[..., RunInputs] | None = None
    add_cli: Callable[[Any], None] | None = None
    run_cli: Callable[[Any], int] | None = None

    def objective(self, name: str | None = None, **kwargs):
        """Build one of the task's objectives (the default one without a name)."""
        from .errors import unknown_name

        if not self.objectives:
            raise KeyError(f"task {self.name!r} declares no objectives")
        key = name or next(iter(self.objectives))
        if key not in self.objectives:
            raise unknown_name(f"{self.name} objective", key, self.objectives)
        return self.objectives[key](**kwargs)


TASKS = Registry("task")
TASKS.register("classification", "robustlab.tasks.classification:TASK", kind="builtin", default=True)
TASKS.register("stereo", "robustlab.tasks.stereo.plugin:TASK", kind="builtin")
TASKS.register("ocr", "robustlab.tasks.ocr.plugin:TASK", kind="builtin")
TASKS.register("detection", "robustlab.tasks.detection.plugin:TASK", kind="builtin")


def get_task(name: str) -> Task:
    return TASKS.get(name)


def list_tasks(**where) -> list[str]:
    """Registered task names (``list_tasks(kind="builtin")``)."""
    return TASKS.names(**where)


def run_task(config: dict) -> str:
    """The task a run's ``config.yaml`` names; a run that names none (written before runs named
    their task: ``robustlab train`` model runs and jobs) is read as the registry's default task
    (metadata ``default=True``: classification). The one place that default is applied."""
    return config.get("task") or TASKS.names(default=True)[0]
