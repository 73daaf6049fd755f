"""Geometry of trained model runs: ``landscape`` writes measures and figures into a run,
``compare_geometry`` puts runs side by side with their generalisation gaps and the rank
correlation (Kendall tau) of each measure with the gap.

Outputs: ``<run>/geometry.json``, ``<run>/figures/geometry_*.png`` (1-D curves, contour, 3-D
surface, spectral density, trajectory contour) and ``geometry_trajectory.gif``; a comparison writes
``geometry_comparison.json`` and ``geometry_comparison.md`` next to it.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import torch
from pydantic import Field

from .. import geometry as G
from ..argtypes import name_list
from ..attacks import PGD
from ..data import in_memory
from ..errors import InputError
from ..fileio import atomic_write_json, atomic_write_text
from ..data import Dataset
from ..geometry import plots
from ..runtime import resolve_device
from ..taskspec import RunInputs, get_task, run_task
from ..threat import ThreatModel
from ..training import measure
from .job import ModelRunSource, load_model_from_run, load_split, on_device, parse_data_spec
from ..runs.rundir import Run, split_run_dir

log = logging.getLogger(__name__)

SCALARS = ("top_eigenvalue", "trace", "keskar", "sam", "asam", "average", "average_relative", "pac_bayes",
           "robust_flatness_avg", "robust_flatness_worst")


class GeometrySettings(ModelRunSource):
    """``robustlab landscape RUN``: which landscape measures, of which loss, on how many points."""

    measures: str = Field("all", description="comma-separated landscape measures or all (details: `robustlab list "
                          "measures`); the measures", json_schema_extra={"known": lambda: landscape_measures()})
    loss: Literal["clean", "robust"] = Field("clean", description="the loss whose landscape is measured")
    n: int = Field(512, ge=1, description="training (and test) points the measures use")
    eps: Optional[float] = Field(None, ge=0, description="attack radius (default: the run's training eps; "
                                 "compare-geometry: the largest among the runs)")
    attack_steps: int = Field(10, ge=1, description="PGD steps of the robust loss and accuracy")
    grid: int = Field(21, ge=1, description="points per axis of the surfaces")
    seed: int = Field(0, description="seed of the random directions and attacks")

    def measure_kwargs(self) -> dict:
        """The keywords of ``landscape`` / ``compare_geometry`` besides the measures and the loss."""
        return {"n": self.n, "eps": self.eps, "attack_steps": self.attack_steps, "grid": self.grid,
                "which": self.weights, "seed": self.seed, "trust_code": self.trust_code}


class CompareGeometrySettings(GeometrySettings):
    """``robustlab compare-geometry RUN...``: the landscape settings, and where the comparison goes."""

    measures: str = Field("hessian,trace,sharpness,flatness", description=GeometrySettings.model_fields["measures"].description,
                          json_schema_extra=GeometrySettings.model_fields["measures"].json_schema_extra)
    out: Optional[str] = Field(None, description="folder for geometry_comparison.{json,md}")
    recompute: bool = Field(False, description="measure again even where geometry.json exists")


def landscape_measures() -> tuple[str, ...]:
    """The measures ``landscape`` knows: the groups of the scalar measures in ``geometry.MEASURES``
    (metadata ``landscape``: hessian, trace, sharpness, in registry order), then those that report
    no registered scalar (flatness needs an attack, surface2d and trajectory are surfaces)."""
    groups = [meta["landscape"] for _, meta in G.MEASURES.items() if meta.get("landscape")]
    return tuple(dict.fromkeys([*groups, *_MEASURE]))


def _parse(measures: str | Sequence[str]) -> list[str]:
    known = landscape_measures()
    items = name_list(measures) if isinstance(measures, str) else list(measures)
    items = list(known) if items in (["all"], []) else items
    bad = [m for m in items if m not in known]
    if bad:
        raise InputError(f"unknown geometry measure(s) {bad}; known: {', '.join(known)}")
    return items


def _threat(config: dict, eps: float | None) -> ThreatModel:
    train = config.get("train", {})
    return ThreatModel(train.get("norm", "linf"), float(eps if eps is not None else train.get("eps", 0.3)))


def task_objective(config: dict):
    """The training objective of a run's task (``taskspec.run_task``: classification's is
    cross-entropy); every geometry measure and attack of the run uses it."""
    task = get_task(run_task(config))
    name = task.train_objective
    if name is not None and name not in task.objectives:  # a plug-in whose training loss is no Objective
        log.warning("task %s: train_objective %r is not among its objectives %s; geometry uses its default "
                    "objective %r", task.name, name, sorted(task.objectives), next(iter(task.objectives)))
        name = None
    return task.objective(name)


def training_eps(config: dict) -> float | None:
    """The attack radius a run was trained with (None if its config names none)."""
    eps = (config.get("train") or {}).get("eps")
    return None if eps is None else float(eps)


def generalisation_gaps(model, train, test, threat: ThreatModel, steps: int = 10, seed: int = 0,
                        objective=None) -> dict:
    """Train minus test: accuracy gap (train - test), loss gap (test - train), clean and robust."""
    tr = measure(model, train, threat, steps, seed, objective=objective)
    te = measure(model, test, threat, steps, seed, objective=objective)
    return {"train": tr, "test": te, "acc_gap": tr["acc"] - te["acc"], "loss_gap": te["loss"] - tr["loss"],
            "robust_acc_gap": tr["robust_acc"] - te["robust_acc"],
            "robust_loss_gap": te["robust_loss"] - tr["robust_loss"]}


def run_inputs(run_dir: str | Path, n: int = 512, eps: float | None = None, which: str = "best",
               trust_code: bool = False, device: Any = "auto") -> RunInputs:
    """The model, ``n`` train and ``n`` test points, objective and threat of any task's run, the model
    and (in-memory) points on `device`.

    A task plug-in with a ``run_inputs`` hook (stereo) reads its own runs; otherwise the run is a
    model run (``robustlab train``): its best/last weights, its dataset's splits,
    the task objective (:func:`task_objective`) and an ``eps`` ball of its training norm.
    Creates nothing; InputError if ``run_dir`` is not a run."""
    if not Path(run_dir).is_dir():
        raise InputError(f"{run_dir} is not a model run (no such directory); train one with `robustlab train`")
    config = Run(run_dir, create=False).read_config()
    task = get_task(run_task(config))
    device = resolve_device(device)
    if task.run_inputs is not None:
        got = task.run_inputs(Path(run_dir), config, n=n, eps=eps, which=which, trust_code=trust_code)
        moved = [on_device(d, device) if isinstance(d, Dataset) else d for d in (got.train, got.test)]
        model = got.model.to(device) if isinstance(got.model, torch.nn.Module) else got.model
        return RunInputs(model, *moved, got.objective, got.threat)
    model, config = load_model_from_run(run_dir, which, trust_code=trust_code, device=device)
    spec = parse_data_spec(config.get("data", {}))
    train, test = (on_device(in_memory(load_split(spec, split), n), device) for split in ("train", "test"))  # streamed: first n
    return RunInputs(model.eval(), train, test, task_objective(config), _threat(config, eps))


def landscape(run_dir: str | Path, measures: str | Sequence[str] = "all", loss: str = "clean", *,
              n: int = 512, eps: float | None = None, attack_steps: int = 10, grid: int = 21, which: str = "best",
              seed: int = 0, progress: bool = True, figures: bool = True, trust_code: bool = False,
              device: Any = "auto") -> dict:
    """Compute geometry measures of a model run on ``n`` training points (robust flatness and the
    gaps also on ``n`` test points) and write ``geometry.json`` and figures into the run.

    Any task's run (:func:`run_inputs`): the loss is the task objective, the data the run's own.
    ``loss="robust"`` takes every measure on PGD adversarials (re-crafted at each evaluated weight
    vector for surfaces and sharpness; crafted at the trained weights for the Hessian). Everything runs
    on `device`. Creates nothing unless the run exists; holds the run's lock while it writes.
    """
    if loss not in ("clean", "robust"):
        raise InputError(f"loss must be 'clean' or 'robust', got {loss!r}")
    todo = _parse(measures)
    inputs = run_inputs(run_dir, n, eps, which, trust_code, device)  # InputError if no such run
    with Run.writing(*split_run_dir(run_dir), None, create=False) as run:  # any task's run
        return _landscape(run, inputs, todo, loss, attack_steps, grid, which, seed, progress, figures)


def _landscape(run: Run, inputs: RunInputs, todo: list[str], loss: str, attack_steps: int, grid: int, which: str,
               seed: int, progress: bool, figures: bool) -> dict:
    """Measure each name in `todo` (``_MEASURE[name]``) and write ``geometry[_robust].json``."""
    if figures:
        run.figures.mkdir(exist_ok=True)
    threat, objective = inputs.threat, inputs.objective
    attack = PGD(threat, objective, steps=attack_steps, early_stop=False, seed=seed) if threat.eps > 0 else None
    if loss == "robust" and attack is None:
        raise InputError("loss='robust' needs eps > 0 (pass eps=...)")
    out: dict[str, Any] = {"run": str(run.path), "loss": loss, "n": len(inputs.train), "eps": threat.eps,
                           "norm": threat.norm, "objective": getattr(objective, "name", type(objective).__name__),
                           "weights": which, "measures": {}, "scalars": {}, "timings_s": {}, "figures": []}
    ls = _Landscape(run, inputs, loss, attack, grid, seed, progress, figures, out)
    start = time.perf_counter()
    out["gaps"] = generalisation_gaps(inputs.model, inputs.train, inputs.test, threat, attack_steps, seed,
                                      objective=objective)
    from ..progress import progress_bar

    for m in progress_bar(todo, desc="geometry", unit="measure", disable=not progress):
        t0 = time.perf_counter()
        if _MEASURE[m](ls) is not False:  # False: skipped (no timing)
            out["timings_s"][m] = time.perf_counter() - t0
    out["time_s"] = time.perf_counter() - start
    atomic_write_json(run.path / ("geometry.json" if loss == "clean" else "geometry_robust.json"), out)
    run.log_metrics({"kind": "geometry", "loss": loss, **{k: round(v, 6) for k, v in out["scalars"].items()}})
    log.info("%s: geometry (%s) %s", run.name, loss, {k: round(v, 4) for k, v in out["scalars"].items()})
    return out


@dataclass
class _Landscape:
    """What each landscape measure reads (the run, its model and data, the loss, the PGD attack for
    robust losses) and the result it adds to (``out``: measures, scalars, figures)."""

    run: Run
    inputs: RunInputs
    loss: str
    attack: Any
    grid: int
    seed: int
    progress: bool
    figures: bool
    out: dict

    @property
    def kw(self) -> dict:
        """Surfaces and sharpness: the objective, and for the robust loss the attack (re-crafted per weight)."""
        return {"objective": self.inputs.objective, **({"attack": self.attack} if self.loss == "robust" else {})}

    @property
    def robust_kw(self) -> dict:
        """Hessian measures: the robust loss at adversarials crafted once at the trained weights."""
        return {"objective": self.inputs.objective,
                **({"attack": self.attack, "robust": "fixed"} if self.loss == "robust" else {})}

    def figure(self, path) -> None:
        self.out["figures"].append(str(path))


def _hessian(ls: _Landscape) -> None:
    """Top-5 Hessian eigenvalues (Lanczos) and the spectral density (SLQ, Ghorbani et al. 2019)."""
    model, train = ls.inputs.model, ls.inputs.train
    eig = G.hessian_eigenvalues(model, train, k=5, seed=ls.seed, tol=1e-3, **ls.robust_kw)
    sd = G.spectral_density(model, train, runs=2, steps=30, seed=ls.seed, **ls.robust_kw)
    ls.out["measures"]["hessian"] = {**eig.to_dict(), "density": sd.to_dict()}
    ls.out["scalars"]["top_eigenvalue"] = float(eig.values[0])
    if ls.figures:
        ls.figure(plots.plot_density({ls.run.name: sd}, ls.run.figures / "geometry_density.png"))


def _trace(ls: _Landscape) -> None:
    """Hessian trace (Hutchinson, 50 probe vectors)."""
    tr = G.hessian_trace(ls.inputs.model, ls.inputs.train, samples=50, seed=ls.seed, **ls.robust_kw)
    ls.out["measures"]["trace"] = tr.to_dict()
    ls.out["scalars"]["trace"] = tr.value


def _sharpness(ls: _Landscape) -> None:
    """Every sharpness measure of the registry (``geometry.MEASURES``, metadata ``landscape="sharpness"``)
    with the settings it registers; a measure that takes a seed gets the landscape's."""
    res = {}
    for name, meta in G.MEASURES.items():
        if meta.get("landscape") != "sharpness":
            continue
        fn = meta["result"]
        seeded = {"seed": ls.seed} if "seed" in inspect.signature(fn).parameters else {}
        res[name] = fn(ls.inputs.model, ls.inputs.train, **meta["landscape_kw"], **seeded, **ls.kw)
    ls.out["measures"]["sharpness"] = {k: v.to_dict() for k, v in res.items()}
    ls.out["scalars"].update({k: v.value for k, v in res.items()})


