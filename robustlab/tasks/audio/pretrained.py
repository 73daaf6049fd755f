"""The reference keyword-spotting CNNs, trained once with the shared training loop (``training.train``:
standard, or adversarial training on the waveform with any shared method) and cached as safetensors
under ``$ROBUSTLAB_DATA/audio``, keyed by every setting that changes the weights."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ...data import Dataset
from ...errors import CheckpointError
from ...threat import ThreatModel
from ...weights import (weights_file, cache_dir, cached_weights, load_weights, read_metadata, save_weights, settings_key,
                        setup_from_metadata)
from .metrics import accuracy
from .model import KeywordCNN
from .speech import PEAK, WORDS, SpeechSetup, speech_commands
from .threats import BOUNDS

log = logging.getLogger(__name__)

MODEL_FILE = "kws.safetensors"


@dataclass(frozen=True)
class KWSSetup:
    """Architecture and training of a keyword spotter: ``method`` a shared training method (``standard``,
    ``pgd``, ``trades``, ...) with its inner threat Linf ``at_db`` dB relative to the clip (peak
    ``PEAK``), ``attack_steps`` inner PGD steps."""

    channels: tuple[int, ...] = (16, 32, 64)
    classes: int = len(WORDS)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    method: str = "standard"
    at_db: float = -30.0
    attack_steps: int = 5
    top_db: float = 50.0
    seed: int = 0

    def key(self) -> str:
        return settings_key(self)

    def new_model(self) -> KeywordCNN:
        return KeywordCNN(self.classes, self.channels, top_db=self.top_db)

    def threat(self) -> ThreatModel:
        """The inner attacks' threat: Linf of ``at_db`` dB relative to clips of peak ``PEAK``."""
        return ThreatModel("linf", PEAK * 10 ** (self.at_db / 20), bounds=BOUNDS)


#: the range of each setting a weight file's metadata may ask for (checked before building the model)
KWS_BOUNDS = {"channels": (1, 512), "classes": (2, 10_000), "epochs": (1, 10 ** 5), "batch_size": (1, 4096),
              "lr": (1e-12, 10.0), "at_db": (-200.0, 0.0), "top_db": (1.0, 200.0), "attack_steps": (1, 10 ** 4), "seed": (0, 2 ** 63 - 1)}

STANDARD = KWSSetup()
ADVERSARIAL = replace(STANDARD, method="fgsm_rs", at_db=-50.0)  # FGSM-RS (Wong et al. 2020): AT at about twice the cost


def train_kws(model: KeywordCNN, setup: KWSSetup, train: Dataset, test: Dataset | None = None,
              progress: bool = True) -> dict:
    """Train ``model`` with the shared loop (Adam, cyclic schedule; adversarial methods ramp eps up from 0
    over the first quarter of the epochs); returns the history and test accuracy."""
    from ...training import TrainConfig, train as shared_train

    adversarial = setup.method != "standard"
    cfg = TrainConfig(method=setup.method, epochs=setup.epochs, batch_size=setup.batch_size, lr=setup.lr,
                      schedule="cyclic", eps=setup.threat().eps if adversarial else 0.0,
                      eps_warmup_epochs=setup.epochs / 4 if adversarial else 0.0,
                      attack_steps=setup.attack_steps, eval_n=min(100, len(train)), eval_steps=5, seed=setup.seed)
    torch.manual_seed(setup.seed)
    result = shared_train(model, train, test, cfg, progress=progress, threat=setup.threat())
    model.eval()
    out = {"history": result.history}
    if test is not None:
        out["test_accuracy"] = accuracy(model, test.x, test.y)
        log.info("keyword CNN (%s): test accuracy %.1f%% on unseen voices", setup.method, 100 * out["test_accuracy"])
    return out


