"""Attacks: every attack is ``Attack(threat, objective, **hparams, **options)(model, x, target) -> AttackResult``.

``options`` are the engine's, taken by every attack's constructor: ``early_stop``, ``seed``, ``eot``,
``eot_judge``, ``verify`` (see ``Attack``) and, for iterative attacks, ``keep_last``, ``judge_final``
(see ``IterativeAttack``). An attack writes its step against ``AttackContext``'s protocol."""
from __future__ import annotations

from ..errors import InputError
from ..registry import Registry
from ..threat import ThreatModel
from .apgd import APGD, APGDDLR, APGDT, apgd_checkpoints
from .base import Attack, AttackContext, AttackResult, IterativeAttack
from .bpda import BPDA
from .gradient import BIM, FGSM, MIFGSM, PGD
from .linearity import local_linearity
from .minnorm import CarliniWagnerL2, DeepFool
from .fab import FABT, project_hyperplane_box
from .square import Square
from .parametric import (BlurLightingThreat, ColorThreat, GeometricThreat, ParametricPGD, ParametricThreat,
                         RandomTransform, survival_rate)
from .transfer import Ensemble, InputDiversity, TransferMatrix, TransferResult, transfer_attack, transfer_matrix
from .universal import AdversarialPatch, UniversalPerturbation
from .simba import SimBA
from .estimation import NES, BanditsTD
from .decision import BoundaryAttack, DecisionAttack, HopSkipJump, RayS

ATTACKS = Registry("attack")
_PIXEL = ("linf", "l2", "l1")
# access: white-box (gradients) | score (scores/losses only) | decision (the decision only).
# objective: "any" (takes the task's objective) or "classification" (fixed classification losses).
for _name, _cls, _meta in (
    ("fgsm", FGSM, dict(access="white-box", norms=_PIXEL + ("param",), objective="any")),
    ("bim", BIM, dict(access="white-box", norms=_PIXEL, objective="any")),
    ("pgd", PGD, dict(access="white-box", norms=_PIXEL + ("param",), objective="any")),
    ("mifgsm", MIFGSM, dict(access="white-box", norms=_PIXEL, objective="any")),
    ("apgd-ce", APGD, dict(access="white-box", norms=_PIXEL + ("param",), objective="any")),
    ("apgd-dlr", APGDDLR, dict(access="white-box", norms=_PIXEL, objective="classification")),
    ("apgd-t", APGDT, dict(access="white-box", norms=_PIXEL, objective="classification")),
    ("cw-l2", CarliniWagnerL2, dict(access="white-box", norms=("l2",), objective="any")),
    ("deepfool", DeepFool, dict(access="white-box", norms=("linf", "l2"), objective="classification")),
    ("fab-t", FABT, dict(access="white-box", norms=_PIXEL, objective="classification")),
    ("parametric-pgd", ParametricPGD, dict(access="white-box", norms=("param",), objective="any")),
    ("square", Square, dict(access="score", norms=("linf", "l2", "l1"), objective="any")),
    ("simba", SimBA, dict(access="score", norms=("l2",), objective="any")),
    ("nes", NES, dict(access="score", norms=("linf", "l2"), objective="any")),
    ("bandits", BanditsTD, dict(access="score", norms=("linf", "l2"), objective="any")),
    ("hopskipjump", HopSkipJump, dict(access="decision", norms=("linf", "l2"), objective="any")),
    ("rays", RayS, dict(access="decision", norms=("linf",), objective="any")),
    ("boundary", BoundaryAttack, dict(access="decision", norms=("l2",), objective="any")),
):
    ATTACKS.register(_name, _cls, doc=(_cls.__doc__ or "").strip().splitlines()[0], **_meta)


def list_attacks(**where) -> list[str]:
    """Registered attack names, filtered by metadata: ``list_attacks(access="decision")``."""
    return ATTACKS.names(**where)


def create_attack(name: str, threat: ThreatModel, **kwargs) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", threat, steps=40)``. An
    ``objective`` is passed on only to attacks that take one (``objective="any"`` in their metadata)."""
    meta = ATTACKS.metadata(name)
    if "objective" in kwargs and meta["objective"] != "any":
        objective = kwargs.pop("objective")
        if objective is not None and getattr(objective, "task", "classification") != "classification":
            raise InputError(f"attack {name!r} uses fixed classification losses and cannot attack the "
                             f"{type(objective).__name__} objective; use one of {', '.join(list_attacks(objective='any'))}")
    return ATTACKS.create(name, threat, **kwargs)


__all__ = [
    "AdversarialPatch", "BlurLightingThreat", "ColorThreat", "Ensemble", "GeometricThreat", "InputDiversity",
    "ParametricPGD", "ParametricThreat", "RandomTransform", "TransferMatrix", "TransferResult", "UniversalPerturbation",
    "survival_rate", "transfer_attack", "transfer_matrix",
    "APGD", "APGDDLR", "APGDT", "ATTACKS", "Attack", "AttackContext", "AttackResult", "BIM", "BPDA",
    "BanditsTD", "BoundaryAttack", "CarliniWagnerL2", "DecisionAttack", "DeepFool", "FABT", "HopSkipJump", "NES", "RayS",
    "SimBA", "Square", "FGSM", "IterativeAttack", "MIFGSM", "PGD", "apgd_checkpoints",
    "create_attack", "list_attacks", "local_linearity", "project_hyperplane_box",
]
