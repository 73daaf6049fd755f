"""The stereo report: for each model, the left image, the ground truth, the clean and attacked
disparity maps on one colour scale, their error maps on one scale, and EPE / bad-3 vs eps curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ...fileio import atomic_write_bytes  # noqa: E402
from ...runs import run_page_sections, write_run_page  # noqa: E402


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def disparity_figure(path: Path, left: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, preds: dict[str, torch.Tensor],
                     max_disp: float, max_error: float = 10.0, title: str = "") -> None:
    """Row 1: left image, ground truth, then each prediction (shared disparity scale 0..max_disp).
    Row 2: error maps |pred - gt| on valid pixels (shared scale 0..max_error px; invalid = grey)."""
    n = 2 + len(preds)
    fig, axes = plt.subplots(2, n, figsize=(4.4 * n, 5.6), squeeze=False)
    gt_show = torch.where(mask.bool(), torch.nan_to_num(gt, posinf=0.0), torch.full_like(gt, float("nan")))
    axes[0, 0].imshow(left.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0, 0].set_title("left image", fontsize=11)
    im = axes[0, 1].imshow(gt_show.numpy(), cmap="magma", vmin=0, vmax=max_disp)
    axes[0, 1].set_title("ground truth", fontsize=11)
    for k, (name, pred) in enumerate(preds.items()):
        axes[0, 2 + k].imshow(pred.numpy(), cmap="magma", vmin=0, vmax=max_disp)
        axes[0, 2 + k].set_title(name, fontsize=11)
        err = torch.where(mask.bool(), (pred - torch.nan_to_num(gt, posinf=0.0)).abs(), torch.full_like(pred, float("nan")))
        cmap = plt.get_cmap("inferno").copy()
        cmap.set_bad("0.6")
        em = axes[1, 2 + k].imshow(err.numpy(), cmap=cmap, vmin=0, vmax=max_error)
        epe = float(err[mask.bool()].mean()) if mask.any() else float("nan")
        axes[1, 2 + k].set_title(f"|error| {name}: EPE {epe:.2f}", fontsize=11)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].axis("off")
    axes[1, 1].axis("off")
    fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8, label="disparity (px)")
    if preds:
        fig.colorbar(em, ax=axes[1, :].tolist(), shrink=0.8, label="error (px)")
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, path)


def curves_figure(path: Path, curves: dict[str, dict[float, dict]], title: str = "") -> None:
    """EPE and bad-3 vs eps, one line per model (eps 0 = clean)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for name, pts in curves.items():
        eps = sorted(pts)
        a.plot(eps, [pts[e]["epe"] for e in eps], marker="o", label=name)
        b.plot(eps, [100 * pts[e]["bad3"] for e in eps], marker="o", label=name)
    a.set_xlabel("eps (Linf)")
    a.set_ylabel("EPE (px)")
    b.set_xlabel("eps (Linf)")
    b.set_ylabel("bad-3 (%)")
    a.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, path)


def write_report(path: Path, title: str, sections: list[tuple[str, str]], tables: list[tuple[str, list[str], list[list[str]]]],
                 figures: list[str]) -> None:
    """The run's page in the shared report style (``runs.write_run_page``)."""
    write_run_page(path, title, sections, tables, figures)


report_sections = run_page_sections  # what ``robustlab report`` shows of a stereo run
