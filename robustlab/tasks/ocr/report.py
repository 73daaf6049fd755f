"""Figures and a small HTML page for OCR runs: clean and adversarial lines with both transcriptions,
and success-vs-queries curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ...runs import run_page_sections, write_run_page


def lines_figure(path: str | Path, x: torch.Tensor, x_adv: torch.Tensor, clean: Sequence[str], adv: Sequence[str],
                 n: int = 6, title: str = "") -> None:
    """Clean line over adversarial line, each titled with what the recogniser read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, x.shape[0])
    aspect = x.shape[-1] / x.shape[-2]
    fig, axes = plt.subplots(2 * n, 1, figsize=(min(2 + 0.5 * aspect, 14), 1.1 * 2 * n), squeeze=False)
    for i in range(n):
        for j, (img, txt, tag) in enumerate(((x[i], clean[i], "clean"), (x_adv[i], adv[i], "adversarial"))):
            ax = axes[2 * i + j, 0]
            ax.imshow(img[0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{tag}: {txt!r}", fontsize=8, loc="left")
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def success_curve(success: torch.Tensor, queries: torch.Tensor, marks: Sequence[int]) -> list[float]:
    n = max(success.numel(), 1)
    return [float((success & (queries <= m)).sum()) / n for m in marks]


def write_html(path: str | Path, title: str, tables: list[tuple[str, list[str], list[list[str]]]],
               figures: Sequence[str], notes: Sequence[str] = ()) -> None:
    """The page in the shared report style (``runs.write_run_page``); notes become sections."""
    write_run_page(path, title, [("notes", n) for n in notes], tables, figures)


report_sections = run_page_sections  # what ``robustlab report`` shows of an OCR run
