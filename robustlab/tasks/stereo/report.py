"""The stereo report: for each model, the left image, the ground truth, the clean and attacked
disparity maps on one colour scale, their error maps on one scale, and EPE / bad-3 vs eps curves.

The pages are in the summary style of every task's page (``runs.labels``): a one-line summary, then
tables whose headers carry the units (EPE in px, bad-k and D1 in % of valid pixels) and settings
written out in words, never a raw dict."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ...runs import labels, run_page_sections, write_run_page  # noqa: E402
from ...runs.report_figures import save_figure  # noqa: E402

#: the metrics of every stereo table, in this order
METRIC_KEYS = ("epe", "bad1", "bad3", "d1")
#: a table of named rows of metrics: "EPE (px)", "bad-1 (%)", "bad-3 (%)", "D1 (%)"
HEADER = ["", *(labels.header(k) for k in METRIC_KEYS)]


def metric_cells(m: dict) -> list[str]:
    """EPE (px, 3 decimals), bad-1, bad-3, D1 (% of valid pixels, 1 decimal): units in the header."""
    return [labels.value(k, m[k]) for k in METRIC_KEYS]


def metric_rows(results: dict[str, dict]) -> list[list[str]]:
    return [[name, *metric_cells(m)] for name, m in results.items()]


def change_text(before: dict, after: dict, what: str = "clean", then: str = "attacked") -> str:
    """"EPE 0.512 px clean, 3.204 px attacked; bad-3 2.0% clean, 41.3% attacked"."""
    return "; ".join(f"{labels.label(k).text} {labels.cell(k, before[k])} {what}, {labels.cell(k, after[k])} {then}"
                     for k in ("epe", "bad3"))


def results_text(results: dict[str, dict]) -> str:
    """"synthetic validation: EPE 0.512 px, bad-3 2.0%; ..." for named results."""
    return "; ".join(f"{name}: " + ", ".join(f"{labels.label(k).text} {labels.cell(k, m[k])}" for k in ("epe", "bad3"))
                     for name, m in results.items())


def setup_text(setup: dict) -> str:
    """A network's setup in words."""
    return (f"{setup['h']}x{setup['w']} px pairs, disparities up to {setup['max_disp']} px; trained on "
            f"{setup['n_train']:,} synthetic scenes, {setup['steps']:,} steps of batch {setup['batch_size']}, learning "
            f"rate {setup['lr']:g}, {setup['features']} features, {setup['hidden']} hidden channels, seed {setup['seed']}")


def defence_text(cfg: dict) -> str:
    """A defence fine-tune's settings in words."""
    on = (f"PGD-{cfg['attack_steps']} pairs (eps {cfg['eps']:g} on {cfg['views']} views)" if cfg["adversarial"]
          else "clean pairs")
    terms = [f"left-right consistency weight {cfg['lr_consistency']:g}"] if cfg["lr_consistency"] else []
    terms += [f"local-linearity weight {cfg['llr']:g} ({cfg['llr_steps']} steps)"] if cfg["llr"] else []
    return (f"{cfg['steps']:,} fine-tuning steps of batch {cfg['batch_size']} on {on}, learning rate {cfg['lr']:g}"
            + "".join(f", {t}" for t in terms) + f", seed {cfg['seed']}")


def checks_table(checks: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    """The gradient-masking checks (``SanityReport.to_dict()``) as a table."""
    return ("gradient-masking checks", ["check", "verdict", "evidence"],
            [[c["name"].replace("_", " "), c["verdict"], c["message"]] for c in checks])


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
        cmap = plt.get_cmap("inferno").with_extremes(bad="0.6")
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
    save_figure(fig, path, dpi=110)


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
    save_figure(fig, path, dpi=110)


def write_report(path: Path, title: str, sections: list[tuple[str, str]], tables: list[tuple[str, list[str], list[list[str]]]],
                 figures: list[str]) -> None:
    """The run's page in the shared report style (``runs.write_run_page``)."""
    write_run_page(path, title, sections, tables, figures)


report_sections = run_page_sections  # what ``robustlab report`` shows of a stereo run
