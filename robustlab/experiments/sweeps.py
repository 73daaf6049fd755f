"""The robustness-accuracy trade-off sweep (`robustlab sweep eps`): one model per training eps
(PGD-AT, Madry et al. 2018; eps = 0 is standard training) and per TRADES beta (Zhang et al. 2019,
at ``trades_eps``), each evaluated for clean and robust accuracy at ``eval_eps``; the Pareto front of
(clean, robust) accuracy is plotted. Resumable cell by cell: a finished cell (trained and
evaluated) is skipped on ``resume``, a killed one continues from its last epoch checkpoint and its
stored evaluation cells. The cells run on an executor (``executors``: in this process, or on Ray).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..runtime import device_record, resolve_device
from ..settings import StrictSettings
from ..runs.evaluations import chosen_evaluation
from ..runs.rundir import Run, split_run_dir
from ..runs.schema import ExecutorSettings
from .executors import Cell, make_executor
from .job import model_cell

log = logging.getLogger(__name__)


class EpsSweepSettings(StrictSettings):
    """``robustlab sweep eps``: the cells (training eps values, TRADES betas) and their evaluation."""

    train_eps: list[float] = Field([0.0, 0.05, 0.1, 0.2, 0.3], min_length=1,
                                   description="PGD-AT training eps values (0 = standard training)")
    trades_betas: list[float] = Field([1.0, 6.0], description="TRADES betas (at --trades-eps); an empty string "
                                      "trains no TRADES models")
    trades_eps: Optional[float] = Field(None, ge=0, description="TRADES training eps (default: the largest --train-eps)")
    eval_eps: Optional[float] = Field(None, ge=0, description="robust accuracy eps (default: the largest training eps)")
    attacks: str = Field("fast", description="evaluation suite: fast, standard or attack names")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in both coordinates (higher is better), by first coordinate."""
    idx = [i for i, (a, b) in enumerate(points)
           if not any((c >= a and d >= b) and (c > a or d > b) for c, d in points)]
    return sorted(idx, key=lambda i: points[i][0])


def sweep_cells(eps_list: list[float], trades_betas: list[float], trades_eps: float) -> list[dict]:
    cells = [{"name": f"pgd-eps{e:g}", "method": "pgd" if e > 0 else "standard", "eps": float(e), "trades_beta": None}
             for e in eps_list]
    cells += [{"name": f"trades-beta{b:g}", "method": "trades", "eps": float(trades_eps), "trades_beta": float(b)}
              for b in trades_betas]
    return cells


def sweep_eps(root: str | Path, model_spec: dict, data_spec: dict | str, train_cfg: dict, eps_list: list[float],
              trades_betas: list[float] = (), trades_eps: float | None = None, eval_eps: float | None = None,
              attacks: str = "fast", eval_n: int = 500, resume: bool = False, progress: bool = True,
              executor: ExecutorSettings | None = None, device: Any = "auto") -> Path:
    """Train and evaluate every cell on `device` (on ``executor``, default in this process; see ``executors``);
    writes ``sweep.json`` (rows: method, eps, beta, clean and robust accuracy with its 95% CI,
    training time) and ``figures/pareto.png`` when all cells are done."""
    if not eps_list and not trades_betas:
        raise InputError("the eps sweep needs training eps values and/or TRADES betas")
    root = Path(root)
    with Run.writing(*split_run_dir(root), "eps sweep", what="sweep name") as sweep:
        trades_eps = float(trades_eps if trades_eps is not None else max(list(eps_list) or [train_cfg.get("eps", 0.3)]))
        eval_eps = float(eval_eps if eval_eps is not None else max([trades_eps, *eps_list]))
        norm = train_cfg.get("norm", "linf")
        sweep.write_config({"kind": "eps sweep", "model": model_spec, "data": data_spec, "train": train_cfg,
                            "eps": list(eps_list), "trades_betas": list(trades_betas), "trades_eps": trades_eps,
                            "eval_eps": eval_eps, "attacks": attacks, "eval_n": eval_n,
                            **device_record(resolve_device(device))})
        cells = sweep_cells(list(eps_list), list(trades_betas), trades_eps)
        evaluation = {"eps": [0.0, eval_eps], "norm": norm, "attacks": attacks, "n": eval_n}
        todo = [_eps_cell(root, cell, model_spec, data_spec, train_cfg, eval_eps, evaluation, resume, progress, str(device))
                for cell in cells if not (resume and Run(root / "runs" / cell["name"]).read_summary().get("evaluated"))]
        make_executor(executor).run(todo)
        rows = [_eps_row(root / "runs" / cell["name"], cell, eval_eps, norm, evaluation) for cell in cells]
        front = pareto_front([(r["clean_acc"], r["robust_acc"]) for r in rows])
        for i, r in enumerate(rows):
            r["pareto"] = i in front
        atomic_write_json(root / "sweep.json", {"kind": "eps sweep", "rows": rows})
        plot_tradeoff(rows, sweep.figures / "pareto.png", f"{norm} eps={eval_eps:g}")
        sweep.write_summary({"rows": rows})
    return root


def _eps_cell(root: Path, cell: dict, model_spec: dict, data_spec: dict | str, train_cfg: dict, eval_eps: float,
              evaluation: dict, resume: bool, progress: bool, device: str) -> Cell:
    """The executor cell that trains and evaluates one sweep cell (``job.model_cell``)."""
    cfg = {**train_cfg, "method": cell["method"], "eps": cell["eps"] if cell["eps"] > 0 else eval_eps}
    if cell["trades_beta"] is not None:
        cfg["trades_beta"] = cell["trades_beta"]
    kwargs = {"run_dir": str(root / "runs" / cell["name"]), "model_spec": model_spec,
              "data_spec": data_spec, "train_cfg": cfg, "evaluation": evaluation, "resume": resume,
              "progress": progress, "device": device}
    return Cell(f"runs/{cell['name']}", model_cell, kwargs, device=device)


def _eps_row(run_dir: Path, cell: dict, eval_eps: float, norm: str, evaluation: dict | None = None) -> dict:
    """The sweep's row of one cell, read from its run directory: summary.json and its evaluation with the
    sweep's `evaluation` settings (``runs.evaluations.chosen_evaluation``)."""
    stored = chosen_evaluation(run_dir, evaluation)
    if stored is None:
        raise InputError(f"{run_dir} has no evaluation; resume the sweep (--resume) to evaluate it")
    ev = stored.record
    last = ev["reports"][-1]
    return {**cell, "run": str(run_dir), "clean_acc": last["clean_accuracy"], "robust_acc": last["robust_accuracy"],
            "robust_acc_ci95": last["robust_accuracy_ci95"], "eval_eps": eval_eps, "norm": norm,
            "train_time_s": Run(run_dir).read_summary().get("train_time_s")}


def plot_tradeoff(rows: list[dict], path: Path, title: str = "") -> Path:
    """Clean vs robust accuracy of every cell, the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        marker = "o" if r["method"] != "trades" else "s"
        ax.scatter(r["robust_acc"], r["clean_acc"], marker=marker, c="C0" if marker == "o" else "C1")
        label = f"eps={r['eps']:g}" if r["method"] != "trades" else f"beta={r['trades_beta']:g}"
        ax.annotate(label, (r["robust_acc"], r["clean_acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["robust_acc"])
    if front:
        ax.plot([r["robust_acc"] for r in front], [r["clean_acc"] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel(f"robust accuracy ({title})")
    ax.set_ylabel("clean accuracy")
    ax.set_title("PGD-AT (o) over training eps, TRADES (s) over beta", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
