"""Executors: where the independent cells of a job or sweep run.

A cell is one unit of work that writes its own run directory and depends on no other cell: a job's
model (train, then evaluate), a sweep cell, one checkpoint's evaluation. It is an importable
top-level function called with plain data (paths as strings, dicts, numbers), never a model, so
that a Ray worker can receive it. The caller skips the cells a ``--resume`` finds complete, hands
the rest to an executor, and afterwards reads every cell's results from its run directory.

- ``LocalExecutor`` (the default): the cells one after another in this process; an error stops
  the loop at once, as it always did.
- ``RayExecutor``: one Ray task per cell (``ray.remote``), on a Ray started here (``ray``) or on a
  running cluster (``ray:ADDRESS``, passed to ``ray.init(address=...)``). Each task reserves
  ``executor_cpus`` CPUs and, when the cell runs on CUDA, one GPU, which Ray assigns by setting the
  task's ``CUDA_VISIBLE_DEVICES`` (the cell's ``cuda`` is that GPU). Tasks write their run
  directories themselves, so on a cluster the runs folder is a shared filesystem and robustlab is
  installed on every node. A failed task is reported after the others finish, as one line naming
  the cell; a rerun with ``--resume`` then runs only the cells that are not complete.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import InputError, RobustlabError
from ..runs.schema import ExecutorSettings

log = logging.getLogger(__name__)

RAY_MISSING = ("the ray executor needs Ray, an optional extra: pip install 'robustlab[cluster]' "
               "(or pip install 'ray>=2.9'), or use --executor local")


class CellFailedError(RobustlabError):
    """A cell run by an executor failed; the message names the cell and what went wrong."""


@dataclass(frozen=True)
class Cell:
    """One independent unit of work: ``fn(**kwargs)``, named ``name`` in messages.

    ``fn`` is a top-level function (Ray pickles it by reference) and ``kwargs`` plain data.
    ``device`` is the device the cell computes on (``auto``, ``cpu``, ``cuda``, ``cuda:N``): a Ray
    task gets one GPU when it is CUDA (``auto``: when the cluster has GPUs)."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    device: str = "auto"


class LocalExecutor:
    """Run the cells one after another in this process (today's loop)."""

    def run(self, cells: Sequence[Cell]) -> dict[str, Any]:
        """Each cell's return value by name."""
        return {cell.name: cell.fn(**cell.kwargs) for cell in cells}


def run_cell(fn: Callable[..., Any], kwargs: dict) -> Any:
    """The body of a Ray task: one cell, called with its plain-data arguments."""
    return fn(**kwargs)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def gpus_for(device: str, cluster_gpus: float) -> int:
    """GPUs a cell's task reserves: 1 on CUDA (``auto``: when the cluster has any), else 0."""
    if str(device).startswith("cuda"):
        return 1
    return 1 if device == "auto" and cluster_gpus > 0 else 0


def failure_message(failed: list[tuple[str, BaseException]], total: int) -> str:
    """One line: the failed cells, the first one's error, and how to go on."""
    names = ", ".join(repr(name) for name, _ in failed)
    name, err = failed[0]
    first = (str(err).strip().splitlines() or [""])[0]
    what = f"cell {names} failed" if len(failed) == 1 else f"cells {names} failed ({name!r}"
    what += f": {type(err).__name__}: {first}" + (")" if len(failed) > 1 else "")
    return (f"{what}; the other {total - len(failed)} of {total} cells finished; fix it and rerun with --resume "
            "to run only the cells not complete")


class RayExecutor:
    """One Ray task per cell; ``address`` None starts a local Ray (shut down after), else connects.

    A Ray already initialised in this process (``ray.init`` by the caller) is used as it is."""

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1.0):
        self.address = address
        self.cpus_per_cell = cpus_per_cell
        _import_ray()  # a missing Ray is an input error before any cell runs

    def run(self, cells: Sequence[Cell]) -> dict[str, Any]:
        """Submit every cell, wait for all of them, then raise one error naming the failed ones."""
        if not cells:
            return {}
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            self._init(ray)
        try:
            refs = self._submit(ray, cells)
            ray.wait(refs, num_returns=len(refs))
            return self._collect(ray, cells, refs)
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray) -> None:
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            first = (str(e).strip().splitlines() or [""])[0]
            raise InputError(f"could not start or reach {where}: {first}; check the address (ray:ADDRESS, e.g. "
                             "ray:auto on a node of the cluster) and `ray status`, or use --executor local") from None

    def _submit(self, ray, cells: Sequence[Cell]) -> list:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(run_cell)
        refs = []
        for cell in cells:
            n_gpus = gpus_for(cell.device, gpus)
            if n_gpus > gpus:
                raise InputError(f"cell {cell.name!r} runs on {cell.device} but the Ray cluster has no GPU; "
                                 "use a device of cpu or auto, or a cluster with GPUs")
            options = {"num_cpus": self.cpus_per_cell, "num_gpus": n_gpus, "name": cell.name, "max_retries": 0}
            refs.append(task.options(**options).remote(cell.fn, cell.kwargs))
        log.info("submitted %d cells to Ray", len(refs))
        return refs

    @staticmethod
    def _collect(ray, cells: Sequence[Cell], refs: list) -> dict[str, Any]:
        results, failed = {}, []
        for cell, ref in zip(cells, refs):
            try:
                results[cell.name] = ray.get(ref)
            except Exception as e:  # a RayTaskError carries the cell's own exception as its cause
                failed.append((cell.name, getattr(e, "cause", None) or e))
        if failed:
            error = InputError if all(isinstance(e, InputError) for _, e in failed) else CellFailedError
            raise error(failure_message(failed, len(cells)))
        return results


def make_executor(settings: ExecutorSettings | dict | str | None = None) -> LocalExecutor | RayExecutor:
    """The executor of ``settings`` (``ExecutorSettings``, its dict, or the executor name alone)."""
    if settings is None or isinstance(settings, str):
        settings = {"executor": settings or "local"}
    if isinstance(settings, dict):
        settings = ExecutorSettings(**settings)
    if settings.executor == "local":
        return LocalExecutor()
    address = settings.executor.partition(":")[2] or None
    return RayExecutor(address, settings.executor_cpus)
