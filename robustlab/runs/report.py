"""Static HTML reports of one or several runs side by side (Jinja2 template, matplotlib figures)."""
from __future__ import annotations

import contextlib
import html
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, make_dirs
from ..taskspec import get_task, run_task
from ..weights import check_utf8_path
from .report_figures import curve_figure, examples_figure, flipped, model_colours, save_figure, training_figure
from .report_summary import anchor, broken_by, cascade_order, examples_note, plural, report_warnings, shown_verdict, suite_label
from . import evaluations
from .rundir import Run


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:.6em;font-size:12px;"
         "overflow:auto}.warn{color:#a40}.note{color:#555;font-size:13px}img{max-width:100%}figure{margin:1em 0}")


# ----- reading a run's files: anything corrupt or foreign is one InputError naming the file ----------
Number = Union[StrictFloat, StrictInt]


class _Loose(BaseModel):
    """The keys the report uses, type-checked; the others are kept as they are."""
    model_config = ConfigDict(extra="allow")


class _ConfigShape(_Loose):
    kind: Optional[StrictStr] = None
    task: Optional[StrictStr] = None
    train: dict[str, Any] = {}
    environment: dict[str, Any] = {}


class _SummaryShape(_Loose):
    n_parameters: Optional[StrictInt] = None
    train_time_s: Optional[Number] = None
    best_epoch: Optional[StrictInt] = None
    catastrophic_overfitting_epoch: Optional[StrictInt] = None


class _EvaluationRow(_Loose):
    eps: Number
    n: StrictInt
    clean_accuracy: Number
    robust_accuracy: Number
    robust_accuracy_ci95: tuple[Number, Number]
    per_attack: dict[str, Any]
    time_s: Number
    sanity: Optional[list[dict[str, Any]]] = None


class _EvaluationShape(_Loose):
    norm: StrictStr
    reports: list[_EvaluationRow]


class _EpochShape(_Loose):
    epoch: Number
    train_acc: Number
    train_robust_acc: Number


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what a corrupt or foreign run file raises while it is read or used into one InputError naming it."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, yaml.YAMLError,
            pickle.UnpicklingError, RuntimeError) as e:
        if isinstance(e, InputError):
            raise
        detail = _first_line(e)
        raise InputError(f"{path} is corrupt or not a file robustlab wrote ({type(e).__name__}: {detail}); "
                         "rewrite it with the robustlab command that makes it, or remove it") from None


def _first_line(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        return f"{'.'.join(map(str, first['loc'])) or 'top level'}: {first['msg']}"
    if isinstance(e, pickle.UnpicklingError):
        return "it holds Python objects other than tensors, refused without loading them (that could run code)"
    text = "".join(c for c in (str(e).strip().splitlines() or [""])[0] if c.isprintable())
    return text if len(text) <= 120 else text[:117] + "..."


def _checked(path: Path, value: Any, shape: type[BaseModel]) -> Any:
    """`value` (read from `path`), unchanged, once it has `shape`."""
    with _reading(path):
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping at the top level, got {type(value).__name__}")
        shape.model_validate(value)
    return value


def _read_json(path: Path, shape: type[BaseModel] = _Loose, default: Any = None) -> Any:
    """The JSON object in `path` (`default` when there is none), checked against `shape`."""
    if not path.exists():
        return default
    with _reading(path):
        value = json.loads(path.read_text(encoding="utf-8"))
    return _checked(path, value, shape)


def read_run_config(run: Run) -> dict:
    """A run's ``config.yaml`` as the report uses it ({} when there is none); InputError naming the file
    when it is corrupt (YAML, UTF-8) or foreign (not a mapping, mistyped keys)."""
    path = run.path / "config.yaml"
    with _reading(path):
        cfg = run.read_config()
    return _checked(path, cfg, _ConfigShape) if path.exists() else {}


def _read_examples(path: Path) -> dict | None:
    """``examples.pt`` (tensors only: ``weights_only``), checked to hold clean and adversarial images."""
    if not path.exists():
        return None
    with _reading(path):
        ex = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ex, dict):
            raise TypeError(f"expected a dict of tensors, got {type(ex).__name__}")
        x, x_adv = ex.get("x"), ex.get("x_adv")
        if x is not None and x.numel():
            k = x.shape[0]
            if x.dim() != 4 or x_adv.shape != x.shape or len(ex["y"]) < k or len(ex["pred_adv"]) < k:
                raise ValueError("x, x_adv, y and pred_adv do not match (expected [k, C, H, W] images and k labels)")
            float(ex["eps"])
    return ex


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _figure_html(f: str) -> str:
    """An image, or an audio file (by its suffix) as a captioned HTML ``<audio>`` player."""
    name = html.escape(Path(f).stem)
    if f.lower().endswith(AUDIO_SUFFIXES):
        return f"<figure><figcaption>{name}</figcaption><audio controls preload='none' src='{html.escape(f)}'></audio></figure>"
    return f"<figure><img src='{html.escape(f)}' alt='{name}'></figure>"


