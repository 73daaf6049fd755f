"""The reference CRNN, trained once and cached as safetensors under ``$ROBUSTLAB_DATA/ocr`` (default
``./data-cache/ocr``), keyed by every setting that changes the weights."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch


from ...errors import InputError
from ...weights import weights_file, cache_dir, cached_weights, load_weights, save_weights, settings_key, setup_from_metadata
from .model import CRNN
from .render import synthetic_lines
from .train import evaluate_crnn, train_crnn

log = logging.getLogger(__name__)

MODEL_FILE = "crnn.safetensors"


@dataclass(frozen=True)
class CRNNSetup:
    """Architecture and schedule of the reference recogniser (training seed ``seed``)."""

    hidden: int = 48
    channels: tuple[int, int, int, int] = (16, 32, 64, 96)
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 256
    seed: int = 0

    def key(self) -> str:
        return settings_key(self)

    def new_model(self) -> CRNN:
        return CRNN(self.hidden, self.channels)


#: the range of each setting a weight file's metadata may ask for (``load_crnn`` checks them before
#: building the model: at the upper ends the CRNN has about 20 M parameters)
CRNN_BOUNDS = {"hidden": (1, 1024), "channels": (1, 512), "steps": (1, 10 ** 7), "batch_size": (1, 4096),
               "lr": (1e-12, 10.0), "width": (8, 8192), "seed": (0, 2 ** 63 - 1)}


def pretrained_crnn(setup: CRNNSetup = CRNNSetup(), cache: str | Path | None = None, retrain: bool = False,
                    device: str | torch.device = "cpu") -> CRNN:
    """The trained reference CRNN for `setup` (about 1500 steps; trained and cached on first use), on `device`."""
    folder = Path(cache) if cache is not None else cache_dir("ocr")
    path = folder / f"crnn-{setup.key()}.safetensors"

    def train(model: CRNN) -> dict:
        log.info("training the CRNN (seed %d, %d steps); cached at %s", setup.seed, setup.steps, path)
        losses = train_crnn(model, setup.steps, setup.batch_size, setup.lr, setup.seed, setup.width)
        val = evaluate_crnn(model, synthetic_lines(200, 999))
        log.info("CRNN validation (200 styled lines): CER %.2f%%, WER %.2f%%", 100 * val["cer"], 100 * val["wer"])
        return {"final_loss": losses[-1], "validation": val}

    return cached_weights(setup.new_model().to(device), path, train, asdict(setup), retrain)


#: training steps of the extra ensemble members (shorter than the reference net's 1500)
ENSEMBLE_STEPS = 600


def pretrained_ensemble(n: int = 3, steps: int = ENSEMBLE_STEPS, cache: str | Path | None = None,
                        base: CRNNSetup = CRNNSetup()) -> list[CRNN]:
    """``n`` CRNNs for transfer attacks: the reference net (``base``) and ``n - 1`` more trained from
    seeds 1, 2, ... for ``steps`` steps each (cached like the reference; their validation CER is in
    the JSON file written next to each)."""
    if n < 1:
        raise InputError(f"an ensemble needs n >= 1 CRNNs, got {n}")
    members = [replace(base, seed=base.seed + i, steps=steps) for i in range(1, n)]
    return [pretrained_crnn(base, cache)] + [pretrained_crnn(s, cache) for s in members]


def save_crnn(model: CRNN, setup: CRNNSetup, path: str | Path, **metadata: str) -> None:
    save_weights(model, path, {"setup": json.dumps(asdict(setup)), **metadata})


def load_crnn(spec: str | Path = "pretrained") -> tuple[CRNN, CRNNSetup]:
    """``"pretrained"``, a run directory written by ``robustlab ocr train`` or a .safetensors file."""
    if str(spec) == "pretrained":
        return pretrained_crnn(), CRNNSetup()
    path = weights_file(spec, MODEL_FILE, "CRNN", "'pretrained', a run directory written by `robustlab ocr train`, "
                        "or a .safetensors file")
    setup = setup_from_metadata(path, CRNNSetup, CRNN_BOUNDS, "CRNN")
    return load_weights(setup.new_model(), path).eval(), setup
