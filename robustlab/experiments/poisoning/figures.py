"""Figures of the poisoning reports (matplotlib, Agg; written atomically): triggered examples, and the
attack-success rate against the poison rate."""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["triggered_examples", "asr_against_rate"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from ...runs.report_figures import save_figure

    save_figure(fig, Path(path), dpi=110)
    return Path(path)


def _image(ax, x: torch.Tensor, title: str) -> None:
    img = x.detach().cpu().clamp(0, 1)
    ax.imshow(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def triggered_examples(rows: list[tuple[str, torch.Tensor, torch.Tensor, list[str]]], path) -> Path:
    """One row per attack: ``(label, clean [k, C, H, W], triggered [k, C, H, W], titles of the triggered)``;
    each clean image beside its triggered copy."""
    plt = _plt()
    k = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), 2 * k, figsize=(1.3 * 2 * k, 1.5 * len(rows)), squeeze=False)
    for i, (label, clean, triggered, titles) in enumerate(rows):
        for j in range(k):
            a, b = axes[i][2 * j], axes[i][2 * j + 1]
            if j >= len(clean):
                a.axis("off"), b.axis("off")
                continue
            _image(a, clean[j], f"{label}: clean" if j == 0 else "clean")
            _image(b, triggered[j], titles[j] if j < len(titles) else "triggered")
    return _save(fig, path)


def asr_against_rate(curves: dict[str, list[tuple[float, float]]], path, title: str = "") -> Path:
    """ASR (y) against the poison rate (x, log scale) for each attack: ``{label: [(rate, asr), ...]}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log"), ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("poison rate"), ax.set_ylabel("attack-success rate"), ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
