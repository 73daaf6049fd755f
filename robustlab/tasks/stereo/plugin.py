"""Stereo disparity as a task plug-in: what is new about it (data, network, SGBM, the warp, disparity
metrics, its CLI verbs), declared once; evaluation, checks, training and reports are the shared ones."""
from __future__ import annotations

import torch

from ...objectives import RegressionError, RegressionTarget, SmoothL1Error
from ...taskspec import RunInputs, Task
from . import cli
from .consistent import StereoConsistentThreat
from .data import motorcycle, synthetic_stereo
from .pretrained import pretrained_stereo
from .report import report_sections
from .sgbm import sgbm_oracle
from .train import UNREACHED, stereo_threat


def per_pair_metrics(output: torch.Tensor, target) -> dict[str, torch.Tensor]:
    """Per pair: EPE and bad-3 over its valid pixels (``stereo_metrics`` pools pixels over pairs)."""
    disparity, mask = target[0], target[1].bool()
    err = (output - torch.nan_to_num(disparity, posinf=0.0)).abs()
    m = mask.to(err.dtype).flatten(1)
    count = m.sum(1).clamp_min(1)
    return {"epe": (err.flatten(1) * m).sum(1) / count, "bad3": ((err.flatten(1) > 3).to(err.dtype) * m).sum(1) / count}


def run_inputs(run_path, config: dict, *, n: int = 512, eps: float | None = None, which: str = "best",
               trust_code: bool = False) -> RunInputs:
    """A stereo run's network (``robustlab stereo train/defend``), the first ``n`` training scenes of
    its setup, ``n`` validation scenes, the smooth-L1 training loss and an ``eps`` ball on both views
    (default: the run's ``--eps``, else 0.02). One weights file per run: ``which`` is ignored.

    The objective's threshold is 0, so its loss is the smooth-L1 error itself (>= 0, as Keskar's
    relative sharpness assumes; an offset of 1000 would also cost float32 precision in loss
    differences); "accuracy" (error <= threshold) is then 0 throughout: read the loss gaps."""
    from .pretrained import load_stereo_model

    model, setup = load_stereo_model(run_path)
    if eps is None:
        eps = float(config["eps"]) if isinstance(config.get("eps"), (int, float)) else 0.02
    train = synthetic_stereo(n, setup.h, setup.w, setup.max_disp, seed=1 + 1000 * setup.seed)  # = train_data()[:n]
    test = synthetic_stereo(n, setup.h, setup.w, setup.max_disp, seed=999_999)  # the validation seed
    return RunInputs(model.eval(), train, test, TASK.objective(TASK.train_objective, threshold=0.0), stereo_threat(eps, "both"))


TASK = Task(
    name="stereo",
    description="stereo disparity (procedural scenes, Middlebury motorcycle): EPE and bad-k under attack",
    objectives={"disparity_error": lambda threshold=UNREACHED: RegressionError(threshold, "l1"),
                "disparity_target": lambda threshold=1.0: RegressionTarget(threshold, "l1"),
                "smooth_l1": lambda threshold=UNREACHED: SmoothL1Error(threshold)},
    train_objective="smooth_l1",
    metrics=per_pair_metrics,
    datasets={"synthetic": synthetic_stereo, "middlebury-motorcycle": motorcycle},
    models={"pretrained": pretrained_stereo},
    threats={"left": lambda eps=0.02: stereo_threat(eps, "left"), "right": lambda eps=0.02: stereo_threat(eps, "right"),
             "both": lambda eps=0.02: stereo_threat(eps, "both"), "consistent": StereoConsistentThreat},
    oracles={"sgbm": sgbm_oracle},
    report_sections=report_sections,
    run_inputs=run_inputs,
    add_cli=cli.COMMAND.add_cli,
    run_cli=cli.COMMAND.run_cli,
)