def _flatness(ls: _Landscape) -> bool:
    """Robust flatness (Stutz et al. 2021) on the test points, average- and worst-case; needs eps > 0."""
    if ls.attack is None:
        log.warning("flatness needs eps > 0; skipped")
        return False
    model, test, objective = ls.inputs.model, ls.inputs.test, ls.inputs.objective
    avg = G.average_robust_flatness(model, test, ls.attack, xi=0.5, samples=5, seed=ls.seed, objective=objective)
    worst = G.worst_robust_flatness(model, test, ls.attack, xi=0.01, steps=3, objective=objective)
    ls.out["measures"]["flatness"] = {"average": avg.to_dict(), "worst": worst.to_dict()}
    ls.out["scalars"]["robust_flatness_avg"] = avg.value
    ls.out["scalars"]["robust_flatness_worst"] = worst.value
    return True


def _surface2d(ls: _Landscape) -> None:
    """1-D loss curves (clean, and robust for the robust loss) and the 2-D surface along
    filter-normalised random directions (Li et al. 2018), with contour and 3-D figures."""
    model, train, objective, seed = ls.inputs.model, ls.inputs.train, ls.inputs.objective, ls.seed
    xs = torch.linspace(-1, 1, ls.grid)
    curves = {"clean": G.surface_1d(model, train, alphas=xs, seed=seed, objective=objective)}
    if ls.attack is not None and ls.loss == "robust":
        curves["robust"] = G.surface_1d(model, train, alphas=torch.linspace(-1, 1, 11), seed=seed, attack=ls.attack,
                                        objective=objective)
    s2 = G.surface_2d(model, train, xs=xs, ys=xs, seed=seed, progress=ls.progress, **ls.kw)
    ls.out["measures"]["surface"] = {"curves": {k: v.to_dict() for k, v in curves.items()}, "plane": s2.to_dict()}
    if ls.figures:
        fig = ls.run.figures
        ls.figure(plots.plot_curves(curves, fig / "geometry_1d.png"))
        ls.figure(plots.plot_contour(s2, fig / "geometry_contour.png", title=f"{ls.loss} loss"))
        ls.figure(plots.plot_surface3d(s2, fig / "geometry_surface3d.png", title=f"{ls.loss} loss"))


