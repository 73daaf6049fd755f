"""The command line of a task plug-in (``robustlab <task> <verb>``), declared once.

A task lists its verbs as ``Verb``s: a name, a help line, the settings models whose fields are the
verb's flags, the function that runs it and the kind of run it writes. From that one declaration come

- the flags, their help and their defaults (``settings.add_model_arguments``);
- the check of the values: every problem of every model in one line, exit 2 (``settings_from_args``);
- the device (``DeviceSettings`` resolved to a ``torch.device``);
- the run directory: written through ``Run.writing`` (name checked, lock held, links refused, a run of
  another kind refused), its ``config.yaml`` the validated settings with the kind, task and device (put back
  as it was when the verb fails: a failed rerun never leaves settings beside results they did not make).

The verb's function receives one namespace: every field of its models by name (``args.eps``), ``device``
(resolved), ``run`` (the ``Run``, None for a verb that writes none), ``settings`` (model -> instance) and
``config`` (what config.yaml holds; a verb that records more rewrites it with ``run.write_config``).

A verb that writes a run gets ``RunSettings`` (``--runs``, ``--name``, ``--seed``) first; the default
name is ``<task>-<verb>`` unless the verb's ``defaults`` says otherwise.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

from pydantic import Field

from ..fileio import atomic_write_bytes
from ..runtime import device_record, resolve_device
from ..settings import StrictSettings, add_model_arguments, settings_from_args
from .rundir import Run
from .schema import DeviceSettings

__all__ = ["RunSettings", "Verb", "TaskCommand"]


class RunSettings(StrictSettings):
    """Where a task verb writes its run, and the seed of what it draws."""

    runs: str = Field("runs", description="parent folder of run directories")
    name: str = Field("run", description="run directory name")
    seed: int = Field(0, description="random seed")


@dataclass(frozen=True)
class Verb:
    """One verb of a task's command line.

    Attributes:
        name: the verb (``train``, ``attack``, ...).
        help: one line for the task's ``--help``.
        main: ``main(args) -> exit code``; ``args`` as the module docstring says.
        settings: the models whose fields are the verb's flags, in the order ``--help`` lists them.
        kind: the run kind the verb writes (``audio-attack``); None: it writes no run directory.
        description: the verb's own ``--help`` text (default: ``help``).
        defaults: flag defaults that differ from the models' (by field name), e.g. a verb's ``n``.
    """

    name: str
    help: str
    main: Callable[[Any], int]
    settings: tuple[type[StrictSettings], ...] = ()
    kind: str | None = None
    description: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def models(self) -> tuple[type[StrictSettings], ...]:
        """The verb's settings models, ``RunSettings`` first for a verb that writes a run."""
        return ((RunSettings,) if self.kind is not None else ()) + tuple(self.settings)


@dataclass(frozen=True)
class TaskCommand:
    """``robustlab <name> <verb> ...``: a task's verbs, registered by the CLI through ``add_cli`` and run
    through ``run_cli`` (the two callables a ``taskspec.Task`` declares)."""

    name: str
    help: str
    description: str
    verbs: tuple[Verb, ...]

    def add_cli(self, subparsers) -> None:
        """Add ``robustlab <name>`` and a parser per verb, its flags from the verb's settings models."""
        command = subparsers.add_parser(self.name, help=self.help, description=self.description)
        verbs = command.add_subparsers(dest=f"{self.name}_command", required=True)
        for verb in self.verbs:
            parser = verbs.add_parser(verb.name, help=verb.help.replace("%", "%%"),  # argparse formats help with %
                                      description=verb.description or verb.help)
            defaults = {"name": f"{self.name}-{verb.name}", **verb.defaults}
            for model in verb.models():
                add_model_arguments(parser, model, defaults={k: v for k, v in defaults.items() if k in model.model_fields})
            parser.set_defaults(task_verb=verb)

    def run_cli(self, args) -> int:
        """Validate the chosen verb's settings and run it, inside its run directory if it writes one."""
        verb: Verb = args.task_verb
        settings = settings_from_args(verb.models(), args, f"`robustlab {self.name} {verb.name}` arguments")
        values = {k: v for s in settings.values() for k, v in s.model_dump().items()}
        inputs = SimpleNamespace(**values, settings=settings, run=None, config=None)
        if DeviceSettings in settings:
            inputs.device = resolve_device(settings[DeviceSettings].device)
        if verb.kind is None:
            return verb.main(inputs)
        with Run.writing(values["runs"], values["name"], verb.kind) as run:
            inputs.run = run
            inputs.config = {"kind": verb.kind, "task": self.name, **values,
                             **(device_record(inputs.device) if DeviceSettings in settings else {})}
            with _config_kept_on_failure(run):
                run.write_config(inputs.config)
                return verb.main(inputs)


@contextmanager
def _config_kept_on_failure(run: Run):
    """A verb that fails (bad input found while loading, an error, Ctrl-C) leaves the run's config.yaml as it
    was: the settings of the results already there, or none for a new run, never settings no result has."""
    path = run.path / "config.yaml"
    before = path.read_bytes() if path.is_file() else None
    try:
        yield
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(path, before, inside=run.path)
        raise
