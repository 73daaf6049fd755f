"""Figures of geometry results (matplotlib, Agg): 1-D curves, contour and 3-D surface, spectral
density, trajectory on the loss contour, and an animated trajectory (GIF via PillowWriter)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _plt().close(fig)
    return path


def plot_curves(curves: dict[str, "Surface"], path, xlabel: str = "alpha") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, s in curves.items():
        ax.plot(s.xs.tolist(), s.losses.tolist(), marker=".", label=label)
    ax.set_xlabel(xlabel), ax.set_ylabel("loss"), ax.legend(fontsize=8)
    return _save(fig, path)


def plot_contour(surface, path, path_xy: torch.Tensor | None = None, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    X, Y = torch.meshgrid(surface.xs, surface.ys, indexing="xy")
    cs = ax.contour(X.numpy(), Y.numpy(), surface.losses.numpy(), levels=20, cmap="viridis")
    ax.clabel(cs, fontsize=6)
    if path_xy is not None:
        ax.plot(path_xy[:, 0].tolist(), path_xy[:, 1].tolist(), "o-", color="C3", ms=3)
        ax.plot([float(path_xy[-1, 0])], [float(path_xy[-1, 1])], "*", color="k", ms=10)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_surface3d(surface, path, title: str = "") -> Path:
    plt = _plt()
    fig = plt.figure(figsize=(5, 4))
    ax = fig.add_subplot(projection="3d")
    X, Y = torch.meshgrid(surface.xs, surface.ys, indexing="xy")
    ax.plot_surface(X.numpy(), Y.numpy(), surface.losses.numpy(), cmap="viridis", linewidth=0)
    ax.set_title(title, fontsize=9), ax.set_zlabel("loss")
    return _save(fig, path)


def plot_density(densities: dict[str, "SpectralDensity"], path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, d in densities.items():
        ax.semilogy(d.grid.tolist(), (d.density + 1e-12).tolist(), label=label)
    ax.set_xlabel("eigenvalue"), ax.set_ylabel("density"), ax.legend(fontsize=8)
    return _save(fig, path)


def animate_trajectory(surface, coords: torch.Tensor, path, fps: int = 4, labels: Sequence[str] | None = None) -> Path:
    """A GIF of the path growing over the loss contour of its PCA plane."""
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(4.5, 4))
    X, Y = torch.meshgrid(surface.xs, surface.ys, indexing="xy")
    ax.contour(X.numpy(), Y.numpy(), surface.losses.numpy(), levels=20, cmap="viridis")
    (line,) = ax.plot([], [], "o-", color="C3", ms=3)
    text = ax.set_title("")

    def frame(i):
        line.set_data(coords[:i + 1, 0].tolist(), coords[:i + 1, 1].tolist())
        text.set_text(labels[i] if labels else f"snapshot {i}")
        return line, text

    anim = FuncAnimation(fig, frame, frames=len(coords), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    anim.save(tmp, writer=PillowWriter(fps=fps))
    tmp.replace(path)
    plt.close(fig)
    return path
