"""Representation similarity: linear centred kernel alignment (Kornblith et al. 2019).

For features X [n, p] and Y [n, q] of the same n inputs, centred over the samples,
``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. It is 1 for identical representations,
invariant to orthogonal transforms and isotropic scaling of either side, and (unlike CCA) not
invariant to arbitrary invertible linear maps.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..errors import InputError
from .layers import features


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA between two representations of the same inputs ([n, ...] each, flattened)."""
    if a.shape[0] != b.shape[0]:
        raise InputError(f"CKA compares representations of the same inputs; got {a.shape[0]} and {b.shape[0]} rows")
    if a.shape[0] < 2:
        raise InputError("CKA needs at least 2 samples")
    x = a.detach().reshape(a.shape[0], -1).double()
    y = b.detach().reshape(b.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    num = (y.t() @ x).pow(2).sum()
    den = (x.t() @ x).norm() * (y.t() @ y).norm()
    if float(den) == 0.0:
        return float("nan")
    return float(num / den)


def cka_matrix(reps: Sequence[torch.Tensor], reps_b: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Pairwise linear CKA: [len(reps), len(reps_b or reps)]."""
    other = reps if reps_b is None else reps_b
    return torch.tensor([[linear_cka(r, s) for s in other] for r in reps])


def model_cka(models: Sequence[nn.Module], x: torch.Tensor, layers: Sequence[str] = ("penultimate",)
              ) -> tuple[list[str], torch.Tensor]:
    """CKA between every (model, layer) pair on inputs x; returns labels "m<i>:<layer>" and the matrix."""
    labels, reps = [], []
    for i, m in enumerate(models):
        for layer in layers:
            labels.append(f"m{i}:{layer}")
            reps.append(features(m, x, layer))
    return labels, cka_matrix(reps)
