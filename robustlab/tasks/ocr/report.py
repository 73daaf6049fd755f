"""Figures and a small HTML page for OCR runs: clean and adversarial lines with both transcriptions,
and success-vs-queries curves.

The attack page (``write_attack_page``) is in the summary style of every task's page: one sentence that
names its denominators, a table of human labels with units (``runs.labels``), success within the
query budgets up to the attack's own, and the lines that flipped, each marked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ...runs import run_page_sections, write_run_page
from ...runs import labels
from ...runs.report_figures import save_figure
from ...runs.rundir import Run

#: lines shown as examples on the attack page
EXAMPLES = 6


def lines_figure(path: str | Path, x: torch.Tensor, x_adv: torch.Tensor, clean: Sequence[str], adv: Sequence[str],
                 n: int = 6, title: str = "", rows: Sequence[int] | None = None, marks: Sequence[str] | None = None) -> None:
    """Clean line over adversarial line, each titled with what the recogniser read: the lines `rows`
    (default: the first `n`), the adversarial one marked with ``marks[k]`` (e.g. "flipped") when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(range(min(n, x.shape[0]))) if rows is None else list(rows)
    n = len(rows)
    aspect = x.shape[-1] / x.shape[-2]
    fig, axes = plt.subplots(2 * n, 1, figsize=(min(2 + 0.5 * aspect, 14), 1.1 * 2 * n), squeeze=False)
    for k, i in enumerate(rows):
        adv_tag = "adversarial" if marks is None else f"line {i}, attacked ({marks[k]})"
        clean_tag = "clean" if marks is None else f"line {i}, clean"
        for j, (img, txt, tag) in enumerate(((x[i], clean[i], clean_tag), (x_adv[i], adv[i], adv_tag))):
            ax = axes[2 * k + j, 0]
            ax.imshow(img[0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{tag}: {txt!r}", fontsize=8, loc="left")
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=110)


def curves_figure(path: str | Path, curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str = "") -> None:
    """Success rate vs queries, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (q, s) in curves.items():
        ax.plot(q, s, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("queries per line")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=110)


def success_curve(success: torch.Tensor, queries: torch.Tensor, marks: Sequence[int]) -> list[float]:
    n = max(success.numel(), 1)
    return [float((success & (queries <= m)).sum()) / n for m in marks]


def write_html(path: str | Path, title: str, tables: list[tuple[str, list[str], list[list[str]]]],
               figures: Sequence[str], notes: Sequence[str] = ()) -> None:
    """The page in the shared report style (``runs.write_run_page``); notes become sections."""
    write_run_page(path, title, [("notes", n) for n in notes], tables, figures)


def flipped_lines(success: torch.Tensor, texts: dict) -> list[bool]:
    """Per line: read correctly when clean and then broken by the attack (untargeted: read differently;
    targeted: read as the wanted text). Lines misread when clean count as successes in the record's
    ``success_rate`` but never as flipped."""
    return [bool(s) and c == t for s, c, t in zip(success.tolist(), texts["clean"], texts["truth"])]


def _plural(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def attack_headline(setting: dict, metrics: dict, flipped: Sequence[bool]) -> str:
    """One sentence that says what the success rate is a share of, e.g. "square on tesseract: 3 of the
    4 lines read correctly when clean flipped (75%); 4 of all 10 lines (40%) were read correctly when clean"."""
    n, c, k = metrics["n"], metrics["clean_correct"], sum(flipped)
    what = f"{setting['attack']} on {setting['target']}"
    verb = "now read differently" if setting["goal"] == "untargeted" else "now read as the wanted text"
    if c == 0:
        return f"{what}: none of the {_plural(n, 'line')} was read correctly when clean, so none could flip."
    return (f"{what}: attack success {100 * k / c:.0f}% of the {_plural(c, 'line')} read correctly when clean "
            f"({k} {verb}); they are {labels.count_of(c, n, 'line')} attacked. Character error rate "
            f"{labels.cell('cer_clean', metrics['cer_clean'])} clean, {labels.cell('cer_adv', metrics['cer_adv'])} attacked.")


def attack_summary_rows(setting: dict, metrics: dict, flipped: Sequence[bool]) -> list[list[str]]:
    """The summary table: the attack, the lines and their denominators, then the numbers with units."""
    black_box = "success_at" in metrics
    how = f"{setting['attack']}, {setting['goal']}, {setting['norm']} eps {setting['eps']:g}, mask {setting['mask']}"
    rows = [["recogniser attacked", setting["target"]], ["attack", how],
            ["query budget per line" if black_box else "attack steps",
             f"{setting['budget']:,}" if black_box else f"{setting['steps']:,}"],
            ["lines attacked", f"{metrics['n']:,} ({setting['data']})"],
            ["lines read correctly when clean", labels.count_of(metrics["clean_correct"], metrics["n"], "line")],
            ["lines flipped by the attack", labels.count_of(sum(flipped), metrics["clean_correct"], "line")]]
    keys = ["cer_clean", "cer_adv", "wer_clean", "wer_adv", "queries_median", "queries_mean", "l2", "linf", "l0"]
    keys += ["in_mask"] if setting["mask"] != "whole" else []
    return rows + labels.rows(metrics, keys + ["time_s"])


def budget_rows(metrics: dict, success: torch.Tensor, queries: torch.Tensor, flipped: Sequence[bool]) -> list[list[str]]:
    """Lines flipped within each query budget the record holds (those up to the attack's own budget)."""
    done = torch.tensor(list(flipped), dtype=torch.bool) & success.bool().cpu()
    c = metrics["clean_correct"]
    return [[f"{int(q):,}", labels.count_of(int((done & (queries.cpu() <= int(q))).sum()), c, "line")]
            for q in metrics.get("success_at", {})]


def _result(i: int, flipped: Sequence[bool], texts: dict) -> str:
    if flipped[i]:
        return "flipped"
    return "not flipped" if texts["clean"][i] == texts["truth"][i] else "misread when clean"


def example_lines(flipped: Sequence[bool], texts: dict, k: int = EXAMPLES) -> tuple[list[int], str]:
    """The lines shown and a note: the first `k` that flipped; if none did, say so and show the first
    lines read correctly when clean (or the first lines), each marked."""
    shown = [i for i, f in enumerate(flipped) if f][:k]
    total = sum(flipped)
    if shown:
        if total == 1:
            return shown, "the line that flipped"
        return shown, (f"the {total} lines that flipped" if len(shown) == total else
                       f"the first {len(shown)} of the {total} lines that flipped")
    correct = [i for i, (c, t) in enumerate(zip(texts["clean"], texts["truth"])) if c == t]
    shown = (correct or list(range(len(flipped))))[:k]
    return shown, f"no line flipped; {_plural(len(shown), 'line')} shown as the attack left them"


def write_attack_page(run: Run, setting: dict, x: torch.Tensor, res, metrics: dict, flipped: Sequence[bool]) -> str:
    """``figures/lines.png`` and ``report.html`` of an OCR attack run; returns the headline."""
    texts = res.texts
    shown, note = example_lines(flipped, texts)
    marks = [_result(i, flipped, texts) for i in shown]
    lines_figure(run.figures / "lines.png", x.cpu(), res.x_adv.cpu(), texts["clean"], texts["adversarial"], rows=shown,
                 marks=marks, title=f"{setting['attack']} on {setting['target']}, {setting['norm']} eps={setting['eps']:g}, "
                                    f"mask {setting['mask']}")
    headline = attack_headline(setting, metrics, flipped)
    tables = [("the attack and its numbers", ["", "value"], attack_summary_rows(setting, metrics, flipped))]
    if "success_at" in metrics:
        tables.append(("lines flipped within a query budget", ["queries per line, at most",
                                                                "flipped, of the lines read correctly when clean"],
                       budget_rows(metrics, res.success, res.queries, flipped)))
    tables.append((f"example lines: {note}", ["line", "truth", "read clean", "read attacked", "result"],
                   [[str(i), texts["truth"][i], texts["clean"][i], texts["adversarial"][i], m] for i, m in zip(shown, marks)]))
    write_run_page(run.path / "report.html", f"OCR attack {run.name}", [("summary", headline)],
                   tables, ["figures/lines.png"])
    return headline


report_sections = run_page_sections  # what ``robustlab report`` shows of an OCR run
