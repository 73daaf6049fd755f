"""A job's leaderboard: its evaluated models ranked as RobustBench ranks them.

RobustBench orders a leaderboard by robust accuracy (AutoAttack, at the benchmark's one eps) and breaks
ties by clean accuracy. Here every model's row is read from its run's evaluation (``runs.evaluations``: the
one made with the job's evaluation settings, else the run's default): robust
accuracy at the largest evaluated eps, clean accuracy, both with 95% Wilson score intervals, the attack
suite, the number of points and the norm. ``write_leaderboard`` writes ``leaderboard.json`` and
``leaderboard.html`` into the job folder; ``leaderboard_table`` is the table printed at the end of
``robustlab run``: every model at each eps, in rank order.
"""
from __future__ import annotations

import html
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_json, atomic_write_text
from .evaluations import chosen_evaluation
from .rundir import Run
from .summary_table import clean_ci, evaluation_rows, results_table, text_table


def leaderboard_row(label: str, run_dir: str | Path, settings=None) -> dict:
    """One model's row: its evaluation at the largest eps (the model run's evaluation with `settings`,
    else its default one: ``evaluations.chosen_evaluation``)."""
    stored = chosen_evaluation(run_dir, settings)
    if stored is None:
        raise InputError(f"{run_dir} has no evaluation; evaluate it first (robustlab evaluate {run_dir})")
    ev = stored.record
    last = max(ev["reports"], key=lambda r: r["eps"])
    n = last["n"]
    clean = last["clean_accuracy"]
    model = (Run(run_dir, create=False).read_config().get("model") or {})
    return {
        "model": label, "source": model.get("name"), "weights_sha256": model.get("weights_sha256"), "run": str(run_dir),
        "clean_accuracy": clean, "clean_accuracy_ci95": clean_ci(clean, n),
        "robust_accuracy": last["robust_accuracy"], "robust_accuracy_ci95": last["robust_accuracy_ci95"],
        "suite": ev["attacks"] if isinstance(ev["attacks"], str) else ",".join(ev["attacks"]),
        "n": n, "eps": last["eps"], "norm": ev.get("norm", last.get("norm")),
        "per_eps": evaluation_rows(label, ev),  # every eps, for the printed results table
    }


def rank_rows(rows: list[dict]) -> list[dict]:
    """Rows ordered by robust accuracy, then clean accuracy (both descending; then by name), ranked 1, 2, ..."""
    ordered = sorted(rows, key=lambda r: (-r["robust_accuracy"], -r["clean_accuracy"], r["model"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(ordered)]


def _pct(x: float, ci: list[float]) -> str:
    return f"{x:.2%} [{ci[0]:.2%}, {ci[1]:.2%}]"


#: the table's columns: (heading, the cell text of a row)
COLUMNS = (
    ("#", lambda r: str(r["rank"])),
    ("model", lambda r: r["model"]),
    ("source", lambda r: str(r["source"])),
    ("clean (95% CI)", lambda r: _pct(r["clean_accuracy"], r["clean_accuracy_ci95"])),
    ("robust (95% CI)", lambda r: _pct(r["robust_accuracy"], r["robust_accuracy_ci95"])),
    ("suite", lambda r: r["suite"]),
    ("n", lambda r: str(r["n"])),
    ("eps", lambda r: f"{r['norm']} {r['eps']:g}"),
)


def leaderboard_table(rows: list[dict]) -> str:
    """The ranked rows as aligned text (what ``robustlab run`` prints): every model at each evaluated eps, in
    rank order (``summary_table.results_table``); rows without their per-eps results (a leaderboard.json
    written before they were kept) as one line each at the largest eps."""
    if rows and all("per_eps" in r for r in rows):
        return results_table([{"rank": r["rank"], **e} for r in rows for e in r["per_eps"]])
    return text_table(COLUMNS, rows)


def leaderboard_html(rows: list[dict], title: str) -> str:
    """A static page with the ranked table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r))}</td>" for _, cell in COLUMNS) + "</tr>" for r in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 10px;text-align:left}"
            "tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Ranked by robust accuracy at the largest eps, then clean accuracy "
            "(as RobustBench ranks). 95% Wilson score intervals. Every evaluation runs in float32 (autocast off).</p>"
            f"<table><tr>{head}</tr>{body}</table></body></html>\n")


def write_leaderboard(job_dir: str | Path, model_runs: dict[str, str | Path], settings=None) -> list[dict]:
    """Rank the evaluated model runs (label -> run dir), each by its evaluation with `settings` (the job's
    ``evaluation:``; None: each run's default), and write leaderboard.json and leaderboard.html."""
    job_dir = Path(job_dir)
    rows = rank_rows([leaderboard_row(label, p, settings) for label, p in model_runs.items()])
    atomic_write_json(job_dir / "leaderboard.json", {"ranking": "robust accuracy, then clean accuracy", "rows": rows})
    atomic_write_text(job_dir / "leaderboard.html", leaderboard_html(rows, f"{job_dir.name}: leaderboard"))
    return rows
