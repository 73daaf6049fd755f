"""The shared shapes of training-data attacks and their detectors.

A *poison* changes a training set: ``Poison.poison(dataset, seed=...) -> PoisonedDataset`` with the new
inputs ``x``, labels ``y``, the mask ``poisoned`` (bool[N], exact) and the labels before the attack
(``original_y``). A *backdoor* is a poison with a trigger: ``apply_trigger(x)`` puts it on any inputs (the
test images of the attack-success rate), and ``target_labels(y)`` gives the labels the attacker wants
(all-to-one: the target class; all-to-all: ``(y + 1) mod K``, Gu et al. 2017).

A *detector* looks at a (possibly poisoned) training set through a model:
``Detector.detect(model, x, y) -> DetectionReport`` with ``is_poison`` (bool[N]) and ``scores`` (float[N],
larger = more suspicious); ``report.evaluate(truth)`` gives precision, recall and the false-positive rate.

Poisoned samples are drawn *without replacement* (``draw_without_replacement``) from a seeded generator,
so the poisoned indices are exact and reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import Dataset
from ..errors import InputError
from ..registry import Registry

#: poisoning attacks by name (``create_poison``/``list_poisons``)
POISONS = Registry("poison")
#: poison detectors and defences by name (``create_detector``/``list_detectors``)
DETECTORS = Registry("detector")


@dataclass
class PoisonedDataset(Dataset):
    """A training set after a poisoning attack: a ``Dataset`` (so training takes it as it is) with the exact
    mask of the samples the attack changed and the labels they had before."""

    poisoned: torch.Tensor = None  # bool[N]
    original_y: torch.Tensor = None  # int64[N]: labels before the attack
    settings: dict = field(default_factory=dict)  # the attack's name and settings, for the run record

    def __post_init__(self):
        n = int(self.x.shape[0])
        if self.poisoned is None:
            self.poisoned = torch.zeros(n, dtype=torch.bool)
        if self.original_y is None:
            self.original_y = self.y.clone()
        if self.poisoned.dtype != torch.bool or self.poisoned.shape != (n,) or self.original_y.shape != (n,):
            raise InputError(f"a poisoned dataset needs poisoned bool[{n}] and original_y[{n}]")

    @property
    def poisoned_indices(self) -> torch.Tensor:
        """Indices of the poisoned samples, ascending (int64)."""
        return torch.nonzero(self.poisoned).flatten()

    @property
    def rate(self) -> float:
        """Poisoned share of the whole set (the poison rate of BadNets' papers: poisoned / all)."""
        return float(self.poisoned.float().mean()) if len(self) else 0.0

    def clean(self) -> Dataset:
        """The samples the attack left alone, as a plain ``Dataset``."""
        return self.take(torch.nonzero(~self.poisoned).flatten())

    def take(self, idx: torch.Tensor) -> "PoisonedDataset":
        return PoisonedDataset(self.x[idx], self.y[idx], self.name, self.classes, self.poisoned[idx],
                               self.original_y[idx], dict(self.settings))


def as_xy(data: Any, what: str = "poison") -> tuple[torch.Tensor, torch.Tensor, str, list[str]]:
    """``(x, y, name, classes)`` of a robustlab ``Dataset`` or an ``(x, y)`` pair: x float [N, ...] in [0, 1],
    y int64 [N] class labels. Anything else is an InputError naming `what`."""
    if isinstance(data, Dataset):
        x, y, name, classes = data.x, data.y, data.name, list(data.classes)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y, name, classes = torch.as_tensor(data[0]), torch.as_tensor(data[1]), "data", []
    else:
        raise InputError(f"{what} takes a robustlab Dataset or an (x, y) pair, not {type(data).__name__}")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.dim() != 1:
        raise InputError(f"{what} needs integer class labels y[N]; got {getattr(y, 'dtype', type(y).__name__)}")
    if x.shape[0] != y.shape[0] or not torch.is_floating_point(x):
        raise InputError(f"{what} needs float inputs x[N, ...] with one label each; got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}")
    return x, y.long(), name, classes


def draw_without_replacement(candidates: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`k` distinct indices drawn uniformly from the bool mask `candidates` (ascending); an InputError when
    fewer than `k` samples qualify."""
    pool = torch.nonzero(candidates).flatten()
    if k > len(pool):
        raise InputError(f"cannot poison {k} samples: only {len(pool)} qualify")
    pick = torch.randperm(len(pool), generator=generator)[:k]
    return pool[pick].sort().values


def check_rate(rate: float, what: str) -> float:
    if not 0.0 <= float(rate) <= 1.0:
        raise InputError(f"{what}: rate must be in [0, 1]; got {rate}")
    return float(rate)


class Poison:
    """A training-data attack. Subclasses write ``_poison``; ``poison`` checks the input and the output."""

    name = "poison"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def settings(self) -> dict:
        """The attack's settings for the run record (plain values; tensors as lists)."""
        out = {"attack": self.name, "seed": self.seed}
        for k, v in vars(self).items():
            if k.startswith("_") or k in out:
                continue
            out[k] = v.tolist() if isinstance(v, torch.Tensor) else v
        return out

    def poison(self, dataset: Any, seed: int | None = None) -> PoisonedDataset:
        """The poisoned copy of `dataset` (never modified in place)."""
        x, y, name, classes = as_xy(dataset, type(self).__name__)
        gen = torch.Generator().manual_seed(self.seed if seed is None else int(seed))
        x_new, y_new, poisoned = self._poison(x.clone(), y.clone(), gen)
        settings = {**self.settings(), "seed": self.seed if seed is None else int(seed)}
        original_y = torch.cat([y, y_new[len(y):]])  # samples a poison appends (WaNet's noise mode) keep their labels
        return PoisonedDataset(x_new, y_new, name, classes, poisoned, original_y, settings)

    def _poison(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Backdoor(Poison):
    """A poison with a trigger. All-to-one relabels the poisoned samples to ``target``, drawn from the
    samples whose label is not the target; all-to-all relabels ``y -> (y + 1) mod K``, drawn from all.
    ``round(rate * N)`` samples are poisoned. Subclasses write ``apply_trigger``."""

    def __init__(self, target: int = 0, rate: float = 0.1, all_to_all: bool = False, seed: int = 0):
        super().__init__(seed)
        self.target = int(target)
        self.rate = check_rate(rate, type(self).__name__)
        self.all_to_all = bool(all_to_all)
        self._num_classes: int | None = None

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Triggered copies of `x` ([N, C, H, W] in [0, 1])."""
        raise NotImplementedError

    def target_labels(self, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """The labels the attacker wants for triggered inputs of true label `y`."""
        if not self.all_to_all:
            return torch.full_like(y, self.target)
        k = num_classes or self._num_classes or int(y.max()) + 1
        return (y + 1) % k

    def candidates(self, y: torch.Tensor) -> torch.Tensor:
        """Samples the attack may poison (bool[N])."""
        return torch.ones_like(y, dtype=torch.bool) if self.all_to_all else y != self.target

    def _poison(self, x, y, generator):
        self._num_classes = int(y.max()) + 1
        idx = draw_without_replacement(self.candidates(y), round(self.rate * len(y)), generator)
        poisoned = torch.zeros(len(y), dtype=torch.bool)
        poisoned[idx] = True
        if len(idx):
            x[idx] = self.apply_trigger(x[idx])
            y[idx] = self.target_labels(y[idx], self._num_classes)
        return x, y, poisoned


@dataclass
class DetectionReport:
    """What a detector decided: ``is_poison`` (bool[N]), ``scores`` (float[N], larger = more suspicious) and
    the detector's own numbers (``details``: thresholds, per-class cluster sizes, anomaly indices, ...)."""

    is_poison: torch.Tensor
    scores: torch.Tensor
    details: dict = field(default_factory=dict)

    def evaluate(self, truth: torch.Tensor) -> dict:
        """Precision, recall (true-positive rate) and false-positive rate of ``is_poison`` against `truth`
        (bool[N], the true poisons), with the counts. A ratio with an empty denominator is ``None``."""
        truth = torch.as_tensor(truth, dtype=torch.bool)
        if truth.shape != self.is_poison.shape:
            raise InputError(f"truth has {tuple(truth.shape)} entries; the report has {tuple(self.is_poison.shape)}")
        flag = self.is_poison
        tp, fp = int((flag & truth).sum()), int((flag & ~truth).sum())
        fn, tn = int((~flag & truth).sum()), int((~flag & ~truth).sum())

        def ratio(a, b):
            return a / b if b else None

        return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn),
                "tp": tp, "fp": fp, "fn": fn, "tn": tn, "flagged": tp + fp, "n": len(truth)}


class Detector:
    """A detector of poisoned training samples: ``detect(model, x, y) -> DetectionReport``. Detectors read
    the data in batches (``batch_size``): none holds more than the per-sample features it scores."""

    name = "detector"

    def detect(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> DetectionReport:
        raise NotImplementedError