def _snapshots(run: Run, model) -> tuple[list[Path], list]:
    """The run's weight snapshots (per step when it has them, else per epoch) and its final weights,
    without the last snapshot when it equals the final weights."""
    folder = run.checkpoints / "snapshots"
    snaps = sorted(folder.glob("step_*.safetensors")) or sorted(folder.glob("epoch_*.safetensors"))
    final = run.checkpoints / "last.safetensors"
    paths = snaps + ([final] if final.exists() else [])
    snapshots = G.load_snapshots(model, paths) if paths else []
    if len(paths) > 1 and final.exists() and all(torch.equal(snapshots[-2][k], snapshots[-1][k]) for k in snapshots[-1]):
        paths.pop(-2), snapshots.pop(-2)
    return paths, snapshots


def _trajectory(ls: _Landscape) -> bool:
    """The training path in the PCA plane of its snapshots (Li et al. 2018) and the loss surface there."""
    model = ls.inputs.model
    paths, snapshots = _snapshots(ls.run, model)
    if len(paths) < 3:
        log.warning("trajectory needs >= 3 snapshots (train with --snapshot-every 1 or --snapshot-steps K); found %d",
                    len(paths))
        ls.out["measures"]["trajectory"] = {"skipped": f"{len(paths)} snapshots"}
        return False
    labels = [p.stem for p in paths]
    traj = G.trajectory_pca(snapshots, model, labels=labels)
    surf = G.trajectory_surface(model, ls.inputs.train, traj, points=min(ls.grid, 15), seed=ls.seed, **ls.kw)
    ls.out["measures"]["trajectory"] = {**traj.to_dict(), "surface": surf.to_dict()}
    if ls.figures:
        fig = ls.run.figures
        ls.figure(plots.plot_contour(surf, fig / "geometry_trajectory.png", traj.coords,
                                     title="PCA plane of the training path"))
        ls.figure(plots.animate_trajectory(surf, traj.coords, fig / "geometry_trajectory.gif", labels=labels))
    return True


