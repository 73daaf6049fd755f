"""Attacks: every attack is ``Attack(threat, objective, **hparams)(model, x, target) -> AttackResult``."""
from __future__ import annotations

from ..errors import unknown_name
from ..threat import ThreatModel
from .apgd import APGD, APGDDLR, APGDT, apgd_checkpoints
from .base import Attack, AttackContext, AttackResult, IterativeAttack
from .bpda import BPDA
from .gradient import BIM, FGSM, MIFGSM, PGD
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

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "apgd-ce": APGD,
    "apgd-dlr": APGDDLR,
    "apgd-t": APGDT,
    "cw-l2": CarliniWagnerL2,
    "deepfool": DeepFool,
    "fab-t": FABT,
    "parametric-pgd": ParametricPGD,
    "square": Square,
    "simba": SimBA,
    "nes": NES,
    "bandits": BanditsTD,
    "hopskipjump": HopSkipJump,
    "rays": RayS,
    "boundary": BoundaryAttack,
}


def list_attacks() -> list[str]:
    return sorted(ATTACKS)


def create_attack(name: str, threat: ThreatModel, **kwargs) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", threat, steps=40)``."""
    key = name.lower().replace("_", "-")
    if key not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    return ATTACKS[key](threat, **kwargs)


__all__ = [
    "AdversarialPatch", "BlurLightingThreat", "ColorThreat", "Ensemble", "GeometricThreat", "InputDiversity",
    "ParametricPGD", "ParametricThreat", "RandomTransform", "TransferMatrix", "TransferResult", "UniversalPerturbation",
    "survival_rate", "transfer_attack", "transfer_matrix",
    "APGD", "APGDDLR", "APGDT", "ATTACKS", "Attack", "AttackContext", "AttackResult", "BIM", "BPDA",
    "BanditsTD", "BoundaryAttack", "CarliniWagnerL2", "DecisionAttack", "DeepFool", "FABT", "HopSkipJump", "NES", "RayS",
    "SimBA", "Square", "FGSM", "IterativeAttack", "MIFGSM", "PGD", "apgd_checkpoints",
    "create_attack", "list_attacks", "project_hyperplane_box",
]
