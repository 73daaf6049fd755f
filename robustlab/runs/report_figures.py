"""The report's figures (matplotlib, Agg), drawn to be read at 1000 px: one colour per model on
every figure and page, legends outside the axes, integer epoch ticks, example titles that do not
overlap. Each ``*_figure`` function returns the figure (None when there is nothing to draw);
``save_figure`` writes and closes it."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..fileio import atomic_write_bytes  # noqa: E402

PALETTE = list(plt.get_cmap("tab10").colors)
FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
        "legend.fontsize": 10}
DPI = 100  # a 10-11 inch wide figure is shown near its natural size on a 1000-1400 px page


def colour_keys(labels: list[str]) -> dict[str, str]:
    """The name each label is coloured by: the model's own name (``job/model`` and ``model`` share a
    colour), or the whole label where two labels on the page name the same model (two jobs side by side)."""
    short = {lb: lb.rsplit("/", 1)[-1] for lb in labels}
    shared = {k for k in short.values() if list(short.values()).count(k) > 1}
    return {lb: lb if k in shared else k for lb, k in short.items()}


def model_colours(labels: list[str]) -> dict[str, tuple]:
    """One colour per model label, shared by every figure: each model's preferred colour (tab10) comes
    from a hash of its name, so a model keeps its colour on every page that shows it; models whose
    colours collide take the next free one, in sorted order (the same on every page that shows the same
    models); past ten models colours repeat."""
    keys = colour_keys(labels)
    taken: set[int] = set()
    slots: dict[str, int] = {}
    for key in sorted(set(keys.values())):
        first = zlib.crc32(key.encode("utf-8")) % len(PALETTE)
        slot = next((s for s in ((first + i) % len(PALETTE) for i in range(len(PALETTE))) if s not in taken), first)
        taken.add(slot)
        slots[key] = slot
    return {lb: PALETTE[slots[keys[lb]]] for lb in labels}


def save_figure(fig: Figure | None, path: Path, dpi: int = DPI) -> bool:
    """Write `fig` to `path` as a PNG, atomically (its folder made), with a tight box (legends outside the
    axes are kept), and close it; False for None."""
    if fig is None:
        return False
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
    return True


def _model_legend(fig: Figure, colours: dict[str, tuple], labels: list[str], styles: list[tuple[str, str]]) -> None:
    """One legend below the axes: a line per model (its colour) and a line per line style (what it means)."""
    handles = [Line2D([], [], color=colours[lb], lw=2.5, label=lb) for lb in labels]
    handles += [Line2D([], [], color="#444", ls=ls, label=meaning) for ls, meaning in styles]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 4), frameon=False)


def training_figure(entries: list[dict], colours: dict[str, tuple]) -> Figure | None:
    """Per-epoch curves of every model with epoch records: validation accuracy (clean solid, PGD
    dashed), robust accuracy on training points (solid) vs validation (dotted), local linearity."""
    with_epochs = [e for e in entries if e["epochs"]]
    if not with_epochs:
        return None
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
        for e in with_epochs:
            _plot_training(axes, e, colours[e["label"]])
        axes[0].set(title="validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
        axes[1].set(title="robust accuracy: train vs validation", xlabel="epoch", ylim=(0, 1))
        axes[2].set(title="local linearity (train points)", xlabel="epoch", yscale="log")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        _model_legend(fig, colours, [e["label"] for e in with_epochs],
                      [("-", "clean (left), train (middle)"), ("--", "PGD (left)"), (":", "validation (middle)")])
    return fig


def _plot_training(axes, e: dict, colour) -> None:
    ep = [m["epoch"] for m in e["epochs"]]
    first = e["epochs"][0]
    axes[0].plot(ep, [m.get("val_acc", m["train_acc"]) for m in e["epochs"]], color=colour)
    axes[0].plot(ep, [m.get("val_robust_acc", m["train_robust_acc"]) for m in e["epochs"]], "--", color=colour)
    axes[1].plot(ep, [m["train_robust_acc"] for m in e["epochs"]], color=colour)
    if "val_robust_acc" in first:
        axes[1].plot(ep, [m["val_robust_acc"] for m in e["epochs"]], ":", color=colour)
    if "local_linearity" in first:
        axes[2].plot(ep, [m.get("local_linearity", float("nan")) for m in e["epochs"]], color=colour)


def curve_figure(entries: list[dict], colours: dict[str, tuple]) -> Figure | None:
    """Robust accuracy against eps with 95% intervals, one colour per model, the legend beside the axes."""
    evald = [e for e in entries if e["evaluation"]]
    if not evald:
        return None
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for e in evald:
            reps = e["evaluation"]["reports"]
            acc = [r["robust_accuracy"] for r in reps]
            lo = [max(0.0, r["robust_accuracy"] - r["robust_accuracy_ci95"][0]) for r in reps]
            hi = [max(0.0, r["robust_accuracy_ci95"][1] - r["robust_accuracy"]) for r in reps]
            ax.errorbar([r["eps"] for r in reps], acc, yerr=[lo, hi], marker="o", capsize=3, color=colours[e["label"]],
                        label=e.get("curve_label", e["label"]))
        ax.set(xlabel=f"eps ({evald[0]['evaluation']['norm']})", ylabel="robust accuracy", ylim=(0, 1),
               title="robustness curve (95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        fig.tight_layout()
    return fig


def flipped(ex: dict) -> list[int]:
    """Indices of the examples the attack flipped: the adversarial prediction differs from the label
    (the evaluation keeps only points classified right when clean)."""
    y, pred = ex["y"], ex["pred_adv"]
    k = ex["x"].shape[0]
    if getattr(y, "dim", lambda: 0)() != 1 or getattr(pred, "dim", lambda: 0)() != 1:
        return list(range(k))  # not class labels: every kept example is a success of the attack
    return [i for i in range(k) if int(pred[i]) != int(y[i])]


def examples_figure(label: str, ex: dict, keep: list[int]) -> Figure | None:
    """The examples `keep` (indices into ``examples.pt``): clean images on the top row titled with their
    label, adversarial ones below titled with the prediction, each row labelled on the left."""
    if not keep:
        return None
    k = len(keep)
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(2, k, figsize=(max(1.5 * k, 4.5) + 1.2, 4.2), squeeze=False)
        for col, i in enumerate(keep):
            for row, key, title in ((0, "x", f"clean: {int(ex['y'][i])}"), (1, "x_adv", f"adv: {int(ex['pred_adv'][i])}")):
                img = ex[key][i]
                img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
                ax = axes[row][col]
                ax.imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
                ax.set_title(title, fontsize=11, color="#a40" if row else "#222", pad=6)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0][0].set_ylabel("clean", fontsize=12)
        axes[1][0].set_ylabel("adversarial", fontsize=12)
        fig.suptitle(f"{label}: adversarial examples at eps={float(ex['eps']):g}", fontsize=12)
        fig.tight_layout(h_pad=1.5)
    return fig