def page_html(title: str, sections: list[tuple[str, str]], tables: list[tuple[str, list[str], list[list[str]]]],
              figures: list[str], metadata: dict | None = None) -> str:
    """One report page in the shared style: free-text sections, tables (caption, header, rows),
    figures (paths relative to the page, shown at full width; audio files as players) and the run's metadata."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>robustlab report: {html.escape(title)}</h1>"]
    for head, text in sections:
        parts.append(f"<h2>{html.escape(head)}</h2><p>{html.escape(text)}</p>")
    for caption, header, rows in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2><table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
                     + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [_figure_html(f) for f in figures]
    if metadata:
        parts.append("<h2>Configuration</h2><details><summary>config</summary><pre>"
                     + html.escape(yaml.safe_dump(metadata, sort_keys=False)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_page(path: str | Path, title: str, sections, tables, figures, metadata: dict | None = None) -> Path:
    """Write ``page_html(...)`` atomically to `path`."""
    atomic_write_text(Path(path), page_html(title, sections, tables, figures, metadata))
    return Path(path)


def write_run_page(path: str | Path, title: str, sections, tables, figures) -> Path:
    """A task run's page in the shared style, plus ``report.json`` (its sections, tables and figures),
    which ``robustlab report`` reads back (``run_page_sections``) to put the run beside others."""
    path = Path(path)
    atomic_write_json(path.parent / "report.json", {"title": title, "sections": list(sections), "tables": list(tables),
                                                    "figures": list(figures)})
    config = read_run_config(Run(path.parent, create=False))
    return write_page(path, title, sections, tables, list(figures), {k: v for k, v in config.items() if k != "environment"})


def run_page_sections(run_path: str | Path) -> tuple[list, list, list]:
    """(sections, tables, figures) a task run stored with ``write_run_page``; empty if it stored none."""
    f = Path(run_path) / "report.json"
    d = _read_json(f)
    if d is None:
        return [], [], []
    with _reading(f):
        return [tuple(x) for x in d["sections"]], [tuple(t) for t in d["tables"]], list(d["figures"])


def _has_report_hook(cfg: dict) -> bool:
    """A run of a task with its own report hook (stereo, OCR); the others are model runs and jobs
    (``robustlab train`` / ``run``), which share the full model report."""
    return get_task(run_task(cfg)).report_sections is not None


def _task_entry(run: Run, cfg: dict) -> dict:
    """A run of a task plug-in with a report hook (``_has_report_hook``): its tables come from the task's
    ``report_sections``."""
    task = get_task(run_task(cfg))
    sections, tables, figures = task.report_sections(run.path)
    return {"label": run.name, "task": task.name, "sections": sections, "tables": tables,
            "figures": [str((run.path / f).resolve()) for f in figures], "config": cfg}


def collect_model_runs(paths: list[str | Path]) -> list[dict]:
    """Every model run under the given run directories (a job contributes all its models)."""
    found = []
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"no run directory at {p}")
        check_utf8_path(Path(p))
        run = Run(p, create=False)
        cfg = read_run_config(run)
        if _has_report_hook(cfg):
            continue
        if cfg.get("kind") == "job":
            subs = sorted((run.path / "models").glob("*")) if (run.path / "models").exists() else []
            found += [_model_entry(Run(s, create=False), f"{run.name}/{s.name}" if len(paths) > 1 else s.name,
                                   cfg.get("evaluation")) for s in subs if s.is_dir()]
        elif cfg.get("kind") == "model":
            found.append(_model_entry(run, run.name))
        else:
            raise InputError(f"{p} has no robustlab config.yaml; is it a run directory?")
    return found


def _ci(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def _representation_rows(run_path: Path) -> list[tuple[str, str]]:
    """(analysis, value) pairs of a run's ``representations.json`` (``robustlab represent``), in a fixed order."""
    f = Path(run_path) / "representations.json"
    d = _read_json(f, default={})
    with _reading(f):
        return _representation_table(d.get("analyses", {}))


