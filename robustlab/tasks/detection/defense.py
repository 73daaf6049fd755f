"""Defending a detector: adversarial training with the shared ``pgd`` method (Madry et al. 2018) on
the detection loss, fine-tuned from a trained detector; evaluated against attacks re-optimised
against the defended model (adaptive: PGD and APGD through the shared ``evaluate``) and checked for
gradient masking with the shared checks."""
from __future__ import annotations

from typing import Sequence

import torch

from ...evaluation import SanityReport, evaluate, sanity_checks
from ...threat import ThreatModel
from .attacks import attack_targets, build_attack
from .boxes import Detections
from .data import DetectionDataset
from .metrics import detection_metrics, per_image_metrics
from .objectives import OBJECTIVES, Untargeted
from .train import predict, train_detector


def defend_detector(model, data: DetectionDataset, steps: int = 300, eps: float = 4 / 255, attack_steps: int = 3,
                    lr: float = 1e-3, batch_size: int = 32, seed: int = 0, progress: bool = True) -> list[float]:
    """PGD adversarial fine-tuning in place (the shared ``pgd`` method, ``attack_steps`` steps of 2.5 eps / steps)."""
    return train_detector(model, data, steps, batch_size, lr, seed, "pgd", eps, attack_steps, progress)


def attacked_points(model, x: torch.Tensor, truth: Sequence[Detections], eps: float, goal: str = "vanishing",
                    attacks: Sequence[str] = ("pgd", "apgd"), steps: int = 20,
                    seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """The worst case per image of the cascade ``attacks`` re-optimised against ``model`` (the shared
    ``evaluate``, no early stop so that scores keep falling), the success rate after the cascade and
    the share of images where the goal already holds on the clean image (counted as successes)."""
    objective = OBJECTIVES[goal]()
    threat = ThreatModel("linf", eps)
    targets = attack_targets(model, x, truth, goal, objective)
    suite = [build_attack(a, threat, objective, steps, seed=seed, early_stop=False) for a in attacks]
    report = evaluate(model, (x, targets), threat, suite, objective=objective, metrics=per_image_metrics, sanity=None,
                      keep_points=True, seed=seed, progress=False, batch_size=64)
    return report.x_adv, 1.0 - report.robust_accuracy, 1.0 - report.clean_accuracy


def evaluate_detector(model, x: torch.Tensor, truth: Sequence[Detections], eps: float = 4 / 255, goal: str = "vanishing",
                      steps: int = 20, seed: int = 0) -> dict[str, dict]:
    """mAP@0.5, mAP and recall clean and under the adaptive cascade (PGD then APGD) for ``goal``."""
    out = {"clean": detection_metrics(predict(model, x), truth)}
    x_adv, rate, already = attacked_points(model, x, truth, eps, goal, steps=steps, seed=seed)
    out["adaptive"] = {**detection_metrics(predict(model, x_adv), truth), "success": rate, "clean_success": already}
    return out


def detection_checks(model, x: torch.Tensor, truth: Sequence[Detections], eps: float = 4 / 255,
                     checks: str = "cheap") -> SanityReport:
    """The shared gradient-masking checks on the untargeted detection loss (target: the ground truth)."""
    return sanity_checks(model, (x, list(truth)), ThreatModel("linf", eps), checks, n=x.shape[0], objective=Untargeted())
