"""The reference stereo setup and its trained network, cached on disk.

Nothing can be downloaded, so ``pretrained_stereo()`` trains ``StereoNet`` on procedural scenes
once (about 5 minutes on one CPU core at the default size) and caches the weights as safetensors
under ``$ROBUSTLAB_DATA/stereo`` (default ``./data-cache/stereo``), keyed by every setting that
changes the weights. A later call loads them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...weights import weights_file, cache_dir, cached_weights, load_weights, save_weights, settings_key, setup_from_metadata
from .data import StereoDataset, synthetic_stereo
from .model import StereoNet
from .train import train_stereo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StereoSetup:
    """Scene size, training set and schedule of the reference network (training seed 0)."""

    h: int = 64
    w: int = 128
    max_disp: int = 32
    n_train: int = 800
    n_val: int = 16
    steps: int = 1600
    batch_size: int = 8
    lr: float = 2e-3
    features: int = 32
    hidden: int = 64
    seed: int = 0

    def key(self) -> str:
        return settings_key(self)

    def train_data(self) -> StereoDataset:
        return synthetic_stereo(self.n_train, self.h, self.w, self.max_disp, seed=1 + 1000 * self.seed)

    def val_data(self) -> StereoDataset:
        """Validation scenes: a seed never used for training."""
        return synthetic_stereo(self.n_val, self.h, self.w, self.max_disp, seed=999_999)

    def new_model(self) -> StereoNet:
        return StereoNet(self.max_disp, self.features, self.hidden)


#: the range of each setting a weight file's metadata may ask for (``load_stereo_model`` checks them
#: before building the network)
STEREO_BOUNDS = {"h": (8, 4096), "w": (8, 4096), "max_disp": (1, 512), "n_train": (1, 10 ** 6), "n_val": (1, 10 ** 5),
                 "steps": (1, 10 ** 7), "batch_size": (1, 4096), "lr": (1e-12, 10.0), "features": (1, 512),
                 "hidden": (1, 1024), "seed": (0, 2 ** 63 - 1)}


def pretrained_stereo(setup: StereoSetup = StereoSetup(), cache: str | Path | None = None, retrain: bool = False,
                      device: str | torch.device = "cpu") -> StereoNet:
    """The trained reference network for `setup` (trained and cached on first use), on `device`."""
    folder = Path(cache) if cache is not None else cache_dir("stereo")
    path = folder / f"stereonet-{setup.key()}.safetensors"

    def train(model: StereoNet) -> dict:
        log.info("training the reference stereo network (%d steps); cached at %s", setup.steps, path)
        torch.manual_seed(setup.seed)
        losses = train_stereo(model, setup.train_data(), steps=setup.steps, batch_size=setup.batch_size, lr=setup.lr,
                              seed=setup.seed)
        return {"final_loss": losses[-1]}

    return cached_weights(setup.new_model().to(device), path, train, asdict(setup), retrain)


MODEL_FILE = "stereonet.safetensors"


def save_stereo_model(model: StereoNet, setup: StereoSetup, path: str | Path, **metadata: str) -> None:
    """Weights with the setup in the safetensors metadata, so ``load_stereo_model`` rebuilds the net."""
    save_weights(model, path, {"setup": json.dumps(asdict(setup)), **metadata})


def load_stereo_model(spec: str | Path) -> tuple[StereoNet, StereoSetup]:
    """``"pretrained"`` (the cached reference net), a run directory, or a .safetensors file."""
    if str(spec) == "pretrained":
        setup = StereoSetup()
        return pretrained_stereo(setup), setup
    path = weights_file(spec, MODEL_FILE, "stereo model", "'pretrained', a run directory written by "
                        "`robustlab stereo train/defend`, or a .safetensors file")
    setup = setup_from_metadata(path, StereoSetup, STEREO_BOUNDS, "stereo")
    model = load_weights(setup.new_model(), path)
    return model.eval(), setup