def _representation_table(a: dict) -> list[tuple[str, str]]:
    rows = []
    for method, v in a.get("alignment", {}).items():
        if isinstance(v, dict) and "alignment" in v:
            rows.append((f"alignment ({method})", _ci(v["alignment"])))
            if v.get("edge_correlation"):
                rows.append((f"edge correlation ({method})", _ci(v["edge_correlation"])))
    if "probe" in a:
        p = a["probe"]
        rows.append((f"linear probe ({p.get('task', '')})", f"{p['accuracy']:.3f}"))
        if p.get("finetune_accuracy") is not None:
            rows.append((f"fine-tuned ({p.get('task', '')})", f"{p['finetune_accuracy']:.3f}"))
    for other, v in a.get("cka", {}).get("vs_runs", {}).items():
        rows.append((f"CKA vs {other}", f"{v:.3f}"))
    inv = a.get("inversion", {})
    if "from_noise" in inv:
        rows.append(("inversion distance (from noise)", f"{inv['from_noise'].get('distance_mean', float('nan')):.3f}"))
        rows.append(("inversion classified as target", f"{inv['from_noise'].get('classified_as_target', float('nan')):.2f}"))
    if "synthesis" in inv:
        rows.append(("synthesis success", f"{inv['synthesis'].get('success_rate', float('nan')):.2f}"))
    interp = a.get("interpolation", {})
    if interp.get("success_rate"):
        rows.append((f"interpolation success (L2 eps={interp['eps'][-1]:g})", f"{interp['success_rate'][-1]:.2f}"))
    m = a.get("manifold", {})
    if "on_manifold_robust_acc" in m:
        vae = "class-conditional" if m.get("conditional_vae") else "unconditional"
        rows.append((f"on-manifold robust acc ({vae} VAE, eta={m['eta']:g})", f"{m['on_manifold_robust_acc']:.3f}"))
        rows.append((f"off-manifold robust acc ({m['norm']} {m['eps']:g})", f"{m['off_manifold_robust_acc']:.3f}"))
    return rows


def representation_comparison(entries: list[dict], assets: "_Assets") -> dict | None:
    """Standard vs robust side by side: one table (analysis x run) of every run's ``represent``
    numbers, and per figure kind (repr-saliency.png, ...) one row of the runs' images; None when
    fewer than two runs hold representation analyses."""
    runs = [(e["label"], Path(e["run"].path)) for e in entries]
    per_run = [(label, dict(_representation_rows(path)), path) for label, path in runs]
    per_run = [r for r in per_run if r[1]]
    if len(per_run) < 2:
        return None
    names: list[str] = []
    for _, rows, _ in per_run:
        names += [k for k in rows if k not in names]
    table = [[n, *(rows.get(n, "-") for _, rows, _ in per_run)] for n in names]
    kinds = sorted({f.name for _, _, path in per_run for f in (path / "figures").glob("repr-*.png")})
    figures = [[k, [assets.run_figure(path / "figures" / k, label) if (path / "figures" / k).exists() else None
                    for label, _, path in per_run]] for k in kinds]
    return {"labels": [label for label, _, _ in per_run], "rows": table, "figures": figures}


