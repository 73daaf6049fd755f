"""Attacks on detectors through the shared engine, unchanged: white-box PGD / APGD and black-box
Square (on the objective's loss over the detection scores), a universal perturbation, transfer from
one detector to another. Only the objective and its target are detection's."""
from __future__ import annotations

from typing import Sequence

import torch

from ...attacks import APGD, MIFGSM, PGD, Square, UniversalPerturbation
from ...attacks.base import Attack
from ...attacks.transfer import Ensemble, InputDiversity
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


def check_labels(truth: Sequence[Detections], num_classes: int) -> None:
    """One InputError when a true label is not one of the detector's ``num_classes`` (the data's classes and
    the model's disagree: the loss would fold the label into another class)."""
    labels = [int(t.labels.min()) for t in truth if len(t)] + [int(t.labels.max()) for t in truth if len(t)]
    if labels and (min(labels) < 0 or max(labels) >= num_classes):
        raise InputError(f"the data has labels {min(labels)}..{max(labels)} but the detector has {num_classes} "
                         f"classes (0..{num_classes - 1}): the data's classes do not match the model's")


#: what the untargeted goal's detections must stop matching: the detector's own clean detections (the default) or
#: the ground truth
UNTARGETED_REFERENCES = ("own", "truth")


def goal_targets(goal: str, truth: Sequence[Detections], num_classes: int, shift: float = 0.5,
                 own: Sequence[Detections] | None = None) -> list[Detections]:
    """The target list of a goal: the truth (vanishing, fabrication; untargeted unless ``own`` is given), the
    detector's own clean detections ``own`` (untargeted), relabelled (mislabel: label + 1 mod K) or shifted by
    ``shift`` box widths to the right (box-shift); the true labels checked against the detector's ``num_classes``."""
    check_labels(truth, num_classes)
    if goal == "mislabel":
        return relabelled(truth, num_classes)
    if goal == "box-shift":
        return shifted(truth, shift, 0.0)
    if goal not in OBJECTIVES:
        raise InputError(f"unknown detection goal {goal!r}; choose from {', '.join(GOALS)}")
    return list(own) if goal == "untargeted" and own is not None else list(truth)


@torch.no_grad()
def own_detections(model, x: torch.Tensor, objective: DetectionObjective) -> list[Detections]:
    """The detector's detections on the clean images, decoded with the objective's thresholds (on its device)."""
    return objective.detections(predict(model, x))


def attack_targets(model, x: torch.Tensor, truth: Sequence[Detections], goal: str, objective: DetectionObjective,
                   untargeted: str = "own") -> list[Detections]:
    """``goal_targets`` for an attack on ``model``: the untargeted goal's target is the detector's own clean
    detections (``untargeted="own"``, as TOG's and DAG's untargeted attacks; clean success is then 0 by
    construction) or the ground truth (``"truth"``)."""
    if untargeted not in UNTARGETED_REFERENCES:
        raise InputError(f"untargeted must be one of {', '.join(UNTARGETED_REFERENCES)}, got {untargeted!r}")
    own = own_detections(model, x, objective) if goal == "untargeted" and untargeted == "own" else None
    return goal_targets(goal, truth, model.num_classes, own=own)


def attack_detector(model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing", attack: str = "pgd",
                    eps: float = 8 / 255, steps: int = 20, queries: int = 500, seed: int = 0, score_threshold: float = 0.5,
                    untargeted: str = "own", **options):
    """Run one attack against ``model`` for ``goal``: ``(AttackResult, objective, targets)``; ``untargeted``: the
    untargeted goal's reference (``attack_targets``); ``options`` go to the engine (``early_stop=False``: keep
    maximising after success)."""
    if goal not in OBJECTIVES:
        raise InputError(f"unknown detection goal {goal!r}; choose from {', '.join(GOALS)}")
    objective = OBJECTIVES[goal](score_threshold=score_threshold)
    targets = attack_targets(model, x, truth, goal, objective, untargeted)
    threat = ThreatModel("linf", eps)
    result = build_attack(attack, threat, objective, steps, queries, seed, **options)(model, x, targets)
    return result, objective, targets


def universal_perturbation(model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing",
                           eps: float = 8 / 255, epochs: int = 5, batch_size: int = 32, seed: int = 0,
                           tile: int | None = None, step_size: float | None = None) -> UniversalPerturbation:
    """One Linf perturbation for every image (the engine's ``UniversalPerturbation.fit``: sign ascent on the
    objective's loss averaged over mini-batches, step ``step_size``, default eps / 10) towards ``goal`` (untargeted:
    away from the detector's own clean detections).

    ``tile``: the perturbation is a ``tile`` x ``tile`` pattern repeated over the image. The detector is fully
    convolutional, so a pattern whose period is a multiple of its stride acts alike at every anchor, and every
    object of every scene trains every pixel of it. A full-image perturbation instead learns each position from
    the few training objects that happen to lie there, and it overfits (see docs/results/detection.md)."""
    objective = OBJECTIVES[goal]()
    return UniversalPerturbation.fit(model, x, attack_targets(model, x, truth, goal, objective), ThreatModel("linf", eps),
                                     objective, epochs=epochs, batch_size=batch_size, step_size=step_size,
                                     tile=(tile, tile) if tile else None, seed=seed)


def transfer(source, target_model, x: torch.Tensor, truth: Sequence[Detections], goal: str = "vanishing",
             eps: float = 8 / 255, steps: int = 20, seed: int = 0, attack: str = "pgd", diversity: float = 0.0,
             decay: float = 1.0) -> dict[str, float]:
    """Craft on ``source`` (a detector, or a list of detectors: the engine's ``Ensemble``, the mean of their raw
    outputs, valid for detectors of one architecture whose anchors coincide), judge on ``target_model``: the
    success rate on the source (without input diversity) and on the target, and the target's recall at 0.5.
    Untargeted: each detector is judged against its own clean detections (the source's are the crafting target).

    ``attack``: ``pgd`` (step 2.5 eps / steps) or ``mifgsm`` (momentum ``decay``, step eps / steps, Dong et al.
    2018, returning its last iterate as transfer attacks do); both run every step (no early stop). ``diversity`` > 0: the surrogate sees
    each step's input randomly resized and padded with that probability (the engine's ``InputDiversity``, Xie
    et al. 2019); it moves the objects, so it suits the goals whose target has no boxes to hit (vanishing)."""
    from .metrics import recall_at

    plain = Ensemble(list(source)) if isinstance(source, (list, tuple)) else source
    surrogate = InputDiversity(plain, p=diversity, generator=torch.Generator().manual_seed(seed)) if diversity > 0 else plain
    objective = OBJECTIVES[goal]()
    targets = judged = goal_targets(goal, truth, target_model.num_classes)
    if goal == "untargeted":  # crafted and judged on the source against its own clean detections, the target's on it
        targets, judged = own_detections(plain, x, objective), own_detections(target_model, x, objective)
    threat = ThreatModel("linf", eps)
    if attack == "mifgsm":
        crafted = MIFGSM(threat, objective, steps=steps, decay=decay, early_stop=False, keep_last=True, seed=seed)
    else:
        crafted = build_attack(attack, threat, objective, steps, seed=seed, early_stop=False)
    x_adv = crafted(surrogate, x, targets).x_adv
    raw = predict(target_model, x_adv)
    return {"source_success": float(objective.success(predict(plain, x_adv), targets).float().mean()),
            "transfer_success": float(objective.success(raw, judged).float().mean()),
            "target_recall": recall_at(target_model.decode(raw), truth)}
