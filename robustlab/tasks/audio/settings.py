"""The voice task's settings, one model per concern; the verbs of ``cli.py`` share them and their flags
come from here (``runs.taskcli``): the corpus, the model and clips attacked, an attack, an evaluation,
training, the defence's starting point and the reproduction."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from ...settings import StrictSettings

ATTACKS = ("pgd", "apgd", "cw", "square", "simba", "universal")
METHODS = ("standard", "pgd", "fgsm_rs", "trades")


class CorpusSettings(StrictSettings):
    """The espeak-ng corpus synthesised (train clips, and the unseen voices attacked with ``--data espeak``)."""

    voices: int = Field(0, ge=0, description="synthesise only the first N voices (0: all 84); a quarter of them "
                                             "is held out and attacked (refused if the model was trained on any)")
    words: str = Field("", description="comma-separated words (default: the ten digits, yes, no, stop, go)")
    takes: int = Field(2, ge=1, description="utterances per word and voice")


class ModelDataSettings(StrictSettings):
    """The keyword CNN and the clips it is tested on."""

    model: str = Field("pretrained", description="pretrained | pretrained-at | a run directory | a .safetensors file")
    data: str = Field("espeak", description="espeak (unseen voices of the corpus) or a folder of <label>/<file>.wav")
    n: int = Field(100, ge=1, description="clips attacked")


class AttackSettings(StrictSettings):
    """One attack on the waveform, bounded in dB relative to each clip (Linf) or by SNR (L2)."""

    attack: Literal[ATTACKS] = Field("pgd", description="the attack on the waveform")
    db: float = Field(-30.0, allow_inf_nan=False, description="Linf bound, dB relative to each clip (C&W 2018)")
    snr: Optional[float] = Field(None, allow_inf_nan=False,
                                 description="L2 bound as a minimum SNR in dB (instead of --db)")
    steps: int = Field(50, ge=1, description="steps of white-box attacks")
    max_queries: int = Field(1000, ge=1, description="queries per clip (black-box attacks)",
                             json_schema_extra={"aliases": ["--budget"]})
    eot: int = Field(1, ge=1, description="over the air: attack through random rooms, noise and gain, averaging "
                                          "the gradient over this many draws (> 1)")
    defence: Literal["none", "quantise-8bit", "downsample-8kHz", "low-pass-4kHz"] = Field(
        "none", description="a preprocessing defence before the model, attacked with BPDA")


class EvaluationSettings(StrictSettings):
    """The shared evaluation (``robustness_curve``) at Linf bounds in dB relative to each clip."""

    db: list[float] = Field([-40.0, -30.0, -20.0], min_length=1, description="Linf bounds, dB relative to the clip")
    attacks: str = Field("fast", description="the shared suite (fast, standard) or attack names")
    sanity: Literal["cheap", "all", "none"] = Field("cheap", description="the shared gradient-masking checks at "
                                                                          "each bound (verdicts in summary.json)")


class TrainingSettings(StrictSettings):
    """Training the keyword CNN with a shared training method (adversarial ones on the waveform)."""

    method: Literal[METHODS] = Field("standard", description="a shared training method")
    at_db: float = Field(-30.0, le=0, allow_inf_nan=False,
                         description="Linf bound of the inner attacks, dB relative to the clip")
    epochs: int = Field(12, ge=1, description="training epochs")
    batch_size: int = Field(64, ge=1, description="clips per training step")
    lr: float = Field(3e-3, gt=0, description="learning rate (Adam)")


class DefendSettings(StrictSettings):
    """What ``defend`` starts from and how its model is then checked."""

    model: str = Field("", description="fine-tune this model (pretrained | pretrained-at | a run directory | a "
                                       ".safetensors file); empty: train from scratch")

    @field_validator("model")
    @classmethod
    def _exists(cls, v: str) -> str:
        if v and v not in ("pretrained", "pretrained-at") and not Path(v).exists():
            raise ValueError(f"{v}: no such file or folder; pass pretrained, pretrained-at, a run directory or a "
                             ".safetensors file (empty: train from scratch)")
        return v
    n: int = Field(100, ge=1, description="unseen-voice clips of the evaluation")


class ReproduceSettings(StrictSettings):
    """``robustlab audio reproduce``: the tables of docs/results/audio.md."""

    out: str = Field("runs/audio-reproduce", description="output folder")
    n: int = Field(100, ge=1, description="test clips attacked")
    quick: bool = Field(False, description="tiny settings (a smoke test, not the published numbers)")
    seed: int = Field(0, description="seed of the test clips drawn and of the attacks")