# the landscape's measures; hessian, trace and sharpness report the scalar measures of geometry.MEASURES
_MEASURE: dict[str, Callable[[_Landscape], bool | None]] = {
    "hessian": _hessian, "trace": _trace, "sharpness": _sharpness, "flatness": _flatness, "surface2d": _surface2d,
    "trajectory": _trajectory}


def compare_geometry(run_dirs: Sequence[str | Path], measures: str | Sequence[str] = ("hessian", "trace", "sharpness",
                     "flatness"), loss: str = "clean", out: str | Path | None = None, recompute: bool = False,
                     gap: str | None = None, eps: float | None = None, **kwargs) -> dict:
    """Measures of several runs side by side with their generalisation gaps and, per measure, the
    Kendall rank correlation with the gap (``acc_gap`` for the clean loss, ``robust_acc_gap`` for
    the robust one). Runs without ``geometry.json`` (or with ``recompute``) are measured first.

    Every run is measured at ONE attack radius (robust gaps, robust losses and flatness are
    comparable only then): ``eps``, else the largest training eps among the runs; a stored
    ``geometry.json`` taken at another eps is measured again. The radius is recorded as ``eps``."""
    from scipy.stats import kendalltau

    if len(run_dirs) < 2:
        raise InputError("compare-geometry needs at least two runs")
    gap = gap or ("acc_gap" if loss == "clean" else "robust_acc_gap")
    todo = _parse(measures)
    if eps is None:
        train_eps = [training_eps(Run(r, create=False).read_config()) for r in run_dirs]
        known = [e for e in train_eps if e is not None]
        eps = max(known) if known else None
        if eps is None:
            raise InputError("none of the runs records a training eps; pass --eps for the common attack radius")
    eps = float(eps)
    rows = []
    for r in run_dirs:
        path = Path(r) / ("geometry.json" if loss == "clean" else "geometry_robust.json")
        res = json.loads(path.read_text()) if path.exists() and not recompute else None
        if res is None or not set(todo) <= set(res.get("measures", {})) | {"surface2d", "trajectory"} \
                or not math.isclose(float(res.get("eps", float("nan"))), eps, rel_tol=1e-9):
            res = landscape(r, todo, loss, eps=eps, **kwargs)
        rows.append({"run": str(r), "scalars": res["scalars"], "gaps": {k: v for k, v in res["gaps"].items()
                                                                         if not isinstance(v, dict)}})
    names = [s for s in SCALARS if all(s in row["scalars"] for row in rows)]
    taus = {}
    for s in names:
        xs = [row["scalars"][s] for row in rows]
        ys = [row["gaps"][gap] for row in rows]
        tau = kendalltau(xs, ys).statistic if len(set(xs)) > 1 and len(set(ys)) > 1 else float("nan")
        taus[s] = None if tau is None or math.isnan(tau) else float(tau)
    result = {"loss": loss, "gap": gap, "eps": eps, "runs": rows, "kendall_tau": taus}
    out_dir = Path(out) if out is not None else Path(run_dirs[0]).parent
    atomic_write_json(out_dir / "geometry_comparison.json", result)
    atomic_write_text(out_dir / "geometry_comparison.md", comparison_markdown(result))
    return result


def comparison_markdown(result: dict) -> str:
    """The comparison as a markdown table (one row per run, then Kendall tau per measure)."""
    names = list(result["kendall_tau"])
    gaps = ["acc_gap", "robust_acc_gap", "loss_gap", "robust_loss_gap"]
    head = "| run | " + " | ".join(names + gaps) + " |"
    sep = "|" + "---|" * (len(names) + len(gaps) + 1)
    lines = [head, sep]
    for row in result["runs"]:
        vals = [f"{row['scalars'][s]:.4g}" for s in names] + [f"{row['gaps'][g]:.4g}" for g in gaps]
        lines.append(f"| {Path(row['run']).name} | " + " | ".join(vals) + " |")
    taus = ["n/a" if result["kendall_tau"][s] is None else f"{result['kendall_tau'][s]:+.2f}" for s in names]
    lines.append(f"| Kendall tau vs {result['gap']} | " + " | ".join(taus + [""] * len(gaps)) + " |")
    eps = f" at eps={result['eps']:g} for every run" if result.get("eps") is not None else ""
    return "\n".join(lines) + f"\n\nRobust quantities{eps}.\n"
