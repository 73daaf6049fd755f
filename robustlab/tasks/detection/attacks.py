"""Attacks on detectors through the shared engine, unchanged: white-box PGD / APGD and black-box
Square (on the objective's loss over the detection scores), a universal perturbation, transfer from
one detector to another. Only the objective and its target are detection's."""
from __future__ import annotations

from typing import Sequence

import torch

from ...attacks import APGD, PGD, Square, UniversalPerturbation
from ...attacks.base import Attack
from ...errors import InputError
from ...threat import ThreatModel
from .boxes import Detections
from .objectives import OBJECTIVES, DetectionObjective, relabelled, shifted
from .train import predict

ATTACK_NAMES = ("pgd", "apgd", "square")
GOALS = tuple(OBJECTIVES)


def build_attack(name: str, threat: ThreatModel, objective: DetectionObjective, steps: int = 20, queries: int = 500,
                 seed: int = 0, **options) -> Attack:
    """``pgd`` (step 2.5 eps / steps), ``apgd`` (step-size schedule of Croce & Hein 2020) or ``square``
    (score-based, ``queries`` model evaluations per image); ``options`` are the engine's (``early_stop``, ...)."""
    if name == "pgd":
        return PGD(threat, objective, steps=steps, seed=seed, **options)
    if name == "apgd":
        return APGD(threat, objective, steps=steps, seed=seed, **options)
    if name == "square":
        return Square(threat, objective, max_queries=queries, seed=seed, **options)
    raise InputError(f"unknown detection attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")


def goal_targets(goal: str, truth: Sequence[Detections], num_classes: int, shift: float = 0.5) -> list[Detections]:
    """The target list of a goal: the truth (untargeted, vanishing, fabrication), relabelled
    (mislabel: label + 1 mod K) or shifted by ``shift`` box widths to the right (box-shift)."""
    if goal == "mislabel":
        return relabelled(truth, num_classes)
    if goal == "box-shift":
        return shifted(truth, shift, 0.0)
    if goal not in OBJECTIVES:
        raise InputError(f"unknown detection goal {goal!r}; choose from {', '.join(GOALS)}")
    return list(truth)


def attack_detector(model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing", attack: str = "pgd",
                    eps: float = 8 / 255, steps: int = 20, queries: int = 500, seed: int = 0, score_threshold: float = 0.5,
                    **options):
    """Run one attack against ``model`` for ``goal``: ``(AttackResult, objective, targets)``; ``options``
    go to the engine (``early_stop=False``: keep maximising after success)."""
    objective = OBJECTIVES[goal](score_threshold=score_threshold) if goal in OBJECTIVES else None
    targets = goal_targets(goal, truth, model.num_classes)
    threat = ThreatModel("linf", eps)
    result = build_attack(attack, threat, objective, steps, queries, seed, **options)(model, x, targets)
    return result, objective, targets


def universal_perturbation(model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing",
                           eps: float = 8 / 255, epochs: int = 5, batch_size: int = 32, seed: int = 0) -> UniversalPerturbation:
    """One Linf perturbation for every image (the engine's ``UniversalPerturbation.fit``) towards ``goal``."""
    objective = OBJECTIVES[goal]()
    return UniversalPerturbation.fit(model, x, goal_targets(goal, truth, model.num_classes), ThreatModel("linf", eps),
                                     objective, epochs=epochs, batch_size=batch_size, seed=seed)


def transfer(source, target_model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing",
             eps: float = 8 / 255, steps: int = 20, seed: int = 0) -> dict[str, float]:
    """Craft with PGD on ``source`` (all ``steps``, no early stop), judge on ``target_model``: the success rate on each."""
    res, objective, targets = attack_detector(source, x, truth, goal, "pgd", eps, steps, seed=seed, early_stop=False)
    on_target = objective.success(predict(target_model, res.x_adv), targets)
    return {"source_success": float(res.success.float().mean()), "transfer_success": float(on_target.float().mean())}
