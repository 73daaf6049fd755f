"""Streamed features of a model, for the poison detectors.

``feature_batches(model, x, y, layer)`` runs the model batch by batch, in eval mode, on the model's own
device (``runtime.eval_mode``, ``runtime.device_of``), and yields each batch's activations of one layer,
*flattened* to ``[B, D]`` with every channel kept (ART's detectors used only the first channel of
unflattened convolutional activations, ART #2313). The layer is read through a forward hook on the module
itself, so the activations are the ones the model computes (ART #1810 read the wrong ones on PyTorch
models): by default the *input* of the model's last ``nn.Linear`` (the penultimate representation), or
the *output* of any module named in ``model.named_modules()``.

``ClassMoments`` keeps, per class, the count, the mean and the scatter matrix
``S = sum_i (f_i - mu)(f_i - mu)^T``, merged batch by batch with the pairwise update of Chan et al. (1979):
for two parts a, b with n = n_a + n_b and delta = mu_b - mu_a,

    mu = mu_a + delta n_b / n,      S = S_a + S_b + delta delta^T n_a n_b / n.

So a detector holds D x D numbers per class and low-dimensional per-sample features, never the whole
set of images or activations (ART #373 needed them all in memory).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..errors import InputError
from ..progress import progress_bar
from ..runtime import device_of, eval_mode

#: the largest feature dimension whose per-class D x D scatter matrix ``ClassMoments`` accepts (float64:
#: 8192^2 x 8 bytes = 512 MiB per class)
MAX_SCATTER_DIM = 8192
#: above this dimension, the top directions come from subspace iteration rather than a full eigendecomposition
EXACT_EIGH_DIM = 512


def feature_module(model: nn.Module, layer: str | None = None) -> tuple[nn.Module, str]:
    """The module whose activations are read and which side of it: ``(module, "input")`` for the default
    penultimate layer (the input of the last registered ``nn.Linear``), ``(module, "output")`` for a named
    module ``layer`` of ``model.named_modules()``."""
    if layer is not None:
        named = dict(model.named_modules())
        if layer not in named:
            shown = ", ".join(repr(k) for k in list(named)[1:20])
            raise InputError(f"the model has no layer {layer!r}; its layers are {shown}")
        return named[layer], "output"
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError("the model has no nn.Linear layer whose input is the penultimate representation; "
                         "name a layer (layer='...')")
    return linears[-1], "input"


@contextlib.contextmanager
def captured(module: nn.Module, side: str) -> Iterator[dict]:
    """A dict whose ``"f"`` is, after each forward pass, `module`'s input or output flattened to [B, D]."""
    box: dict[str, torch.Tensor] = {}

    def keep(t: Any) -> None:
        t = t[0] if isinstance(t, (tuple, list)) else t
        box["f"] = t.detach().flatten(1).float()

    if side == "input":
        handle = module.register_forward_pre_hook(lambda m, args: keep(args))
    else:
        handle = module.register_forward_hook(lambda m, args, out: keep(out))
    try:
        yield box
    finally:
        handle.remove()


def input_batches(x: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """The inputs of `x` in order, `batch_size` at a time: a tensor is sliced, a robustlab ``Dataset`` or
    ``StreamingDataset`` is read through its ``batches`` (one batch in memory at a time)."""
    if isinstance(x, torch.Tensor):
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]
    elif hasattr(x, "batches"):
        for xb, _ in x.batches(batch_size):
            yield xb
    else:
        raise InputError(f"detectors read a tensor or a robustlab Dataset, not {type(x).__name__}")


