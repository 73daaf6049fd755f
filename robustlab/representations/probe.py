"""Transfer of representations: a linear probe on frozen features, and optionally fine-tuning.

``linear_probe(model, train, test, layer)`` extracts the layer's activations (the model is not
changed), standardises them with the training set's statistics and fits scikit-learn's
multinomial ``LogisticRegression``; the score is the probe's test accuracy. With ``finetune=True``
a copy of the network up to ``layer`` plus a linear head initialised from the fitted probe (LP-FT,
Kumar et al. 2022: the head starts where the probe ended, so fine-tuning does not distort the
features with a random head) is trained end to end (Adam, small lr, few epochs, seeded); both
accuracies are reported, as in Salman et al. 2020 ("Do adversarially robust ImageNet models
transfer better?", fixed-feature and full-network transfer). Helpers build the
transfer tasks of the issue: MNIST features probed on ``digits`` resized to 28x28
(``resize``), or on classes held out of the model's training (``split_classes``).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Dataset
from ..errors import InputError
from .layers import activations, features

log = logging.getLogger(__name__)


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
    """``accuracy``/``train_accuracy``: the linear probe on frozen features; ``finetune_*``: after
    fine-tuning a copy of the network with the head (None without ``finetune``); ``finetuned``: that
    copy (network, head), not serialised."""

    accuracy: float
    train_accuracy: float
    layer: str
    n_features: int
    n_train: int
    n_test: int
    finetune_accuracy: float | None = None
    finetune_train_accuracy: float | None = None
    finetune_settings: dict | None = None
    finetuned: tuple[nn.Module, nn.Linear] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "finetuned"}


def _probe_head(clf, scaler, n_classes: int) -> nn.Linear:
    """The fitted probe as an nn.Linear on raw features: logits = (W / s) f + (b - W m / s)."""
    w = np.asarray(clf.coef_, dtype=np.float64)
    b = np.asarray(clf.intercept_, dtype=np.float64)
    if w.shape[0] == 1 and n_classes == 2:  # binary: sklearn keeps one row (the logit of class 1)
        w, b = np.concatenate([np.zeros_like(w), w]), np.concatenate([np.zeros_like(b), b])
    full_w = np.zeros((n_classes, w.shape[1]))
    full_b = np.full(n_classes, -1e4)  # classes absent from the probe's training labels: never predicted
    full_w[clf.classes_], full_b[clf.classes_] = w, b
    scale = scaler.scale_
    head = nn.Linear(w.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(full_w / scale))
        head.bias.copy_(torch.from_numpy(full_b - (full_w / scale) @ scaler.mean_))
    return head


@torch.no_grad()
def _accuracy(net: nn.Module, head: nn.Linear, x: torch.Tensor, y: torch.Tensor, layer: str, bs: int = 500) -> float:
    hits = 0
    for i in range(0, x.shape[0], bs):
        hits += int((head(activations(net, x[i:i + bs], layer)).argmax(1) == y[i:i + bs]).sum())
    return hits / max(1, x.shape[0])


def finetune_network(model: nn.Module, head: nn.Linear, xtr: torch.Tensor, ytr: torch.Tensor,
                     layer: str = "penultimate", epochs: int = 3, lr: float = 1e-4, batch_size: int = 64,
                     weight_decay: float = 0.0, seed: int = 0) -> tuple[nn.Module, nn.Linear]:
    """Train copies of ``model`` (up to ``layer``) and ``head`` end to end on CE(head(R(x)), y), Adam;
    seeded (batch order and dropout) without touching the global RNG. The inputs are not changed."""
    net, head = copy.deepcopy(model), copy.deepcopy(head)
    device = next(net.parameters()).device
    head = head.to(device)
    for p in [*net.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    params = [*net.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net.train()
        for epoch in range(epochs):
            order = torch.randperm(xtr.shape[0], generator=gen)
            total = 0.0
            for i in range(0, xtr.shape[0], batch_size):
                idx = order[i:i + batch_size]
                xb, yb = xtr[idx].to(device), ytr[idx].to(device)
                loss = F.cross_entropy(head(activations(net, xb, layer)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            log.debug("fine-tune epoch %d: loss %.4f", epoch + 1, total / xtr.shape[0])
    opt.zero_grad(set_to_none=True)
    net.eval()
    return net, head


def linear_probe(model: nn.Module, train, test, layer: str = "penultimate", C: float = 1.0,
                 max_iter: int = 1000, seed: int = 0, finetune: bool = False, finetune_epochs: int = 3,
                 finetune_lr: float = 1e-4, finetune_batch_size: int = 64) -> ProbeResult:
    """Test accuracy of a logistic-regression probe trained on frozen `layer` features, and with
    ``finetune`` also of the whole network plus that head fine-tuned (on a copy; ``model`` is unchanged).

    ``C`` is the inverse L2 penalty of the probe (scikit-learn's convention).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr_t = _xy(train)
    xte, yte_t = _xy(test)
    ytr, yte = ytr_t.cpu().numpy(), yte_t.cpu().numpy()
    ftr = features(model, xtr, layer).cpu().numpy().astype(np.float64)
    fte = features(model, xte, layer).cpu().numpy().astype(np.float64)
    scaler = StandardScaler().fit(ftr)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(scaler.transform(ftr), ytr)
    acc = float((clf.predict(scaler.transform(fte)) == yte).mean())
    tr_acc = float((clf.predict(scaler.transform(ftr)) == ytr).mean())
    res = ProbeResult(acc, tr_acc, layer, int(ftr.shape[1]), int(len(ytr)), int(len(yte)))
    if finetune:
        if finetune_epochs < 1 or finetune_lr <= 0 or finetune_batch_size < 1:
            raise InputError("fine-tuning needs finetune_epochs >= 1, finetune_lr > 0 and finetune_batch_size >= 1")
        n_classes = int(max(ytr.max(), yte.max())) + 1
        device = next(model.parameters()).device
        head = _probe_head(clf, scaler, n_classes).to(device=device, dtype=next(model.parameters()).dtype)
        net, head = finetune_network(model, head, xtr, ytr_t.long(), layer, finetune_epochs, finetune_lr,
                                     finetune_batch_size, seed=seed)
        res.finetune_accuracy = _accuracy(net, head, xte.to(device), yte_t.to(device), layer)
        res.finetune_train_accuracy = _accuracy(net, head, xtr.to(device), ytr_t.to(device), layer)
        res.finetune_settings = {"epochs": finetune_epochs, "lr": finetune_lr, "batch_size": finetune_batch_size,
                                 "optimizer": "adam", "head_init": "probe", "seed": seed}
        res.finetuned = (net, head)
    return res
