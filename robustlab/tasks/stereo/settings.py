"""The settings of ``robustlab stereo`` verbs, one model per concern, each shared by the verbs that need it
(their fields are the verbs' flags, see ``robustlab.runs.taskcli``):

===========================  =================================================  ==================
model                        what it sets                                       verbs
===========================  =================================================  ==================
``StereoTrainSettings``      the network's training (``StereoSetup``)           train
``StereoModelSettings``      the model attacked or fine-tuned                   attack, defend
``StereoDataSettings``       the pairs attacked                                 attack, evaluate
``ViewsSettings``            the views perturbed                                attack, evaluate
``AttackStepsSettings``      PGD's steps                                        attack, evaluate
``StereoAttackSettings``     one attack: method, radius, what it wants          attack
``StereoDefendSettings``     the defence's fine-tuning and its checks           defend
``StereoEvaluateSettings``   the models and radii of the curves                 evaluate
``StereoReproduceSettings``  the reference tables measured                      reproduce
===========================  =================================================  ==================

A ``--model`` names ``pretrained``, a run directory or a .safetensors file; one that names neither is an
error before a run directory is made.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from ...argtypes import check_model_specs
from ...runs.schema import check_eps_list
from ...settings import StrictSettings

__all__ = ["StereoTrainSettings", "StereoModelSettings", "StereoDataSettings", "ViewsSettings",
           "AttackStepsSettings", "StereoAttackSettings", "StereoDefendSettings", "StereoEvaluateSettings",
           "StereoReproduceSettings", "target_spec"]

MODEL_SPECS = "'pretrained', a run directory written by `robustlab stereo train/defend`, or a .safetensors file"


def _existing_models(specs):
    check_model_specs(specs, MODEL_SPECS)  # a one-line InputError, before any run directory is made
    return specs


def target_spec(spec: str) -> tuple[str, float | None]:
    """``--target`` read: ``none``, ``region``, ``shift:S`` (S px added) or ``scale:K`` -> (kind, number)."""
    kind, sep, value = spec.partition(":")
    if spec in ("none", "region"):
        return spec, None
    if kind in ("shift", "scale") and sep:
        try:
            return kind, float(value)
        except ValueError:
            raise ValueError(f"expected a number after '{kind}:'") from None
    raise ValueError("must be none, shift:S, scale:K or region")


class StereoTrainSettings(StrictSettings):
    """How ``robustlab stereo train`` trains the network (with the run's seed, the key of the weights cache)."""

    steps: int = Field(1600, ge=1, description="optimizer steps")
    scenes: int = Field(800, ge=1, description="training scenes")
    height: int = Field(64, ge=1, description="scene height in pixels")
    width: int = Field(128, ge=1, description="scene width in pixels")
    max_disp: int = Field(32, ge=1, description="largest disparity the network predicts, in pixels")
    lr: float = Field(2e-3, gt=0, description="learning rate")
    retrain: bool = Field(False, description="ignore cached weights")


class StereoModelSettings(StrictSettings):
    """The one model a verb attacks or fine-tunes."""

    model: str = Field("pretrained", description="the model: pretrained (the cached reference net), a run "
                                                 "directory or a .safetensors file")

    _exists = field_validator("model")(_existing_models)


class StereoDataSettings(StrictSettings):
    """The pairs a verb runs on."""

    data: Literal["synthetic", "middlebury-motorcycle", "middlebury-motorcycle-full"] = Field(
        "synthetic", description="synthetic validation scenes of the model's setup, or the Middlebury motorcycle "
                                 "pair (half resolution; -full for full)")
    n: Optional[int] = Field(None, ge=1, description="number of synthetic scenes (default: the setup's n_val)")


class ViewsSettings(StrictSettings):
    """The views an attack perturbs."""

    views: Literal["left", "right", "both", "consistent"] = Field(
        "both", description="the views perturbed; consistent: the left one is the right one warped by the true "
                            "disparity")


class AttackStepsSettings(StrictSettings):
    """The steps of PGD."""

    steps: int = Field(10, ge=1, description="PGD steps")


class StereoAttackSettings(StrictSettings):
    """One attack on a stereo model: method, Linf radius and what it wants (``--target``)."""

    method: Literal["pgd", "fgsm"] = Field("pgd", description="the attack")
    eps: float = Field(0.02, ge=0, description="Linf radius (pixel values in [0, 1])")
    reference: Literal["gt", "prediction"] = Field(
        "gt", description="untargeted: maximise the error to the ground truth or to the clean prediction")
    target: str = Field("none", description="none | shift:S (all disparities + S px) | scale:K | region (the nearest "
                                            "20% of valid pixels take the background's disparity; the error to the "
                                            "target is measured there)")

    @field_validator("target")
    @classmethod
    def _target(cls, spec: str) -> str:
        target_spec(spec)
        return spec


class StereoDefendSettings(StrictSettings):
    """``robustlab stereo defend``: adversarial fine-tuning (``DefenseConfig``) and the checks after it."""

    steps: int = Field(150, ge=1, description="fine-tuning steps")
    eps: float = Field(0.02, ge=0, description="Linf radius of the training attack")
    attack_steps: int = Field(3, ge=1, description="PGD steps per training batch")
    no_adversarial: bool = Field(False, description="fine-tune on clean pairs (ablation)")
    lr_consistency: float = Field(0.0, ge=0, description="weight of the left-right feature consistency")
    llr: float = Field(0.0, ge=0, description="weight of the local-linearity term")
    checks: Literal["cheap", "all"] = Field("cheap", description="gradient-masking checks to run")


class StereoEvaluateSettings(StrictSettings):
    """The models and Linf radii of ``robustlab stereo evaluate``'s curves."""

    model: Optional[list[str]] = Field(None, description="a model: pretrained, a run directory or a .safetensors "
                                                         "file; repeat for several models (default: pretrained)",
                                       json_schema_extra={"action": "append"})
    eps: list[float] = Field([0.005, 0.01, 0.02], min_length=1, description="Linf radii")

    _exists = field_validator("model")(_existing_models)
    _eps = field_validator("eps")(check_eps_list)


class StereoReproduceSettings(StrictSettings):
    """Where ``robustlab stereo reproduce`` writes the reference tables and which it measures."""

    out: str = Field("runs/stereo-reproduce", description="output folder")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds of the defence fine-tuning")
    parts: list[Literal["attacks", "transfer", "physical", "defence"]] = Field(
        ["attacks", "transfer", "physical", "defence"], description="tables to measure")
    finetune_steps: int = Field(150, ge=1, description="fine-tuning steps of the defence")
