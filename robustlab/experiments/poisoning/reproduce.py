"""`robustlab poison reproduce`: the poisoning reproductions, one section per module of ``SECTIONS``
(a section whose module is absent is skipped with one line). Each ``section(out, quick, seed, progress)``
returns ``{"markdown", "results", "figures"}``; this writes ``results.json``, ``results.md`` and
``report.html`` into the output folder. ``--quick`` is a seconds-to-minute smoke version."""
from __future__ import annotations

import importlib
import logging
import time
from datetime import date
from pathlib import Path

from pydantic import Field

from ...fileio import atomic_write_json, atomic_write_text
from ...settings import StrictSettings, add_model_arguments, settings_from_args

log = logging.getLogger(__name__)

__all__ = ["SECTIONS", "ReproduceSettings", "reproduce", "add_parser", "main"]

SECTIONS = {"backdoors": "robustlab.experiments.poisoning.repro_backdoors:section",
            "perturbation": "robustlab.experiments.poisoning.repro_perturbation:section",
            "detectors": "robustlab.experiments.poisoning.repro_detectors:section"}
TITLES = {"backdoors": "Backdoors", "perturbation": "Clean-label, gradient matching and delusive poisons",
          "detectors": "Detectors"}


class ReproduceSettings(StrictSettings):
    """What `robustlab poison reproduce` runs."""

    out: str = Field("runs/poison-reproduce", description="output folder")
    sections: list[str] = Field(list(SECTIONS), min_length=1, description="sections to run: " + ", ".join(SECTIONS))
    quick: bool = Field(False, description="the minute-scale smoke version (tiny sizes; not the reported numbers)")
    seed: int = Field(0, description="seed of the poisons and the victims")


def _load(name: str):
    module, _, func = SECTIONS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ImportError as e:
        if e.name != module:
            raise
        return None


def reproduce(s: ReproduceSettings, progress: bool = True) -> dict:
    """Run the chosen sections into ``s.out``; returns {section: its result}."""
    from ...errors import InputError
    from ...runs.report import write_page

    unknown = [n for n in s.sections if n not in SECTIONS]
    if unknown:
        raise InputError(f"--sections: unknown {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    out = Path(s.out)
    results, md, figures = {}, [], []
    for name in s.sections:
        section = _load(name)
        if section is None:
            print(f"{name}: skipped (its module is not installed in this version)")
            continue
        t0 = time.perf_counter()
        res = section(out, s.quick, s.seed, progress)
        results[name] = {**res["results"], "time_s": round(time.perf_counter() - t0, 1), "figures": res["figures"]}
        md += [f"## {TITLES[name]}", "", f"Measured {date.today().isoformat()} with `robustlab poison reproduce "
               f"--sections {name}{' --quick' if s.quick else ''} --seed {s.seed}` "
               f"({results[name]['time_s']:.0f} s).", "", res["markdown"], ""]
        figures += [str(Path(f).relative_to(out)) for f in res["figures"]]
    atomic_write_json(out / "results.json", {"quick": s.quick, "seed": s.seed, "sections": results})
    atomic_write_text(out / "results.md", "\n".join(md))
    write_page(out / "report.html", "poisoning reproduction", [("Results (markdown)", "\n".join(md))], [], figures)
    return results


def add_parser(subparsers):
    p = subparsers.add_parser("reproduce", help="reproduce the poisoning papers' numbers (docs/results/poisoning.md)",
                              description="Writes results.json, results.md, figures and report.html into --out.")
    add_model_arguments(p, ReproduceSettings)
    return p


def main(args) -> int:
    s = settings_from_args((ReproduceSettings,), args, "`robustlab poison reproduce` arguments")[ReproduceSettings]
    reproduce(s, progress=not args.no_progress)
    print(Path(s.out, "results.md").read_text())
    print(f"wrote {Path(s.out) / 'results.json'}, {Path(s.out) / 'results.md'} and {Path(s.out) / 'report.html'}")
    return 0