def feature_batches(model: nn.Module, x: Any, layer: str | None = None, batch_size: int = 256,
                    progress: bool = False, desc: str = "features") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features [B, D] float32, logits)`` per batch of `x`, on the model's device, without gradients."""
    device = device_of(model)
    module, side = feature_module(model, layer)
    total = -(-len(x) // batch_size)
    with eval_mode(model), torch.no_grad(), captured(module, side) as box:
        for xb in progress_bar(input_batches(x, batch_size), total=total, desc=desc, unit="batch",
                               disable=not progress):
            logits = model(xb.to(device))
            yield box["f"], logits


def split_by_class(f: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(class, rows of f with that label)`` for each label present in `y`."""
    for c in y.unique().tolist():
        yield int(c), f[y == c]


class ClassMoments:
    """Per-class count, mean and scatter matrix of features fed batch by batch (``update``); float64."""

    def __init__(self):
        self.count: dict[int, int] = {}
        self.mean: dict[int, torch.Tensor] = {}
        self.scatter: dict[int, torch.Tensor] = {}

    def update(self, f: torch.Tensor, y: torch.Tensor) -> None:
        if f.shape[1] > MAX_SCATTER_DIM:
            raise InputError(f"features of {f.shape[1]} dimensions exceed the {MAX_SCATTER_DIM} whose scatter "
                             "matrix a detector keeps per class; name a smaller layer (layer='...')")
        for c, fc in split_by_class(f.double(), y.to(f.device)):
            nb, mb = len(fc), fc.mean(0)
            d = fc - mb
            sb = d.T @ d
            if c not in self.count:
                self.count[c], self.mean[c], self.scatter[c] = nb, mb, sb
                continue
            na = self.count[c]
            n, delta = na + nb, mb - self.mean[c]
            self.mean[c] = self.mean[c] + delta * (nb / n)
            self.scatter[c] = self.scatter[c] + sb + torch.outer(delta, delta) * (na * nb / n)
            self.count[c] = n

    @property
    def classes(self) -> list[int]:
        return sorted(self.count)

    def covariance(self, c: int) -> torch.Tensor:
        """The (biased, 1/n) covariance matrix of class `c`."""
        return self.scatter[c] / self.count[c]

    def top_directions(self, c: int, k: int) -> torch.Tensor:
        """The top-`k` eigenvectors of class `c`'s scatter matrix, as columns [D, k] (largest first): the top
        right singular vectors of the class's centred feature matrix. Up to ``EXACT_EIGH_DIM`` dimensions by a
        full eigendecomposition; above, by seeded subspace iteration (``top_eigenvectors``)."""
        scatter = self.scatter[c]
        if len(scatter) <= EXACT_EIGH_DIM:
            return torch.linalg.eigh(scatter)[1][:, -k:].flip(1)
        return top_eigenvectors(scatter, k)


def top_eigenvectors(sym: torch.Tensor, k: int, oversample: int = 8, iters: int = 60) -> torch.Tensor:
    """The top-`k` eigenvectors [D, k] of the symmetric positive semi-definite matrix `sym` by subspace
    iteration (Q <- orth(S Q), ``iters`` times, from a seeded Gaussian start of ``k + oversample`` columns) and
    a Rayleigh-Ritz step (the eigenvectors of Q^T S Q); O(D^2 k) per iteration instead of O(D^3)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(len(sym), k + oversample, generator=gen, dtype=sym.dtype).to(sym.device)
    for _ in range(iters):
        q, _ = torch.linalg.qr(sym @ q)
    _, vecs = torch.linalg.eigh(q.T @ sym @ q)
    return (q @ vecs)[:, -k:].flip(1)


def class_moments(model: nn.Module, x: Any, y: torch.Tensor, layer: str | None = None, batch_size: int = 256,
                  progress: bool = False) -> ClassMoments:
    """The per-class moments of `model`'s features of `x` (one streamed pass)."""
    moments, start = ClassMoments(), 0
    for f, _ in feature_batches(model, x, layer, batch_size, progress, "moments"):
        moments.update(f, y[start:start + len(f)])
        start += len(f)
    return moments


def class_projections(model: nn.Module, x: Any, y: torch.Tensor, moments: ClassMoments, k: int,
                      layer: str | None = None, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Each sample's centred features projected onto its class's top-`k` directions: [N, k] float64 on the
    CPU (a second streamed pass; only these k numbers per sample are kept)."""
    dirs = {c: moments.top_directions(c, min(k, len(moments.mean[c]))) for c in moments.classes}
    out = torch.zeros(len(y), k, dtype=torch.float64)
    start = 0
    for f, _ in feature_batches(model, x, layer, batch_size, progress, "projections"):
        yb = y[start:start + len(f)]
        for c in yb.unique().tolist():
            rows = torch.nonzero(yb == c).flatten()
            z = (f[rows.to(f.device)].double() - moments.mean[c]) @ dirs[c]
            out[start + rows, :z.shape[1]] = z.cpu()
        start += len(f)
    return out
