"""Large-eps targeted attacks as class interpolation (Tsipras et al. 2019), and image grids.

For a robust model, a targeted L2 attack with a growing radius morphs the image into the target
class (perceptually aligned gradients); for a standard model the image barely changes while its
class flips. ``class_interpolation`` returns one frame per eps (a strip), the target probability
and success per frame; ``save_grid`` writes any grid of images as a PNG.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD
from ..errors import InputError
from ..fileio import atomic_write_bytes
from ..objectives import TargetedCE
from ..threat import ThreatModel
from ..runtime import eval_mode


def class_interpolation(model: nn.Module, x: torch.Tensor, target_class, eps: Sequence[float],
                        steps: int = 40, rel_step_size: float = 2.5, seed: int = 0) -> dict:
    """Targeted L2 PGD on CE towards ``target_class`` at each radius in ``eps`` (from the clean image).

    Each radius is a separate run of ``steps`` steps of size ``rel_step_size * eps / steps`` that does
    not stop at the first success (so frames keep moving towards the class). Returns ``frames``
    [len(eps), B, C, H, W] (the first is x itself when eps[0] == 0), ``prob`` [len(eps), B] (softmax
    of the target class), ``success`` [len(eps), B] and ``distance`` (L2 from x).
    """
    t = torch.as_tensor(target_class, dtype=torch.long, device=x.device)
    t = t.expand(x.shape[0]).clone() if t.dim() == 0 else t
    if t.shape != x.shape[:1]:
        raise InputError(f"target_class must be an int or a tensor of shape ({x.shape[0]},)")
    frames, probs, succ = [], [], []
    with eval_mode(model):
        for e in eps:
            if e <= 0:
                xa = x.detach().clone()
            else:
                attack = PGD(ThreatModel("l2", e), TargetedCE(), steps=steps, step_size=rel_step_size * e / steps,
                             random_start=False, early_stop=False, seed=seed)
                xa = attack(model, x, t).x_adv
            with torch.no_grad():
                out = model(xa)
            frames.append(xa)
            probs.append(F.softmax(out, 1).gather(1, t[:, None]).squeeze(1))
            succ.append(out.argmax(1) == t)
    frames_t = torch.stack(frames)
    return {"eps": [float(e) for e in eps], "frames": frames_t, "prob": torch.stack(probs), "success": torch.stack(succ),
            "distance": (frames_t - x[None]).flatten(2).norm(dim=2), "target_class": t}


def save_grid(images: torch.Tensor, path: str | Path, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None, title: str | None = None, cell: float = 1.0) -> Path:
    """Write a [rows, cols, C, H, W] grid of images in [0, 1] as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images.dim() != 5:
        raise InputError(f"save_grid needs [rows, cols, C, H, W], got {tuple(images.shape)}")
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 0.6, cell * rows + 0.4), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            img = images[i, j].detach().cpu().clamp(0, 1)
            ax = axes[i][j]
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if col_labels is not None and i == 0:
                ax.set_title(str(col_labels[j]), fontsize=7)
            if row_labels is not None and j == 0:
                ax.set_ylabel(str(row_labels[i]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def signed_map(att: torch.Tensor) -> torch.Tensor:
    """A saliency map rescaled to [0, 1] per sample for display (0.5 = zero attribution)."""
    a = att.sum(1, keepdim=True) if att.dim() == 4 else att
    m = a.flatten(1).abs().amax(1).clamp_min(1e-12).reshape(-1, *([1] * (a.dim() - 1)))
    return 0.5 + 0.5 * a / m