def pretrained_kws(setup: KWSSetup = STANDARD, data: SpeechSetup = SpeechSetup(), cache: str | Path | None = None,
                   retrain: bool = False, device: str | torch.device = "cpu") -> KeywordCNN:
    """The trained reference CNN for ``setup`` on the synthesised corpus (trained and cached on first use)."""
    folder = Path(cache) if cache is not None else cache_dir("audio")
    path = folder / f"kws-{setup.key()}-{data.key()}.safetensors"

    def train(model: KeywordCNN) -> dict:
        sets = speech_commands(data, cache)
        log.info("training the keyword CNN (%s, %d epochs); cached at %s", setup.method, setup.epochs, path)
        return train_kws(model, setup, sets["train"], sets["test"])

    return cached_weights(setup.new_model().to(device), path, train, {**asdict(setup), "data": data.key()}, retrain)


def save_kws(model: KeywordCNN, setup: KWSSetup, path: str | Path, classes: list[str],
             trained_on: dict | None = None) -> None:
    """The weights with the setup's numbers under "setup" (checked on load), the method and classes apart, and
    ``trained_on`` ({"voices": [...], "words": [...]} of the corpus's training split, ``training_record``)
    under "trained_on", so that the model's held-out voices are known wherever its weights go."""
    numbers = {k: v for k, v in asdict(setup).items() if k != "method"}
    meta = {"setup": json.dumps(numbers), "method": setup.method, "classes": json.dumps(classes)}
    if trained_on is not None:
        meta["trained_on"] = json.dumps(trained_on)
    save_weights(model, path, meta)


def training_record(data: SpeechSetup, base: dict | None = None) -> dict:
    """{"voices", "words"} a model trained on ``data``'s training split has heard, with those of ``base`` (the
    record of the model it was fine-tuned from)."""
    base = base or {"voices": [], "words": []}
    return {"voices": sorted(set(base["voices"]) | set(data.split()[0])),
            "words": list(dict.fromkeys([*base["words"], *data.words]))}


def trained_on(spec: str | Path = "pretrained") -> dict | None:
    """The record ``save_kws`` stored with a model's weights ({"voices", "words"} it was trained on); the
    reference CNNs' from their corpus; None for weights written before the record existed."""
    if str(spec) in ("pretrained", "pretrained-at"):
        return training_record(SpeechSetup())
    path = weights_file(spec, MODEL_FILE, "keyword CNN", "a run directory or a .safetensors file")
    raw = read_metadata(path).get("trained_on")
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and all(isinstance(record.get(k), list) and all(isinstance(v, str) for v in record[k])
                                             for k in ("voices", "words"))):
        raise CheckpointError(f"{path}: its metadata's trained_on is not lists of voices and words")
    return record


def load_kws(spec: str | Path = "pretrained") -> tuple[KeywordCNN, KWSSetup, list[str]]:
    """(model, setup, class words) of ``"pretrained"`` (standard), ``"pretrained-at"`` (adversarially
    trained), a run directory written by ``robustlab audio train`` or a .safetensors file."""
    if str(spec) in ("pretrained", "pretrained-at"):
        setup = STANDARD if str(spec) == "pretrained" else ADVERSARIAL
        return pretrained_kws(setup), setup, list(WORDS)
    path = weights_file(spec, MODEL_FILE, "keyword CNN", "'pretrained', 'pretrained-at', a run directory "
                        "written by `robustlab audio train`, or a .safetensors file")
    setup = setup_from_metadata(path, KWSSetup, KWS_BOUNDS, "keyword CNN")
    meta = read_metadata(path)
    setup = replace(setup, method=meta.get("method", "standard")[:40])
    classes = _classes(meta.get("classes"), setup.classes, path)
    return load_weights(setup.new_model(), path).eval(), setup, classes


def _classes(raw: str | None, n: int, path) -> list[str]:
    """The class words stored with the weights (default: the corpus's words, or class0, class1, ...)."""
    if raw is None:
        return list(WORDS) if n == len(WORDS) else [f"class{i}" for i in range(n)]
    try:
        words = json.loads(raw)
    except ValueError:
        words = None
    if not isinstance(words, list) or len(words) != n or not all(isinstance(w, str) for w in words):
        raise CheckpointError(f"{path}: its metadata's classes are not {n} words")
    return words
