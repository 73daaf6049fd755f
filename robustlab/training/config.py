"""The settings of one training run, declared once: ``TrainConfig``.

The loop's own settings are declared here; each method's settings (``trades_beta``, ``llr_steps``,
...) are declared with the method in ``training/methods.py`` and registered in ``METHODS``;
``TrainConfig`` is the loop's settings plus the fields of every registered method's settings, under
their flat names. The CLI flags (``robustlab train --trades-beta``), the YAML ``train:`` sections of
jobs and the run's ``config.yaml`` are all derived from it.

    TrainConfig(method="trades", eps=0.1, trades_beta=6)   # InputError listing every bad value
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from ..errors import InputError, UnknownNameError
from ..progress import TensorBoardSettings
from ..threat import ThreatModel
from .methods import METHODS, method_settings_fields


class LoopSettings(TensorBoardSettings):
    """The settings of the loop itself (every method). ``batch_size`` is per process; ``tensorboard``
    (declared in ``progress.TensorBoardSettings``) also writes each epoch's numbers for TensorBoard."""

    settings_name: ClassVar[str] = "the training settings"
    settings_prefix: ClassVar[str] = "train."

    method: str = Field("standard", description="training method", json_schema_extra={"known": METHODS.names})
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, description="batch size per process")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="learning rate (before scaling, warm-up and schedule)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    schedule: Literal["constant", "cyclic", "step"] = Field("constant", description="learning-rate schedule")
    step_milestones: tuple[float, ...] = Field((0.5, 0.75), description="fractions of training where the step schedule divides the lr by 10")
    lr_scaling: Literal["none", "linear"] = Field("none", description="scale lr by the world size (linear: Goyal et al. 2017)")
    warmup_epochs: float = Field(0.0, ge=0, description="linear LR warm-up epochs")
    norm: Literal["linf", "l2", "l1"] = Field("linf", description="threat norm of the inner attacks")
    eps: float = Field(0.3, ge=0, description="threat radius of the inner attacks")
    eps_warmup_epochs: float = Field(0.0, ge=0, description="epochs of a linear eps ramp from 0")
    eval_n: int = Field(500, ge=1, description="points for per-epoch clean/robust accuracy (train subset and val)")
    eval_steps: int = Field(10, ge=1, description="PGD steps of the per-epoch robust accuracy")
    co_action: Literal["warn", "stop"] = Field("warn", description="on catastrophic overfitting")
    snapshot_every: int = Field(0, ge=0, description="save parameters every k epochs (0: off)")
    snapshot_steps: int = Field(0, ge=0, description="also save parameters every k optimizer steps and at the start (0: off)")
    local_sgd_period: int = Field(0, ge=0, description="post-local SGD model averaging period in steps (0: off)")
    seed: int = Field(0, description="seed of shuffling and random starts")
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="mixed precision of training forward/backward passes (autocast; fp16 with a gradient "
                           "scaler); every per-epoch measurement and evaluation stays float32")
    channels_last: bool = Field(False, description="keep the model's weights and the batches in the channels-last "
                                                   "memory format (faster convolutions on GPUs with tensor cores)")
    compile: Literal["off", "inductor", "aot_eager", "cudagraphs"] = Field(
        "off", description="torch.compile the training forward/backward with this backend (off by default: "
                           "compiled kernels may round differently in the last bits)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        try:
            METHODS.get(v)
        except UnknownNameError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _valid_threat(self):
        try:
            ThreatModel(self.norm, self.eps)
        except InputError as e:
            raise ValueError(str(e)) from None
        return self

    #: settings added after state.pt files began storing fingerprints: left out at these values, so the
    #: fingerprint of a run that does not use them stays what it was (older state.pt files still resume)
    added_later: ClassVar[dict] = {"amp": "off", "channels_last": False, "compile": "off", "tensorboard": False}

    #: settings that change only what is written beside the run (not its numbers): a resume may change them
    output_only: ClassVar[tuple[str, ...]] = ("tensorboard",)

    def fingerprint(self) -> dict:
        """Settings that must match for a resume to continue the same run (also the run's config.yaml);
        ``amp``, ``channels_last``, ``compile`` and ``tensorboard`` appear once they are not at their defaults."""
        d = self.model_dump()
        d["step_milestones"] = list(d["step_milestones"])
        return {k: v for k, v in d.items() if k not in self.added_later or v != self.added_later[k]}


#: the loop's settings plus every registered method's settings (flat names)
TrainConfig = create_model("TrainConfig", __base__=LoopSettings, __module__=__name__,
                           __doc__="Settings of one training run (all serialisable): the loop's settings "
                                   "(LoopSettings) and every training method's own settings.",
                           **method_settings_fields())
