"""The reference detector, trained once on procedural scenes and cached as safetensors under
``$ROBUSTLAB_DATA/detection`` (default ``./data-cache/detection``), keyed by every setting that changes
the weights; and loading a detector by name (``pretrained``, a run directory, a .safetensors file, or
``torchvision:<name>`` where torchvision imports)."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...weights import weights_file, cache_dir, cached_weights, load_weights, save_weights, settings_key, setup_from_metadata
from .data import SCENE_CLASSES, synthetic_scenes
from .model import TinyDetector
from .train import predict, train_detector

log = logging.getLogger(__name__)

MODEL_FILE = "detector.safetensors"
#: the seed of the validation scenes (training scenes use 1 + 1000 * seed)
VALIDATION_SEED = 999_999


@dataclass(frozen=True)
class DetectorSetup:
    """Architecture, data and schedule of a detector (with ``eps`` > 0: PGD adversarial training, the shared
    ``pgd`` method with ``attack_steps`` steps; else the shared ``standard`` method)."""

    width: int = 16
    num_classes: int = len(SCENE_CLASSES)
    scenes: int = 4000
    size: int = 64
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    eps: float = 0.0
    attack_steps: int = 3
    seed: int = 0

    @property
    def method(self) -> str:
        return "pgd" if self.eps > 0 else "standard"

    def key(self) -> str:
        return settings_key(self)

    def new_model(self) -> TinyDetector:
        """The untrained detector, its initial weights drawn from ``seed`` (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return TinyDetector(self.num_classes, self.width)

    def train_data(self):
        return synthetic_scenes(self.scenes, 1 + 1000 * self.seed, self.size, SCENE_CLASSES[:self.num_classes])

    def validation_data(self, n: int = 200):
        return synthetic_scenes(n, VALIDATION_SEED, self.size, SCENE_CLASSES[:self.num_classes])


#: the range of each setting a weight file's metadata may ask for (checked before building the model)
DETECTOR_BOUNDS = {"width": (1, 512), "num_classes": (1, len(SCENE_CLASSES)), "scenes": (1, 10 ** 6), "size": (16, 1024),
                   "steps": (1, 10 ** 7), "batch_size": (1, 4096), "lr": (1e-12, 10.0), "eps": (0.0, 1.0),
                   "attack_steps": (1, 1000), "seed": (0, 2 ** 63 - 1)}


def pretrained_detector(setup: DetectorSetup = DetectorSetup(), cache: str | Path | None = None, retrain: bool = False,
                        device: str | torch.device = "cpu", progress: bool = True, validation: int = 200) -> TinyDetector:
    """The trained detector of `setup` (trained and cached on first use: 3-6 minutes on 2 CPU cores), on
    `device`; its metrics on ``validation`` scenes are written in the JSON file next to the weights."""
    from .metrics import detection_metrics

    folder = Path(cache) if cache is not None else cache_dir("detection")
    path = folder / f"detector-{setup.key()}.safetensors"

    def train(model: TinyDetector) -> dict:
        log.info("training the detector (%s, seed %d, %d steps); cached at %s", setup.method, setup.seed, setup.steps, path)
        losses = train_detector(model, setup.train_data(), setup.steps, setup.batch_size, setup.lr, setup.seed,
                                setup.method, setup.eps, setup.attack_steps, progress=progress)
        val = setup.validation_data(validation)
        metrics = detection_metrics(predict(model, val.x), val.targets)
        log.info("detector validation (%d scenes): mAP@0.5 %.3f, mAP %.3f, recall %.3f", validation, metrics["map_50"],
                 metrics["map"], metrics["recall"])
        return {"final_loss": losses[-1], "validation": metrics}

    return cached_weights(setup.new_model().to(device), path, train, asdict(setup), retrain)


def save_detector(model: TinyDetector, setup: DetectorSetup, path: str | Path) -> None:
    save_weights(model, path, {"setup": json.dumps(asdict(setup))})


def load_detector(spec: str | Path = "pretrained", device: str | torch.device = "cpu"):
    """``(model, setup)``: ``"pretrained"``, a run directory of ``robustlab detection train|defend``, a
    .safetensors file, or ``torchvision:<detector>`` (setup None; see ``torchvision_detector``)."""
    if str(spec) == "pretrained":
        return pretrained_detector(device=device), DetectorSetup()
    if str(spec).startswith("torchvision:"):
        from .zoo import torchvision_detector

        return torchvision_detector(str(spec).split(":", 1)[1]).to(device), None
    path = weights_file(spec, MODEL_FILE, "detector", "'pretrained', a run directory written by `robustlab detection "
                        "train` or `defend`, a .safetensors file, or torchvision:<name>")
    setup = setup_from_metadata(path, DetectorSetup, DETECTOR_BOUNDS, "detector")
    return load_weights(setup.new_model(), path).to(device).eval(), setup
