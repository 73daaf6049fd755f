"""Static HTML reports of one or several runs side by side (Jinja2 template, matplotlib figures)."""
from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..fileio import atomic_write_text  # noqa: E402
from .rundir import Run  # noqa: E402


def collect_model_runs(paths: list[str | Path]) -> list[dict]:
    """Every model run under the given run directories (a job contributes all its models)."""
    found = []
    for p in paths:
        run = Run(p) if Path(p).exists() else None
        if run is None:
            raise InputError(f"no run directory at {p}")
        cfg = run.read_config()
        if cfg.get("kind") == "job":
            subs = sorted((run.path / "models").glob("*")) if (run.path / "models").exists() else []
            found += [_model_entry(Run(s), f"{run.name}/{s.name}" if len(paths) > 1 else s.name) for s in subs if s.is_dir()]
        elif cfg.get("kind") == "model":
            found.append(_model_entry(run, run.name))
        else:
            raise InputError(f"{p} has no robustlab config.yaml; is it a run directory?")
    return found


def _model_entry(run: Run, label: str) -> dict:
    ev_path = run.path / "evaluation.json"
    ex_path = run.path / "examples.pt"
    return {
        "label": label, "run": run, "config": run.read_config(), "summary": run.read_summary(),
        "epochs": [m for m in run.read_metrics() if m.get("kind") == "epoch"],
        "evaluation": json.loads(ev_path.read_text()) if ev_path.exists() else None,
        "examples": torch.load(ex_path, map_location="cpu") if ex_path.exists() else None,
    }


def _fig_training(entries: list[dict], path: Path) -> bool:
    with_epochs = [e for e in entries if e["epochs"]]
    if not with_epochs:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for e in with_epochs:
        ep = [m["epoch"] for m in e["epochs"]]
        line, = axes[0].plot(ep, [m.get("val_acc", m["train_acc"]) for m in e["epochs"]], label=f"{e['label']} clean")
        axes[0].plot(ep, [m.get("val_robust_acc", m["train_robust_acc"]) for m in e["epochs"]], "--",
                     color=line.get_color(), label=f"{e['label']} PGD")
        axes[1].plot(ep, [m["train_robust_acc"] for m in e["epochs"]], color=line.get_color(), label=f"{e['label']} train")
        if "val_robust_acc" in e["epochs"][0]:
            axes[1].plot(ep, [m["val_robust_acc"] for m in e["epochs"]], ":", color=line.get_color(), label=f"{e['label']} val")
        if "local_linearity" in e["epochs"][0]:
            axes[2].plot(ep, [m.get("local_linearity", float("nan")) for m in e["epochs"]], color=line.get_color(),
                         label=e["label"])
    axes[2].set(title="local linearity gamma (train points)", xlabel="epoch", yscale="log")
    axes[0].set(title="validation accuracy (clean, PGD)", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    axes[1].set(title="robust accuracy: train vs validation", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fig_curve(entries: list[dict], path: Path) -> bool:
    evald = [e for e in entries if e["evaluation"]]
    if not evald:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in evald:
        reps = e["evaluation"]["reports"]
        eps = [r["eps"] for r in reps]
        acc = [r["robust_accuracy"] for r in reps]
        lo = [max(0.0, r["robust_accuracy"] - r["robust_accuracy_ci95"][0]) for r in reps]
        hi = [max(0.0, r["robust_accuracy_ci95"][1] - r["robust_accuracy"]) for r in reps]
        ax.errorbar(eps, acc, yerr=[lo, hi], marker="o", capsize=3, label=e["label"])
    ax.set(xlabel=f"eps ({evald[0]['evaluation']['norm']})", ylabel="robust accuracy", ylim=(0, 1),
           title="robustness curve (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fig_examples(entry: dict, path: Path) -> bool:
    ex = entry["examples"]
    if not ex or ex.get("x") is None or ex["x"].numel() == 0:
        return False
    k = ex["x"].shape[0]
    fig, axes = plt.subplots(2, k, figsize=(1.4 * k, 3.2), squeeze=False)
    for i in range(k):
        for row, key, title in ((0, "x", f"y={int(ex['y'][i])}"), (1, "x_adv", f"pred {int(ex['pred_adv'][i])}")):
            img = ex[key][i]
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            axes[row][i].imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
            axes[row][i].set_title(title, fontsize=8)
            axes[row][i].axis("off")
    fig.suptitle(f"{entry['label']}: clean (top) vs adversarial at eps={ex['eps']:g} (bottom)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render_report(paths: list[str | Path], out: str | Path) -> Path:
    """Render the runs in `paths` side by side into the HTML file `out` (figures next to it)."""
    out = Path(out)
    entries = collect_model_runs(paths)
    if not entries:
        raise InputError(f"no model runs found in {[str(p) for p in paths]}")
    fig_dir = out.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    if _fig_training(entries, fig_dir / "training_curves.png"):
        figures["training"] = "figures/training_curves.png"
    if _fig_curve(entries, fig_dir / "robustness_curve.png"):
        figures["curve"] = "figures/robustness_curve.png"
    for e in entries:
        name = f"examples_{e['label'].replace('/', '_')}.png"
        e["examples_fig"] = f"figures/{name}" if _fig_examples(e, fig_dir / name) else None
        e["config_yaml"] = yaml.safe_dump({k: v for k, v in e["config"].items() if k != "environment"}, sort_keys=False)
        e["environment"] = e["config"].get("environment", {})
    eps_all = sorted({r["eps"] for e in entries if e["evaluation"] for r in e["evaluation"]["reports"]})
    env = Environment(loader=PackageLoader("robustlab.runs", "templates"), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(entries=entries, figures=figures, eps_all=eps_all,
                                                      title=", ".join(html.escape(str(Path(p).name)) for p in paths))
    atomic_write_text(out, page)
    return out
