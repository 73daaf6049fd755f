"""`robustlab poison detect MODEL_RUN --data POISON_RUN --detector ac|ss|strip|nc`: a detector on a poisoned
training set, through the model trained on it.

Writes, into ``MODEL_RUN/detections/<detector>-<poison run>/``, ``detection.json`` (the detector's decision
evaluated against the run's true poisons: precision, recall, FPR and counts, with the detector's own numbers)
and ``scores.png`` (the score histogram, true poisons and clean samples apart). STRIP and Neural Cleanse take
their held-out clean images from the first ``--n-clean`` images of the source data's validation split."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field

from ...errors import InputError
from ...fileio import atomic_write_bytes, atomic_write_json
from ...poisoning.base import DETECTORS, Detector, PoisonedDataset
from ...runs.schema import DeviceSettings
from ...settings import add_model_arguments, settings_from_args

__all__ = ["DetectSettings", "build_detector", "detection_record", "score_histogram", "detect_run", "add_parser",
           "main"]

#: the CLI's short detector names -> the registered ones
SHORT_NAMES = {"ac": "activation-clustering", "ss": "spectral-signatures", "strip": "strip", "nc": "neural-cleanse"}


class DetectSettings(DeviceSettings):
    """What `robustlab poison detect` runs, and where (``--device``)."""

    settings_name: ClassVar[str] = "the detection settings"

    data: Optional[str] = Field(None, description="the poisoned-data run the model was trained on")
    detector: Literal["ac", "ss", "strip", "nc"] = Field("ac", description="activation clustering, spectral "
                                                                           "signatures, STRIP or Neural Cleanse")
    layer: Optional[str] = Field(None, description="module name whose output is read (default: the input of the "
                                                   "last linear layer, the penultimate activations); AC and SS")
    expected_rate: Optional[float] = Field(None, gt=0, le=0.66, description="Spectral Signatures' expected poisoned "
                                                                            "share of a class (default 0.1)")
    n_clean: int = Field(500, ge=2, description="held-out clean images for STRIP and Neural Cleanse")
    nc_steps: int = Field(300, ge=1, description="Neural Cleanse's optimisation steps per class")
    batch_size: int = Field(256, ge=1, description="batch size of the forward passes")
    seed: int = Field(0, description="seed of the detector's random draws")
    weights: Literal["best", "last"] = Field("best", description="the model run's best or last weights")
    trust_code: bool = Field(False, description="allow a model run config naming a factory module:callable")


def build_detector(s: DetectSettings, clean: Any = None, progress: bool = True) -> Detector:
    """The detector of the settings; `clean`: held-out clean images (STRIP, Neural Cleanse)."""
    name = SHORT_NAMES[s.detector]
    options = {"activation-clustering": {"layer": s.layer, "seed": s.seed},
               "spectral-signatures": {"layer": s.layer, "expected_rate": s.expected_rate},
               "strip": {"clean": clean, "seed": s.seed}, "neural-cleanse": {"clean": clean, "steps": s.nc_steps,
                                                                            "seed": s.seed}}[name]
    return DETECTORS.create(name, batch_size=s.batch_size, progress=progress, **options)


def detection_record(model: torch.nn.Module, data: PoisonedDataset, detector: Detector) -> tuple[dict, Any]:
    """Run `detector` on `data` through `model`: (the record, the report). The record holds the evaluation
    against ``data.poisoned`` and the detector's details."""
    report = detector.detect(model, data.x, data.y)
    record = {"detector": detector.name, **report.evaluate(data.poisoned), "true_poisons": int(data.poisoned.sum()),
              "details": report.details}
    return record, report


def score_histogram(scores: torch.Tensor, truth: torch.Tensor, path: str | Path, title: str,
                    flagged: torch.Tensor | None = None) -> Path:
    """A histogram of detector scores, clean samples and true poisons apart (written atomically as PNG), with
    the samples the detector flagged (`flagged`) outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t = scores.detach().double().cpu(), torch.as_tensor(truth, dtype=torch.bool).cpu()
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = torch.linspace(float(s.min()), float(s.max()) + 1e-12, 41).numpy()
    ax.hist(s[~t].numpy(), bins=bins, alpha=0.6, label=f"clean ({int((~t).sum())})", color="tab:blue")
    ax.hist(s[t].numpy(), bins=bins, alpha=0.8, label=f"true poisons ({int(t.sum())})", color="tab:red")
    if flagged is not None and bool(flagged.any()):
        ax.hist(s[flagged.cpu()].numpy(), bins=bins, histtype="step", color="k", label=f"flagged ({int(flagged.sum())})")
    ax.set(xlabel="score (larger = more suspicious)", ylabel="samples", title=title, yscale="log")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def detect_run(model_run: str | Path, poison_run: str | Path, s: DetectSettings, device: Any = "auto",
               progress: bool = True) -> dict:
    """Detect the poisons of `poison_run` through the model of `model_run`; writes the record and figure into
    ``model_run/detections/<detector>-<poison run name>/``. Returns the record."""
    from ...runs.rundir import Run, split_run_dir
    from ..job import load_model_from_run
    from .runs import read_poisoned_run, source_split

    data, _ = read_poisoned_run(poison_run)
    model, _ = load_model_from_run(model_run, s.weights, trust_code=s.trust_code, device=device)
    clean = source_split(poison_run, "val").subset(s.n_clean) if s.detector in ("strip", "nc") else None
    record, report = detection_record(model, data, build_detector(s, clean, progress))
    record = {"model_run": str(model_run), "poison_run": str(poison_run), "settings": s.model_dump(), **record}
    with Run.writing(*split_run_dir(model_run), "model", create=False) as run:
        out = run.path / "detections" / f"{s.detector}-{Path(poison_run).name}"
        atomic_write_json(out / "detection.json", record)
        score_histogram(report.scores, data.poisoned, out / "scores.png",
                        f"{record['detector']} on {Path(poison_run).name}", report.is_poison)
    record["written_to"] = str(out)
    return record


def add_parser(subparsers):
    p = subparsers.add_parser("detect", help="find the poisons of a poisoned-data run through a model trained on it",
                              description="Writes detections/<detector>-<poison run>/detection.json and scores.png "
                                          "into MODEL_RUN.")
    p.add_argument("run", help="a model run trained on the poisoned data (`robustlab train --data <poisoned run>`)")
    add_model_arguments(p, DetectSettings)
    return p


def main(args) -> int:
    from ...runtime import resolve_device

    s = settings_from_args((DetectSettings,), args, "`robustlab poison detect` arguments")[DetectSettings]
    if s.data is None:
        raise InputError("give the poisoned-data run with --data RUN (from `robustlab poison craft`)")
    out = detect_run(args.run, s.data, s, resolve_device(s.device), progress=not getattr(args, "no_progress", False))
    fmt = {k: "-" if out[k] is None else f"{out[k]:.4f}" for k in ("precision", "recall", "fpr")}
    print(f"{out['detector']}: flagged {out['flagged']} of {out['n']} ({out['true_poisons']} true poisons); "
          f"precision {fmt['precision']}, recall {fmt['recall']}, FPR {fmt['fpr']}")
    print(f"wrote {out['written_to']}/detection.json and scores.png")
    return 0
