"""The detection report: clean and attacked images side by side with their boxes drawn (ground
truth dashed, detections solid, labelled with class and score), and tables in the shared page style."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ...runs import run_page_sections, write_run_page  # noqa: E402
from ...runs.report_figures import save_figure  # noqa: E402
from .boxes import Detections  # noqa: E402

COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")
#: the columns of every detection metrics table
HEADER = ["", "mAP@0.5", "mAP@[.5:.95]", "recall at score 0.5"]


def metric_rows(results: dict[str, dict]) -> list[list[str]]:
    return [[name, f"{m['map_50']:.3f}", f"{m['map']:.3f}", f"{100 * m['recall']:.1f}%"] for name, m in results.items()]


def _draw(ax, image: torch.Tensor, truth: Detections, dets: Detections, classes: Sequence[str], title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    for b, c in zip(truth.boxes.tolist(), truth.labels.tolist()):
        ax.add_patch(plt.Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ls="--", lw=1,
                                   ec="white"))
    for b, s, c in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
        colour = COLOURS[c % len(COLOURS)]
        ax.add_patch(plt.Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, lw=1.5, ec=colour))
        name = classes[c] if c < len(classes) else str(c)
        ax.text(b[0], b[1] - 1, f"{name} {s:.2f}", color=colour, fontsize=6, va="bottom",
                bbox={"fc": "black", "alpha": 0.4, "pad": 0.5, "lw": 0})
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def boxes_figure(path: Path, images: dict[str, torch.Tensor], detections: dict[str, Sequence[Detections]],
                 truth: Sequence[Detections], classes: Sequence[str], k: int = 4, title: str = "") -> None:
    """One row per version of the images (e.g. clean, attacked), ``k`` images per row, boxes drawn."""
    rows = list(images)
    k = min(k, len(truth))
    fig, axes = plt.subplots(len(rows), k, figsize=(2.2 * k, 2.4 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for i in range(k):
            dets = detections[name][i]
            _draw(axes[r, i], images[name][i], truth[i], dets, classes, f"{name}: {len(dets)} detections")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def write_report(path: Path, title: str, sections, tables, figures) -> None:
    """The run's page in the shared report style (``runs.write_run_page``)."""
    write_run_page(path, title, sections, tables, figures)


report_sections = run_page_sections  # what ``robustlab report`` shows of a detection run
