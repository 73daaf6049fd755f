"""Human labels and units for the numbers on report pages, shared by every task's page.

A record keeps its machine keys (``success_rate``, ``cer_adv``, ``epe``); a page shows each as a label
with its unit ("attack success (%)", "EPE (px)", "time (s)") and a value formatted for it: fractions
in [0, 1] become percentages, pixel errors keep three decimals, times one. ``header`` names a table
column (unit in the header, plain numbers in the cells), ``cell`` formats a value with its unit (for
label / value tables) and ``rows`` builds such a table from the keys a record has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Label:
    """How one key is shown: `text`, its `unit` ("" for none), a `scale` applied to the stored value
    (100 turns a fraction into %) and the decimals kept."""
    text: str
    unit: str = ""
    scale: float = 1.0
    digits: int | None = 1  # None: shortest form ("0.03", "8")


_PCT = {"unit": "%", "scale": 100.0}

LABELS: dict[str, Label] = {
    # shared
    "n": Label("points", digits=0),
    "eps": Label("eps", digits=None),
    "time_s": Label("time", "s"),
    "seconds": Label("time", "s"),
    "train_time_s": Label("training time", "s"),
    "clean_accuracy": Label("clean accuracy", **_PCT),
    "robust_accuracy": Label("robust accuracy", **_PCT),
    "success_rate": Label("attack success, all points", **_PCT),
    "queries_median": Label("queries per success (median)", "queries", digits=0),
    "queries_mean": Label("queries per success (mean)", "queries", digits=0),
    "l2": Label("perturbation L2 (mean; pixel values in [0, 1])", digits=3),
    "linf": Label("perturbation Linf (mean; pixel values in [0, 1])", digits=3),
    "l0": Label("pixels changed (mean)", "pixels", digits=0),
    "in_mask": Label("perturbation inside the mask", **_PCT),
    # OCR
    "clean_correct": Label("lines read correctly when clean", digits=0),
    "success_rate_of_correct": Label("attack success, lines read correctly when clean", **_PCT),
    "cer_clean": Label("character error rate, clean", **_PCT),
    "cer_adv": Label("character error rate, attacked", **_PCT),
    "wer_clean": Label("word error rate, clean", **_PCT),
    "wer_adv": Label("word error rate, attacked", **_PCT),
    "line_accuracy": Label("lines read exactly", **_PCT),
    "cer": Label("character error rate", **_PCT),
    "wer": Label("word error rate", **_PCT),
    # stereo (EPE: mean |prediction - truth| over valid pixels; bad-k, D1: share of valid pixels off by more)
    "epe": Label("EPE", "px", digits=3),
    "bad1": Label("bad-1", **_PCT),
    "bad3": Label("bad-3", **_PCT),
    "d1": Label("D1", **_PCT),
}


def label(key: str) -> Label:
    """The label of `key`; an unknown key is shown with its underscores as spaces, without a unit."""
    return LABELS.get(key) or Label(key.replace("_", " "))


def header(key: str) -> str:
    """A column title: the label, then its unit in parentheses ("EPE (px)", "bad-3 (%)")."""
    lab = label(key)
    return f"{lab.text} ({lab.unit})" if lab.unit else lab.text


def value(key: str, v: Any) -> str:
    """`v` formatted for `key`, without its unit; "-" for a missing or undefined (NaN) number."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    lab = label(key)
    x = v * lab.scale
    if isinstance(v, int) and lab.scale == 1.0:
        return f"{v:,}"
    return f"{x:g}" if lab.digits is None else f"{x:,.{lab.digits}f}"


def cell(key: str, v: Any) -> str:
    """`v` with its unit, for a label / value table ("30.0%", "0.512 px", "4.2 s")."""
    text, unit = value(key, v), label(key).unit
    if text == "-" or not unit:
        return text
    return f"{text}%" if unit == "%" else f"{text} {unit}"


def rows(record: Mapping[str, Any], keys: Iterable[str]) -> list[list[str]]:
    """[label, value with unit] for each of `keys` the record has (in the order given)."""
    return [[label(k).text, cell(k, record[k])] for k in keys if k in record]


def count_of(k: int, n: int, noun: str) -> str:
    """"3 of 12 lines (25%)": a count with its denominator named; plurals right ("1 line")."""
    word = noun if n == 1 else noun + "s"
    share = f" ({100 * k / n:.0f}%)" if n else ""
    return f"{k} of {n} {word}{share}"
