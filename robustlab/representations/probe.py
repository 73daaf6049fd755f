"""Transfer of representations: a linear probe on frozen features.

``linear_probe(model, train, test, layer)`` extracts the layer's activations (the model is not
changed), standardises them with the training set's statistics and fits scikit-learn's
multinomial ``LogisticRegression``; the score is the probe's test accuracy. Helpers build the
transfer tasks of the issue: MNIST features probed on ``digits`` resized to 28x28
(``resize``), or on classes held out of the model's training (``split_classes``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Dataset
from ..errors import InputError
from .layers import features


def _xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Dataset):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]), torch.as_tensor(data[1])
    raise InputError("train/test must be a robustlab Dataset or an (x, y) pair of tensors")


def resize(data: Dataset, size: int | tuple[int, int], channels: int | None = None) -> Dataset:
    """Bilinear resize of a dataset's images (e.g. digits 8x8 -> 28x28), optionally to `channels`."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = F.interpolate(data.x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    if channels is not None and channels != x.shape[1]:
        x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
    return Dataset(x, data.y, f"{data.name}@{size[0]}x{size[1]}", data.classes)


def split_classes(data: Dataset, classes) -> Dataset:
    """The samples of `classes`, relabelled 0..len(classes)-1 (held-out-class transfer)."""
    classes = list(classes)
    keep = torch.isin(data.y, torch.tensor(classes, device=data.y.device))
    remap = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([remap[int(v)] for v in data.y[keep]], dtype=torch.long, device=data.y.device)
    names = [data.classes[c] for c in classes] if data.classes else [str(c) for c in classes]
    return Dataset(data.x[keep], y, f"{data.name}{classes}", names)


@dataclass
class ProbeResult:
    accuracy: float
    train_accuracy: float
    layer: str
    n_features: int
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def linear_probe(model: nn.Module, train, test, layer: str = "penultimate", C: float = 1.0,
                 max_iter: int = 1000, seed: int = 0) -> ProbeResult:
    """Test accuracy of a logistic-regression probe trained on frozen `layer` features.

    ``C`` is the inverse L2 penalty of the probe (scikit-learn's convention).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = _xy(train)
    xte, yte = _xy(test)
    ytr, yte = ytr.cpu().numpy(), yte.cpu().numpy()
    ftr = features(model, xtr, layer).cpu().numpy().astype(np.float64)
    fte = features(model, xte, layer).cpu().numpy().astype(np.float64)
    scaler = StandardScaler().fit(ftr)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(scaler.transform(ftr), ytr)
    acc = float((clf.predict(scaler.transform(fte)) == yte).mean())
    tr_acc = float((clf.predict(scaler.transform(ftr)) == ytr).mean())
    return ProbeResult(acc, tr_acc, layer, int(ftr.shape[1]), int(len(ytr)), int(len(yte)))
