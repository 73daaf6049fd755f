"""The settings of ``robustlab ocr`` verbs, one model per concern, each shared by the verbs that need it
(their fields are the verbs' flags, see ``robustlab.runs.taskcli``):

============================  ===========================================  =====================
model                         what it sets                                 verbs
============================  ===========================================  =====================
``CRNNTrainSettings``         the CRNN's training (``CRNNSetup``)          train
``RecogniserSettings``        the recogniser attacked and its CRNN          attack
``LinesSettings``             the text lines attacked                      attack
``TextAttackSettings``        the attack, its threat and its goal          attack
``QueryBudgetSettings``       the queries per line of black-box attacks    attack, reproduce
``TesseractSettings``         Tesseract's worker processes                 attack, reproduce
``OCRReproduceSettings``      the reference tables' sizes                  reproduce
============================  ===========================================  =====================
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ...argtypes import check_model_specs
from ...runs.schema import check_eps_list
from ...settings import StrictSettings
from .attacks import ATTACK_NAMES
from .masks import MASKS

__all__ = ["CRNNTrainSettings", "RecogniserSettings", "LinesSettings", "TextAttackSettings", "QueryBudgetSettings",
           "TesseractSettings", "OCRReproduceSettings"]

AttackName = Literal[ATTACK_NAMES]  # type: ignore[valid-type]
MaskName = Literal[MASKS]  # type: ignore[valid-type]


class CRNNTrainSettings(StrictSettings):
    """How ``robustlab ocr train`` trains the CRNN (with the run's seed, the key of the weights cache)."""

    steps: int = Field(1500, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="rendered lines per step")
    lr: float = Field(3e-3, gt=0, description="learning rate (Adam)")
    retrain: bool = Field(False, description="ignore cached weights")


class RecogniserSettings(StrictSettings):
    """The recogniser attacked: Tesseract, or a CRNN named by ``model`` (checked before a run is made)."""

    target: Literal["tesseract", "crnn"] = Field("tesseract", description="the recogniser attacked")
    model: str = Field("pretrained", description="the CRNN (with --target crnn): pretrained (the cached reference "
                                                 "net), a run directory or a .safetensors file")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str, info: ValidationInfo) -> str:
        if info.data.get("target") == "crnn":
            check_model_specs(model, "'pretrained', a run directory written by `robustlab ocr train` or a "
                                     ".safetensors file")
        return model


class LinesSettings(StrictSettings):
    """The text lines attacked."""

    data: Literal["synthetic", "clean", "scanned"] = Field("synthetic", description="the text lines")
    n: int = Field(10, ge=1, description="rendered lines")


class TextAttackSettings(StrictSettings):
    """The attack, its threat (norm, radius, the pixels it may change) and what it wants."""

    attack: AttackName = Field("square", description="the attack")
    steps: int = Field(50, ge=1, description="steps of white-box attacks")
    norm: Literal["linf", "l2"] = Field("linf", description="threat norm")
    eps: float = Field(0.2, gt=0, description="threat radius (pixel values in [0, 1])")
    mask: MaskName = Field("whole", description="which pixels may change")
    goal: Literal["untargeted", "targeted"] = Field(
        "untargeted", description="targeted: one letter of each line's longest word changed")


class QueryBudgetSettings(StrictSettings):
    """The queries a black-box attack may spend on one line."""

    max_queries: int = Field(1000, ge=1, description="queries per line (black-box attacks)",
                             json_schema_extra={"aliases": ["--budget"]})


class TesseractSettings(StrictSettings):
    """How Tesseract is queried."""

    workers: int = Field(1, ge=1, description="Tesseract worker processes")


class OCRReproduceSettings(StrictSettings):
    """Where ``robustlab ocr reproduce`` writes the reference tables and the sizes it measures them at."""

    out: str = Field("runs/ocr-reproduce", description="output folder")
    n: int = Field(50, ge=1, description="rendered lines")
    eps: list[float] = Field([0.05, 0.2], min_length=1, description="two perturbation sizes (Linf)")
    cw_eps: float = Field(1.0, gt=0, description="L2 size of Carlini-Wagner on the CRNN")
    ensemble: int = Field(3, ge=0, description="CRNNs in the transfer ensemble (< 2: no ensemble row)")
    seed: int = Field(0, description="seed of the rendered lines and the attacks")

    _eps = field_validator("eps")(check_eps_list)
