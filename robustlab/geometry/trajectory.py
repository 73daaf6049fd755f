"""Optimisation trajectories: PCA of parameter snapshots (Li et al. 2018, sec. 7), each snapshot's
projection and off-plane residual, the loss contour of the PCA plane with the path on it.

PCA uses the Gram-matrix trick: with M the [n, D] matrix of snapshots minus the final one, the
eigenvectors u of G = M M^T ([n, n]) give the principal directions M^T u / sqrt(lambda); no D x D
matrix is ever formed.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import InputError
from ..weights import load_weights
from .core import as_geometry, flat, unflat
from .surface import Surface, surface_2d

log = logging.getLogger(__name__)


@dataclass
class Trajectory:
    """``coords`` [n, 2] of each snapshot in the PCA plane around the final snapshot,
    ``residuals`` [n] the norm of the part off the plane, ``explained`` the variance ratios of
    the two components, ``directions`` the two unit directions (parameter dicts)."""

    coords: torch.Tensor
    residuals: torch.Tensor
    explained: torch.Tensor
    directions: list[dict[str, torch.Tensor]]
    center: dict[str, torch.Tensor] = field(repr=False)
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"coords": self.coords.tolist(), "residuals": self.residuals.tolist(),
                "explained": self.explained.tolist(), "labels": self.labels}


def load_snapshots(model: nn.Module, paths: Sequence[str | Path]) -> list[dict[str, torch.Tensor]]:
    """Parameter dicts of safetensors snapshots (e.g. ``checkpoints/snapshots/epoch_XXXX``), loaded
    with :func:`robustlab.weights.load_weights` into a copy of ``model`` (the model is untouched)."""
    scratch = copy.deepcopy(model)
    out = []
    for p in paths:
        load_weights(scratch, p)  # checks keys and shapes against the architecture
        out.append({n: t.detach().clone() for n, t in scratch.named_parameters()})
    return out


def trajectory_pca(snapshots: Sequence[dict[str, torch.Tensor]], model: nn.Module | None = None, params=None,
                   labels: Sequence[str] | None = None) -> Trajectory:
    """PCA of a trajectory of parameter dicts (the last is the centre) by the Gram-matrix trick."""
    if len(snapshots) < 3:
        raise InputError(f"a trajectory needs at least 3 snapshots, got {len(snapshots)}")
    names = as_geometry(params).select(model) if model is not None else list(snapshots[0])
    names = [n for n in names if n in snapshots[0]]
    final = {n: snapshots[-1][n].detach().double() for n in names}
    M = torch.stack([flat({n: s[n].double() for n in names}) - flat(final) for s in snapshots])  # [n, D]
    G = M @ M.T
    evals, evecs = torch.linalg.eigh(G)
    order = torch.argsort(evals, descending=True)[:2]
    lam = evals[order].clamp_min(1e-30)
    dirs = (M.T @ evecs[:, order]) / lam.sqrt()  # [D, 2], orthonormal columns
    coords = M @ dirs
    residuals = (M - coords @ dirs.T).norm(dim=1)
    explained = lam / evals.clamp_min(0).sum().clamp_min(1e-30)
    directions = [unflat(dirs[:, i].contiguous(), final) for i in range(2)]
    return Trajectory(coords, residuals, explained, directions, final,
                      list(labels) if labels is not None else [str(i) for i in range(len(snapshots))])


def trajectory_surface(model: nn.Module, data: Any, traj: Trajectory, points: int = 21, margin: float = 0.2,
                       **kwargs) -> Surface:
    """The loss on the PCA plane (centred at the final snapshot) covering the path plus a margin."""
    lo, hi = traj.coords.min(0).values, traj.coords.max(0).values
    span = (hi - lo).clamp_min(1e-6)
    xs = torch.linspace(float(lo[0] - margin * span[0]), float(hi[0] + margin * span[0]), points)
    ys = torch.linspace(float(lo[1] - margin * span[1]), float(hi[1] + margin * span[1]), points)
    geometry = as_geometry(kwargs.pop("geometry", None), params=tuple(traj.center), normalization="none")
    like = dict(model.named_parameters())
    dirs = [{n: d[n].to(like[n].dtype) for n in d} for d in traj.directions]
    center = {n: traj.center[n].to(like[n].dtype) for n in traj.center}
    return surface_2d(model, data, dirs, xs, ys, geometry=geometry, center=center, **kwargs)
