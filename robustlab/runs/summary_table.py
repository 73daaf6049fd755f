"""The results table printed at the end of ``robustlab run``, ``robustlab evaluate`` and ``robustlab train``:
the report's summary as plain text, in aligned columns with rounded numbers.

``text_table`` is the one formatter; the rows come from what the commands' functions return (an evaluation's
dict, as ``evaluate_model_run`` returns it and ``evaluation.json`` holds it; a training run's summary), so the
printed table and the report show the same numbers:

    model  eps        clean (95% CI)       robust (95% CI)      suite  n    broken by             checks
    pgd    linf 0     97.0% [93.2, 98.7]   97.0% [93.2, 98.7]   fast   100  -                     -
    pgd    linf 0.1   97.0% [93.2, 98.7]   81.0% [72.2, 87.5]   fast   100  apgd-ce 15, apgd-t 1  ok

Accuracies are percentages with one decimal, their 95% Wilson score intervals in brackets (in percent).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from ..evaluation.suite import wilson_interval
from .report_summary import broken_by_text, cascade_order, shown_verdict

def text_table(columns: Sequence[tuple[str, Callable[[dict], str]]], rows: Sequence[dict]) -> str:
    """Rows as aligned plain text: a heading line, then one line per row (``columns``: heading, cell text)."""
    cells = [[h for h, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def percent_ci(x: float, ci: Sequence[float]) -> str:
    """``97.0% [93.2, 98.7]``: an accuracy and its 95% interval, in percent with one decimal."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def clean_ci(clean: float, n: int) -> list[float]:
    """The 95% Wilson interval of a clean accuracy measured on n points."""
    return list(wilson_interval(round(clean * n), n)) if n else [math.nan, math.nan]


def _broken_by(per_attack: dict, eps: float, order: list[str]) -> str:
    """The points each attack broke first, in cascade order, then those no attack was needed for (the
    report's words: ``apgd-ce 41, apgd-t 3; already wrong 12``); ``-`` at eps 0, where no attack runs."""
    return broken_by_text(per_attack, order) if per_attack and eps > 0 else "-"


def _checks(sanity: list | None) -> str:
    """The gradient-masking checks in one cell: ``ok``, or every check that did not pass with its verdict."""
    if not sanity:
        return "-"
    bad = [f"{shown_verdict(c)}: {c['name']}" for c in sanity if shown_verdict(c) in ("warn", "fail")]
    return "; ".join(bad) if bad else "ok"


def evaluation_rows(label: str, evaluation: dict) -> list[dict]:
    """One row per eps of an evaluation (its dict: ``norm``, ``attacks`` and the per-eps ``reports``)."""
    attacks = evaluation.get("attacks")
    suite = attacks if isinstance(attacks, str) else ",".join(map(str, attacks or []))
    rows, order = [], cascade_order(evaluation)
    for r in evaluation["reports"]:
        n, clean = r["n"], r["clean_accuracy"]
        rows.append({"model": label, "norm": r.get("norm", evaluation.get("norm")), "eps": r["eps"], "n": n,
                     "suite": suite, "clean_accuracy": clean, "clean_accuracy_ci95": clean_ci(clean, n),
                     "robust_accuracy": r["robust_accuracy"], "robust_accuracy_ci95": r["robust_accuracy_ci95"],
                     "broken_by": _broken_by(r.get("per_attack") or {}, r["eps"], order), "checks": _checks(r.get("sanity"))})
    return rows


#: the results table's columns (``#``, the leaderboard's rank, only where the rows have one)
RESULT_COLUMNS = (
    ("model", lambda r: str(r["model"])),
    ("eps", lambda r: f"{r['norm']} {r['eps']:g}"),
    ("clean (95% CI)", lambda r: percent_ci(r["clean_accuracy"], r["clean_accuracy_ci95"])),
    ("robust (95% CI)", lambda r: percent_ci(r["robust_accuracy"], r["robust_accuracy_ci95"])),
    ("suite", lambda r: str(r["suite"])),
    ("n", lambda r: str(r["n"])),
    ("broken by", lambda r: r["broken_by"]),
    ("checks", lambda r: r["checks"]),
)


def results_table(rows: Sequence[dict]) -> str:
    """Evaluation rows (``evaluation_rows``) as the printed results table; ranked rows get a ``#`` column."""
    ranked = rows and all("rank" in r for r in rows)
    columns = ((("#", lambda r: str(r["rank"])),) if ranked else ()) + RESULT_COLUMNS
    return text_table(columns, rows)


def _fraction(record: dict, key: str) -> str:
    v = record.get(key)
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def training_table(label: str, summary: dict, epochs: int | None = None) -> str:
    """A training run's results: its last epoch's clean and robust (PGD) accuracy on the validation split (on
    training points when it has none), the epochs run, the checkpoint kept and the training time."""
    final = summary.get("final") or {}
    split = "val" if "val_acc" in final else "train"
    done = final.get("epoch", "-")
    row = {"model": label, "epochs": f"{done}/{epochs}" if epochs else str(done),
           "best": str(summary.get("best_epoch", "-")), "time": f"{summary.get('train_time_s', math.nan):.1f}s"}
    columns = (("model", lambda r: r["model"]),
               (f"{split} clean", lambda r: _fraction(final, f"{split}_acc")),
               (f"{split} robust (PGD)", lambda r: _fraction(final, f"{split}_robust_acc")),
               ("epochs", lambda r: r["epochs"]), ("checkpoint epoch", lambda r: r["best"]),
               ("time", lambda r: r["time"]))
    return text_table(columns, [row])