def _analysis_tables(run: Run) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables of the analyses a run holds (``robustlab landscape`` and ``robustlab represent``)."""
    tables = []
    for name in ("geometry.json", "geometry_robust.json"):
        f = run.path / name
        d = _read_json(f)
        if d is not None:
            with _reading(f):
                tables.append(_geometry_table(d))
    rows = [list(r) for r in _representation_rows(run.path)]
    if rows:
        tables.append(("representations", ["analysis", "value"], rows))
    return tables


def _geometry_table(d: dict) -> tuple[str, list[str], list[list[str]]]:
    """The table of one ``geometry*.json`` (``robustlab landscape``)."""
    rows = [[k, f"{v:.4g}" if isinstance(v, (int, float)) else str(v)] for k, v in sorted(d.get("scalars", {}).items())]
    rows += [[k, f"{v:.4g}"] for k, v in sorted(d.get("gaps", {}).items()) if isinstance(v, (int, float))]
    n = d.get("n")
    points = plural(n, "point") if isinstance(n, int) else "? points"
    return (f"loss-landscape geometry ({d.get('loss', 'clean')} loss, {points})", ["measure", "value"], rows)


def _analysis_figures(run: Run) -> list[Path]:
    figs = run.path / "figures"
    if not figs.is_dir():
        return []
    return sorted([*figs.glob("geometry_*.png"), *figs.glob("repr-*.png")])


def _model_entry(run: Run, label: str, settings: dict | None = None) -> dict:
    """A model run's files as the report uses them, each checked (one InputError naming a corrupt or
    foreign file). Its evaluation is the one made with `settings` (a job's), else the run's default
    (``evaluations.chosen_evaluation``); the others are listed in ``other_evaluations``."""
    check_utf8_path(run.path)
    shown = evaluations.chosen_evaluation(run.path, settings)
    return {
        "label": label, "run": run, "config": read_run_config(run),
        "summary": _read_json(run.path / "summary.json", _SummaryShape, default={}),
        "epochs": _epoch_records(run),
        "evaluation": _read_json(shown.record_path, _EvaluationShape) if shown else None,
        "evaluation_path": shown.record_path if shown else run.path / "evaluation.json",
        "examples": _read_examples(shown.examples_path) if shown else None,
        "other_evaluations": [_other_row(label, ev) for ev in evaluations.others(run.path, shown)],
        "analysis_tables": _analysis_tables(run), "analysis_figures": _analysis_figures(run),
    }


def _other_row(label: str, ev: "evaluations.StoredEvaluation") -> list[str]:
    """A row of the "other evaluations" table: model, suite and n, norm, robust accuracy at each eps, folder."""
    rec = _checked(ev.record_path, ev.record, _EvaluationShape)
    curve = ", ".join(f"{r['eps']:g}: {100 * r['robust_accuracy']:.1f}%" for r in rec["reports"])
    return [label, ev.label(), rec["norm"], str(rec.get("weights", "-")), curve, ev.name]


def _epoch_records(run: Run) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (checked to hold the numbers the training figure plots)."""
    epochs = [m for m in run.read_metrics() if isinstance(m, dict) and m.get("kind") == "epoch"]
    return [_checked(run.metrics_path, m, _EpochShape) for m in epochs]


# ----- the page --------------------------------------------------------------------------------------
def _output_paths(paths: list[str | Path], out: str | Path) -> tuple[Path, Path, bool]:
    """(the page, its figures folder, whether figures from the runs are copied into it).
    In place (the page inside one of the runs, the default): the run's ``figures/``, the runs' own
    figures referenced where they are. Elsewhere: self-contained, ``page.html`` with ``page_files/``
    beside it (an existing folder given as `out`: ``report.html`` with ``figures/`` inside it)."""
    out = Path(out)
    if out.is_dir():  # -o <folder>: the page and its figures go inside it
        return out / "report.html", out / "figures", True
    in_run = any(Path(p).resolve() == out.parent.resolve() for p in paths)
    return out, out.parent / ("figures" if in_run else f"{out.stem}_files"), not in_run


class _Assets:
    """The page's figures: drawn into its folder, or taken from the runs (copied in when self-contained)."""

    def __init__(self, out: Path, folder: Path, copy: bool):
        self.out, self.folder, self.copy, self.made = out, folder, copy, False

    def path(self, name: str) -> Path:
        if not self.made:
            make_dirs(self.folder)
            self.made = True
        return self.folder / name

    def link(self, path: Path) -> str:
        """`path` relative to the page."""
        return Path(os.path.relpath(Path(path).resolve(), self.out.parent.resolve())).as_posix()

    def run_figure(self, src: Path, prefix: str) -> str:
        """A figure a run holds, as the page links it (a copy inside the page's folder when self-contained)."""
        if not self.copy:
            return self.link(src)
        dst = self.folder / prefix / src.parent.name / src.name  # <run label>/figures/<name>
        make_dirs(dst.parent)
        atomic_write_bytes(dst, Path(src).read_bytes())
        return self.link(dst)


def _draw_figures(entries: list[dict], assets: _Assets) -> dict:
    """The page's figures (training curves, robustness curve, each model's examples), one colour per model."""
    colours = model_colours([e["label"] for e in entries])
    for e in entries:
        if e["evaluation"]:
            e["curve_label"] = f"{e['label']} ({suite_label(e['evaluation'])})"
    figures = {}
    for key, name, fig in (("training", "training_curves.png", training_figure(entries, colours)),
                           ("curve", "robustness_curve.png", curve_figure(entries, colours))):
        if fig is not None and save_figure(fig, assets.path(name)):
            figures[key] = assets.link(assets.path(name))
    for e in entries:
        with _reading(e["run"].path / "examples.pt"):
            ex = e["examples"]
            keep = flipped(ex) if ex and ex.get("x") is not None and ex["x"].numel() else []
            name = f"examples_{e['label'].replace('/', '_')}.png"
            fig = examples_figure(e["label"], ex, keep) if keep else None
        e["examples_shown"] = len(keep)
        e["examples_fig"] = assets.link(assets.path(name)) if fig is not None and save_figure(fig, assets.path(name)) else None
        with _reading(e["evaluation_path"]):
            e["examples_note"] = examples_note(e)
    return figures


def _page_entry(e: dict, assets: _Assets) -> None:
    """What the template shows of a model besides its files: suite and n, the cascade, the verdicts, the config."""
    e["analysis_figs"] = [assets.run_figure(f, e["label"]) for f in e["analysis_figures"]]
    e["config_yaml"] = yaml.safe_dump({k: v for k, v in e["config"].items() if k != "environment"}, sort_keys=False)
    e["environment"] = e["config"].get("environment", {})
    e["anchors"] = {k: anchor(k, e["label"]) for k in ("checks", "examples", "model")}
    if e["evaluation"]:
        ev = e["evaluation"]
        e["suite"] = suite_label(ev)
        order = cascade_order(ev)
        for r in ev["reports"]:
            r["broken_attacks"], r["broken_before"] = broken_by(r["per_attack"], order)
            for c in r.get("sanity") or []:
                c["shown_verdict"] = shown_verdict(c)
                c["shown_message"] = str(c.get("message", "")).removeprefix("skipped: ")
            verdicts = [c["shown_verdict"] for c in r.get("sanity") or []]
            r["verdict_counts"] = ", ".join(f"{verdicts.count(v)} {v}" for v in ("fail", "warn", "pass", "not run")
                                            if v in verdicts)
            r["checks_warn"] = any(v in ("warn", "fail") for v in verdicts)


def render_report(paths: list[str | Path], out: str | Path) -> Path:
    """Render the runs in `paths` side by side into the HTML file `out`: in place (inside a run: figures
    in its ``figures/``), or self-contained elsewhere (``page.html`` and ``page_files/``; an existing
    folder `out` gets ``report.html`` and ``figures/`` inside it).
    Classification model runs and jobs share the full report; runs of other tasks (stereo, OCR)
    are rendered by their task's report hook, in the same style, on the same page."""
    out, folder, copy = _output_paths(paths, out)
    assets = _Assets(out, folder, copy)
    task_runs = []
    for p in paths:
        if Path(p).exists() and (Path(p) / "config.yaml").exists():
            check_utf8_path(Path(p))
            cfg = read_run_config(Run(p, create=False))
            if _has_report_hook(cfg):
                task_runs.append(_task_entry(Run(p, create=False), cfg))
    entries = collect_model_runs(paths)
    if task_runs and not entries:
        return _render_task_runs(task_runs, out, assets)
    if not entries:
        raise InputError(f"no model runs found in {[str(p) for p in paths]}")
    figures = _draw_figures(entries, assets)
    for e in entries:
        with _reading(e["evaluation_path"]):  # a foreign record: one line naming it
            _page_entry(e, assets)
    suites = {e["suite"] for e in entries if e["evaluation"]}
    eps_all = sorted({r["eps"] for e in entries if e["evaluation"] for r in e["evaluation"]["reports"]})
    env = Environment(loader=PackageLoader("robustlab.runs", "templates"), autoescape=select_autoescape(["html", "j2"]))
    others = [row for e in entries for row in e["other_evaluations"]]
    page = env.get_template("report.html.j2").render(
        entries=entries, figures=figures, eps_all=eps_all, warnings=report_warnings(entries), others=others,
        common_suite=suites.pop() if len(suites) == 1 else None, plural=plural,
        representations=representation_comparison(entries, assets),
        title=", ".join(html.escape(str(Path(p).name)) for p in paths))
    atomic_write_text(out, page)
    return out


def _render_task_runs(entries: list[dict], out: Path, assets: _Assets) -> Path:
    sections, tables, figures = [], [], []
    for e in entries:
        sections += [(f"{e['label']} ({e['task']}): {h}", t) for h, t in e["sections"]]
        tables += [(f"{e['label']}: {c}", h, r) for c, h, r in e["tables"]]
        figures += [assets.run_figure(Path(f), e["label"]) for f in e["figures"]]
    meta = {e["label"]: {k: v for k, v in e["config"].items() if k != "environment"} for e in entries}
    return write_page(out, ", ".join(e["label"] for e in entries), sections, tables, figures, meta)
