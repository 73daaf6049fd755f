"""The detection verbs' settings, declared once (their flags and config.yaml derive from them): one
model per concern, shared between the verbs that need it.

- ``DetectorInputSettings``: which detector and which images (``--model``, ``--data``, ``--n``);
- ``AttackSettings`` (attack), ``EvaluationSettings`` (evaluate): the attacker's goal, eps and budget;
- ``TrainingSettings`` (train), ``DefenceSettings`` (defend): how the detector is (re)trained;
- ``ReproduceSettings``: the reproduction tables.

The tracking verbs' models are in ``tracking_cli``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from ...runs.schema import check_eps_list
from ...settings import StrictSettings
from .objectives import OBJECTIVES

def existing_detector(spec: str) -> str:
    """Refuse a --model path that does not exist before a run folder is made or a model loads."""
    if spec != "pretrained" and not spec.startswith("torchvision:") and not Path(spec).exists():
        raise ValueError("no such file or folder; pass pretrained, a run directory, a .safetensors file or "
                         "torchvision:<name>")
    return spec


#: a detector's name: ``pretrained``, ``torchvision:<name>``, or an existing run directory or .safetensors file
DetectorSpec = Annotated[str, AfterValidator(existing_detector)]
#: the attacker's goals: the objectives' names
Goal = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]


class DetectorInputSettings(StrictSettings):
    """The detector a verb uses and the images it measures."""

    settings_name: ClassVar[str] = "the detector and data settings"
    model: DetectorSpec = Field("pretrained", description="pretrained | run dir | .safetensors | torchvision:<name>")
    data: str = Field("synthetic", description="synthetic (validation scenes) or coco:FOLDER")
    n: int = Field(64, ge=1, description="images")

    @field_validator("data")
    @classmethod
    def _data_exists(cls, spec: str) -> str:
        """Refuse a bad --data before any model is loaded (or trained)."""
        if spec != "synthetic" and not (spec.startswith("coco:") and Path(spec[5:]).is_dir()):
            raise ValueError("must be synthetic or coco:FOLDER (an existing folder)")
        return spec


class GoalSettings(StrictSettings):
    """The attacker's objective and the white-box budget (shared by attack and evaluate)."""

    goal: Goal = Field("vanishing", description="the attacker's objective")
    steps: int = Field(20, ge=1, description="white-box steps")


class AttackSettings(GoalSettings):
    """One attack against a detector (``attacks.attack_detector``)."""

    settings_name: ClassVar[str] = "the attack settings"
    attack: Literal["pgd", "apgd", "square"] = Field("pgd", description="the attack")
    eps: float = Field(8 / 255, ge=0, le=1, description="Linf size of the perturbation")
    max_queries: int = Field(500, ge=1, description="Square's queries per image", json_schema_extra={"aliases": ["--queries"]})


class EvaluationSettings(GoalSettings):
    """mAP and recall against eps under the adaptive cascade (``defense.evaluate_detector``)."""

    settings_name: ClassVar[str] = "the evaluation settings"
    eps: list[float] = Field([2 / 255, 4 / 255, 8 / 255], min_length=1, description="Linf sizes")

    _eps = field_validator("eps")(check_eps_list)


class TrainingSettings(StrictSettings):
    """Training the detector on procedural scenes (``pretrained.DetectorSetup``; cached)."""

    settings_name: ClassVar[str] = "the training settings"
    steps: int = Field(2000, ge=1, description="training steps")
    scenes: int = Field(4000, ge=1, description="training scenes")
    width: int = Field(16, ge=1, le=512, description="channels of the first conv layer")
    lr: float = Field(3e-3, gt=0, description="learning rate (Adam)")
    retrain: bool = Field(False, description="ignore cached weights")
    n: int = Field(200, ge=1, description="validation scenes")


class DefenceSettings(StrictSettings):
    """PGD adversarial fine-tuning (``defense.defend_detector``) and its checks."""

    settings_name: ClassVar[str] = "the defence settings"
    steps: int = Field(300, ge=1, description="fine-tuning steps")
    eps: float = Field(4 / 255, ge=0, le=1, description="Linf size of the training and evaluation attacks")
    attack_steps: int = Field(3, ge=1, description="PGD steps per training batch")
    checks: Literal["cheap", "all"] = Field("cheap", description="which gradient-masking checks run")


class ReproduceSettings(StrictSettings):
    """``robustlab detection reproduce`` (``reproduce.reproduce``)."""

    settings_name: ClassVar[str] = "the reproduction settings"
    out: str = Field("runs/detection-reproduce", description="output folder")
    quick: bool = Field(False, description="tiny settings (a smoke test, not the table)")
    seed: int = Field(0, description="seed of the attacks")
