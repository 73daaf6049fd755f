"""Loss surfaces: 1-D along a direction, linear interpolation between two models, 2-D planes
(Goodfellow et al. 2015; Li et al. 2018), for the clean or the robust loss.

Grid points can be evaluated ``chunk`` at a time with ``torch.func.vmap`` over stacked parameter
sets (clean loss, BN in eval mode): one model call per batch evaluates ``chunk`` weight vectors.
That saves calls, not arithmetic: it pays on GPUs; on CPUs (measured: 3x slower for a small CNN,
equal for an MLP) the default is one point at a time.
``passes`` counts data sweeps actually made (a vmapped sweep of ``chunk`` points counts one),
``naive_passes`` the one-sweep-per-point count.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch.func import functional_call, vmap

from ..errors import InputError
from .core import LossFunction, add, as_geometry, make_generator, random_direction

log = logging.getLogger(__name__)


@dataclass
class Surface:
    """Losses on a grid: ``losses`` has shape [len(xs)] (1-D) or [len(ys), len(xs)] (2-D)."""

    xs: torch.Tensor
    losses: torch.Tensor
    passes: int
    naive_passes: int
    time_s: float
    ys: torch.Tensor | None = None
    directions: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)
    base_loss: float = float("nan")

    def to_dict(self) -> dict:
        d = {"xs": self.xs.tolist(), "losses": self.losses.tolist(), "passes": self.passes,
             "naive_passes": self.naive_passes, "time_s": self.time_s, "base_loss": self.base_loss}
        if self.ys is not None:
            d["ys"] = self.ys.tolist()
        return d


def _vmappable(L: LossFunction) -> bool:
    return L.attack is None and (L.geometry.bn == "eval" or not L.has_bn)


def losses_at(L: LossFunction, points: list[dict[str, torch.Tensor]], chunk: int | None = None,
              progress: bool = False) -> tuple[list[float], int]:
    """L at each parameter dict; returns (losses, passes used). ``chunk`` points share one vmapped
    sweep (default 16 on GPUs, 1 on CPUs, where vmapped convolutions are slower than a loop)."""
    start = L.passes
    if chunk is None:
        chunk = 16 if L.device.type == "cuda" else 1
    out: list[float] = []
    if chunk > 1 and _vmappable(L) and len(points) > 1:
        try:
            for i in range(0, len(points), chunk):
                out.extend(_batched(L, points[i:i + chunk]))
            return out, L.passes - start
        except (RuntimeError, NotImplementedError) as e:  # an op without a batching rule
            log.info("vmap over weights unavailable (%s); evaluating points one at a time", str(e)[:80])
            out = []
    it = points
    if progress:
        from tqdm import tqdm

        it = tqdm(points, desc="surface", leave=False)
    for p in it:
        out.append(L.loss(p))
    return out, L.passes - start


def _batched(L: LossFunction, points: list[dict[str, torch.Tensor]]) -> list[float]:
    stacked = {n: torch.stack([p[n] for p in points]) for n in L.params}
    buffers = L.buffers

    def one(p, x, t):
        out = functional_call(L.model, ({**L.frozen, **p}, buffers), (x,))
        return L.objective.loss(out, t).sum()

    total = torch.zeros(len(points), dtype=torch.float64, device=L.device)
    with torch.no_grad(), L.mode(train_bn=False):
        for x, t in L.batches:
            total += vmap(one, in_dims=(0, None, None))(stacked, x, t).double()
            L.calls += 1
    L.passes += 1
    return (total / L.n).tolist()


def _directions(L: LossFunction, directions, count: int, seed: int, normalize_given: bool):
    gen = make_generator(seed)
    out = []
    given = list(directions) if directions is not None else []
    if directions is not None and len(given) != count:
        raise InputError(f"need {count} direction(s), got {len(given)}")
    for i in range(count):
        if given:
            d = {n: given[i][n].to(L.params[n]) for n in L.params}
            out.append(L.geometry.normalize(d, L.params) if normalize_given else d)
        else:
            out.append(L.geometry.normalize(random_direction(L.params, gen), L.params))
    return out


def _loss_function(model, data, objective, geometry, attack, robust, dtype, batch_size) -> LossFunction:
    return LossFunction(model, data, objective, as_geometry(geometry), dtype=dtype, attack=attack, robust=robust,
                        batch_size=batch_size)


def surface_1d(model, data, direction: dict[str, torch.Tensor] | None = None, alphas: Sequence[float] | None = None,
               *, geometry=None, objective=None, attack=None, robust: str = "recraft", dtype=None, seed: int = 0,
               batch_size: int = 512, chunk: int | None = None, normalize_given: bool = False,
               progress: bool = False) -> Surface:
    """L(w + a d) for a in ``alphas`` (default 21 points in [-1, 1]); d random, normalised by the
    geometry (filter-wise by default), or ``direction`` as given."""
    L = _loss_function(model, data, objective, geometry, attack, robust, dtype, batch_size)
    alphas_t = torch.linspace(-1, 1, 21) if alphas is None else torch.as_tensor(list(alphas), dtype=torch.float64)
    (d,) = _directions(L, None if direction is None else [direction], 1, seed, normalize_given)
    t0 = time.perf_counter()
    points = [add(L.params, d, float(a)) for a in alphas_t]
    losses, passes = losses_at(L, points, chunk, progress)
    base = L.loss() if 0.0 not in alphas_t.tolist() else losses[alphas_t.tolist().index(0.0)]
    return Surface(alphas_t, torch.tensor(losses, dtype=torch.float64), passes, len(points), time.perf_counter() - t0,
                   directions=[d], base_loss=base)


def surface_2d(model, data, directions: Sequence[dict[str, torch.Tensor]] | None = None,
               xs: Sequence[float] | None = None, ys: Sequence[float] | None = None, *, geometry=None,
               objective=None, attack=None, robust: str = "recraft", dtype=None, seed: int = 0,
               batch_size: int = 512, chunk: int | None = None, normalize_given: bool = False, center=None,
               progress: bool = False) -> Surface:
    """L(c + x d1 + y d2) on the grid ``xs`` x ``ys`` (default 21 x 21 in [-1, 1]^2), with c the
    model's parameters (or ``center``, a parameter dict) and d1, d2 random normalised directions
    (Li et al. 2018) or given ones (e.g. PCA directions of a trajectory)."""
    L = _loss_function(model, data, objective, geometry, attack, robust, dtype, batch_size)
    xs_t = torch.linspace(-1, 1, 21) if xs is None else torch.as_tensor(list(xs), dtype=torch.float64)
    ys_t = xs_t.clone() if ys is None else torch.as_tensor(list(ys), dtype=torch.float64)
    d1, d2 = _directions(L, directions, 2, seed, normalize_given)
    c = L.params if center is None else {n: center[n].to(L.params[n]) for n in L.params}
    t0 = time.perf_counter()
    points = [{n: c[n] + float(x) * d1[n] + float(y) * d2[n] for n in c} for y in ys_t for x in xs_t]
    losses, passes = losses_at(L, points, chunk, progress)
    grid = torch.tensor(losses, dtype=torch.float64).view(len(ys_t), len(xs_t))
    return Surface(xs_t, grid, passes, len(points), time.perf_counter() - t0, ys=ys_t, directions=[d1, d2])


def interpolate(model_a, model_b, data, alphas: Sequence[float] | None = None, *, objective=None, attack=None,
                robust: str = "recraft", dtype=None, batch_size: int = 512, bn: str = "eval",
                progress: bool = False) -> Surface:
    """L((1 - a) w_A + a w_B) (Goodfellow et al. 2015), default 11 points in [0, 1]. Batch-norm running
    statistics are interpolated too (``bn="eval"``) or recomputed at each point (``bn="recalibrate"``)."""
    geometry = as_geometry("all", bn=bn)
    La = _loss_function(model_a, data, objective, geometry, attack, robust, dtype, batch_size)
    Lb = _loss_function(model_b, data, objective, geometry, attack, robust, dtype, batch_size)
    if set(La.params) != set(Lb.params) or any(La.params[n].shape != Lb.params[n].shape for n in La.params):
        raise InputError("interpolate needs two models of the same architecture")
    alphas_t = torch.linspace(0, 1, 11) if alphas is None else torch.as_tensor(list(alphas), dtype=torch.float64)
    base_buffers = La.buffers
    t0 = time.perf_counter()
    losses = []
    for a in alphas_t.tolist():
        p = {n: (1 - a) * La.params[n] + a * Lb.params[n] for n in La.params}
        La.buffers = {n: ((1 - a) * b + a * Lb.buffers[n]) if b.is_floating_point() else b
                      for n, b in base_buffers.items()}
        losses.append(La.loss(p))
    La.buffers = base_buffers
    return Surface(alphas_t, torch.tensor(losses, dtype=torch.float64), La.passes, len(alphas_t), time.perf_counter() - t0)
