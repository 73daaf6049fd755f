"""Hessian spectra of the loss: top/bottom eigenvalues (Lanczos), trace (Hutchinson, Hutch++),
spectral density (stochastic Lanczos quadrature), per layer or for all parameters.

All use Hessian-vector products by double back-propagation, ``H v = d/dw <dL/dw, v>``; ``passes``
counts products, each one sweep over the data (a single-batch dataset reuses one gradient graph).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .core import LossFunction, as_geometry, blocks_of, make_generator

log = logging.getLogger(__name__)


@dataclass
class EigenResult:
    """Eigenvalues (descending for "largest", ascending for "smallest"), unit eigenvectors [k, D] over
    the parameters ``names`` (flattened in that order), residual norms ||H v - lambda v||."""

    values: torch.Tensor
    vectors: torch.Tensor
    passes: int
    names: list[str]
    residuals: torch.Tensor
    iterations: int

    def to_dict(self) -> dict:
        return {"values": self.values.tolist(), "passes": self.passes, "iterations": self.iterations,
                "residuals": self.residuals.tolist()}


@dataclass
class TraceResult:
    """tr(H) estimate, its standard error and the number of Hessian-vector products."""

    value: float
    stderr: float
    passes: int
    method: str
    samples: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "passes": self.passes, "method": self.method}


@dataclass
class SpectralDensity:
    """SLQ: Ritz values ``nodes`` [runs, m] with quadrature ``weights`` [runs, m] (each row sums to
    1), and the Gaussian-smoothed density on ``grid`` (integrates to ~1)."""

    nodes: torch.Tensor
    weights: torch.Tensor
    grid: torch.Tensor
    density: torch.Tensor
    passes: int

    def to_dict(self) -> dict:
        return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist(), "grid": self.grid.tolist(),
                "density": self.density.tolist(), "passes": self.passes}


def _operator(model, params, kw: dict) -> tuple[LossFunction, int, torch.Tensor]:
    """The loss whose Hessian is wanted, from a measure's keyword arguments: (L, dimension, a
    parameter tensor giving dtype and device)."""
    geometry = as_geometry(params) if kw.get("bn") is None else as_geometry(params, bn=kw["bn"])
    L = LossFunction(model, kw["data"], kw["objective"], geometry, dtype=kw["dtype"], attack=kw["attack"],
                     robust=kw["robust"], batch_size=kw["batch_size"])
    return L, sum(p.numel() for p in L.params.values()), next(iter(L.params.values()))


def _blocks(fn, model, params, blocks, kwargs) -> dict | None:
    """``{layer: fn(... that layer's parameters)}`` when ``blocks="layer"``, None when ``blocks`` is None."""
    if blocks is None:
        return None
    if blocks not in ("layer",):
        raise InputError(f"blocks must be None or 'layer', got {blocks!r}")
    return _per_block(fn, model, params, kwargs)


def _per_block(fn, model, params, kwargs):
    geometry = as_geometry(params)
    names = geometry.select(model)
    out = {}
    for block, members in blocks_of(names).items():
        out[block] = fn(model, params=as_geometry(geometry, params=tuple(members)), blocks=None, **kwargs)
    return out


def lanczos(matvec, dim: int, steps: int, v0: torch.Tensor, *, k: int = 0, which: str = "largest",
            tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
    """Lanczos with full reorthogonalisation: (T eigenvalues, T eigenvectors, basis Q [m, D], m,
    last beta); the residual of Ritz pair i is ``|beta * s[-1, i]|``.

    With ``k > 0`` and ``tol > 0`` it stops once the k wanted Ritz values moved by at most
    ``tol * max|theta|`` in the last step and their residuals ``|beta_m s_m|`` are at most
    ``sqrt(tol) * max|theta|`` (the eigenvalue error is then about residual^2 / gap).
    """
    steps = max(1, min(steps, dim))
    Q = torch.zeros(steps, dim, dtype=v0.dtype, device=v0.device)
    alphas, betas = [], []
    q = v0 / v0.norm()
    beta = 0.0
    m = 0
    prev = None
    for j in range(steps):
        Q[j] = q
        w = matvec(q)
        alpha = float(w @ q)
        w = w - alpha * q - (beta * Q[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Parlett)
            w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        alphas.append(alpha)
        beta = float(w.norm())
        m = j + 1
        scale = max(abs(a) for a in alphas) + 1e-30
        if beta <= 1e-10 * scale:
            break
        if k and tol and m >= k + 1:
            theta, s = _tridiag_eig(alphas, betas)
            idx = _wanted(theta, k, which)
            vals = theta[idx]
            res = (beta * s[-1, idx]).abs()
            top = float(theta.abs().max())
            if prev is not None and bool(((vals - prev).abs() <= tol * top).all()) and \
                    bool((res <= math.sqrt(tol) * top).all()):
                break
            prev = vals
        if j + 1 < steps:
            betas.append(beta)
            q = w / beta
    theta, s = _tridiag_eig(alphas, betas[:m - 1])
    return theta, s, Q[:m], m, beta


def _tridiag_eig(alphas, betas):
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        b = torch.tensor(betas[:len(alphas) - 1], dtype=torch.float64)
        T += torch.diag(b, 1) + torch.diag(b, -1)
    return torch.linalg.eigh(T)


def _wanted(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    order = torch.argsort(theta, descending=(which == "largest"))
    return order[:k]


def hessian_eigenvalues(model, data, k: int = 5, which: str = "largest", objective=None, params=None,
                        dtype: torch.dtype | None = None, *, attack=None, robust: str = "recraft",
                        max_iter: int | None = None, tol: float = 1e-5, seed: int = 0, batch_size: int = 512,
                        blocks: str | None = None, bn: str | None = None) -> EigenResult | dict[str, EigenResult]:
    """The k largest (or smallest, algebraically) eigenvalues of the Hessian of the mean loss.

    Lanczos with full reorthogonalisation (Lanczos 1950; Golub & Van Loan ch. 10) on H = d^2 L/dw^2
    over the parameters ``params`` (a ParameterGeometry, "all" / "weights" / "no_norm", or names).
    Unlike power iteration it finds the algebraically largest eigenvalues, not the largest in
    magnitude. ``blocks="layer"`` returns ``{layer: EigenResult}`` of the diagonal Hessian blocks.
    ``dtype=torch.float64`` computes in double precision (the model is not converted in place).
    """
    if which not in ("largest", "smallest"):
        raise InputError(f"which must be 'largest' or 'smallest', got {which!r}")
    if k < 1:
        raise InputError("k must be >= 1")
    kwargs = dict(data=data, k=k, which=which, objective=objective, dtype=dtype, attack=attack, robust=robust,
                  max_iter=max_iter, tol=tol, seed=seed, batch_size=batch_size, bn=bn)
    per_block = _blocks(hessian_eigenvalues, model, params, blocks, kwargs)
    if per_block is not None:
        return per_block
    L, dim, like = _operator(model, params, kwargs)
    k = min(k, dim)
    v0 = torch.randn(dim, generator=make_generator(seed), dtype=like.dtype).to(like.device)
    steps = max_iter or min(dim, max(3 * k + 30, 60))
    theta, s, Q, m, beta = lanczos(L.hvp, dim, steps, v0, k=k, which=which, tol=tol)
    idx = _wanted(theta, k, which)
    values = theta[idx]
    vectors = s[:, idx].T.to(Q) @ Q  # T's eigenvectors are on the CPU, Q on the model's device
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    beta_res = (beta * s[-1, idx]).abs()
    log.debug("lanczos: %d steps, top values %s", m, [round(float(v), 4) for v in values])
    return EigenResult(values=values, vectors=vectors, passes=L.passes, names=list(L.params), residuals=beta_res,
                       iterations=m)


def hessian_trace(model, data, objective=None, params=None, dtype: torch.dtype | None = None, *,
                  method: str = "hutchinson", samples: int = 100, attack=None, robust: str = "recraft",
                  seed: int = 0, batch_size: int = 512, vectors_per_call: int | None = None, blocks: str | None = None,
                  bn: str | None = None) -> TraceResult | dict[str, TraceResult]:
    """tr(H) by Hutchinson (1989) with Rademacher probes, E[v^T H v] = tr(H), or Hutch++
    (Meyer et al. 2021): tr(Q^T H Q) on a sketch Q = orth(H S) plus Hutchinson on the rest,
    with ``samples`` products in total (a third for the sketch, a third for Q, a third probes).

    ``stderr`` is the sample standard error of the Hutchinson part. Products are computed
    ``vectors_per_call`` at a time (batched double backward) where the model allows; the default
    batches 10 on GPUs and none on CPUs (where the batched backward of convolutions is slower).
    """
    if method not in ("hutchinson", "hutch++"):
        raise InputError(f"method must be 'hutchinson' or 'hutch++', got {method!r}")
    if samples < (3 if method == "hutch++" else 2):
        raise InputError("samples must be >= 2 (>= 3 for hutch++)")
    kwargs = dict(data=data, objective=objective, dtype=dtype, method=method, samples=samples, attack=attack,
                  robust=robust, seed=seed, batch_size=batch_size, vectors_per_call=vectors_per_call, bn=bn)
    per_block = _blocks(hessian_trace, model, params, blocks, kwargs)
    if per_block is not None:
        return per_block
    L, dim, like = _operator(model, params, kwargs)
    gen = make_generator(seed)

    def rademacher(n):
        return (torch.randint(0, 2, (n, dim), generator=gen) * 2 - 1).to(dtype=like.dtype, device=like.device)

    per_call = vectors_per_call or (10 if like.is_cuda else 1)

    def hvps(V):
        out = []
        if per_call == 1:
            return torch.stack([L.hvp(v) for v in V])
        for i in range(0, V.shape[0], per_call):
            chunk = V[i:i + per_call]
            try:
                out.append(L.hvp(chunk, batched=True))
            except RuntimeError:  # an op without a batching rule: one product at a time
                out.append(torch.stack([L.hvp(v) for v in chunk]))
        return torch.cat(out)

    if method == "hutchinson":
        V = rademacher(samples)
        quad = (hvps(V) * V).sum(1).double()
        vals = quad.tolist()
        value = float(quad.mean())
        se = float(quad.std(unbiased=True) / math.sqrt(samples))
        return TraceResult(value, se, L.passes, method, vals)
    k = samples // 3
    S = rademacher(k)
    Qm, _ = torch.linalg.qr(hvps(S).T)  # [D, k]
    HQ = hvps(Qm.T.contiguous())
    t_sketch = float((HQ * Qm.T).sum())
    n_g = samples - 2 * k
    G = rademacher(n_g)
    G = G - (G @ Qm) @ Qm.T
    quad = (hvps(G) * G).sum(1).double()
    value = t_sketch + float(quad.mean())
    se = float(quad.std(unbiased=True) / math.sqrt(n_g)) if n_g > 1 else float("nan")
    return TraceResult(value, se, L.passes, method, quad.tolist())


def spectral_density(model, data, objective=None, params=None, dtype: torch.dtype | None = None, *,
                     runs: int = 3, steps: int = 40, sigma: float | None = None, grid_points: int = 200,
                     attack=None, robust: str = "recraft", seed: int = 0, batch_size: int = 512,
                     bn: str | None = None) -> SpectralDensity:
    """Eigenvalue density of H by stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et
    al. 2019): per run, ``steps`` Lanczos steps from a random unit vector; the nodes are the Ritz
    values and the weights the squared first components of T's eigenvectors; the density is the
    average of Gaussians of width ``sigma`` (default 1% of the spectral range) at the nodes."""
    L, dim, like = _operator(model, params, dict(data=data, objective=objective, dtype=dtype, attack=attack,
                                                 robust=robust, batch_size=batch_size, bn=bn))
    gen = make_generator(seed)
    nodes, weights = [], []
    m = min(steps, dim)
    for _ in range(runs):
        v0 = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(dtype=like.dtype, device=like.device)
        theta, s, _, mm, _ = lanczos(L.hvp, dim, m, v0)
        nodes.append(torch.nn.functional.pad(theta, (0, m - mm), value=float(theta[-1])))
        weights.append(torch.nn.functional.pad(s[0] ** 2, (0, m - mm)))
    nodes_t, weights_t = torch.stack(nodes), torch.stack(weights)
    lo, hi = float(nodes_t.min()), float(nodes_t.max())
    span = max(hi - lo, 1e-12)
    sig = sigma if sigma is not None else 0.01 * span
    grid = torch.linspace(lo - 0.05 * span - 3 * sig, hi + 0.05 * span + 3 * sig, grid_points, dtype=torch.float64)
    g = torch.exp(-((grid[None, None, :] - nodes_t[..., None]) ** 2) / (2 * sig ** 2)) / (sig * math.sqrt(2 * math.pi))
    density = (weights_t[..., None] * g).sum(1).mean(0)
    return SpectralDensity(nodes_t, weights_t, grid, density, L.passes)
