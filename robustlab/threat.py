"""Threat models: what the attacker controls and how much.

A pixel threat model perturbs the input additively, ``apply(x, delta) = clamp(x + delta, bounds)``,
with ``delta`` inside an Lp ball of radius ``eps``. It owns the projection onto the feasible set,
the random start inside the ball and the steepest-ascent step for its norm.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .errors import InputError, check_eps

NORMS = ("linf", "l2", "l1")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a [B] tensor over the remaining dimensions of `like`."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample Lp norm of a batch, shape [B]."""
    flat = _flat(delta)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(1)
    raise InputError(f"unknown norm {norm!r}; known norms: {', '.join(NORMS)}")


def project_l1_ball(delta: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Exact Euclidean projection of each sample onto the L1 ball of radius eps.

    Sorting-based simplex projection (Duchi et al. 2008), batched: for |v| outside the ball,
    find theta with sum(max(|v| - theta, 0)) = eps and soft-threshold.
    """
    flat = _flat(delta)
    b, n = flat.shape
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(b)
    abs_v = flat.abs()
    outside = abs_v.sum(1) > eps_t
    if not outside.any():
        return delta
    mu, _ = abs_v.sort(dim=1, descending=True)
    cumsum = mu.cumsum(1)
    ks = torch.arange(1, n + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cumsum - eps_t[:, None]) / ks > 0
    rho = cond.to(flat.dtype).mul(ks).argmax(1)  # last index where cond holds
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps_t) / (rho + 1).to(flat.dtype)
    theta = theta.clamp_min(0)
    projected = flat.sign() * (abs_v - theta[:, None]).clamp_min(0)
    out = torch.where(outside[:, None], projected, flat)
    return out.reshape(delta.shape)


def project_l1_box(x: torch.Tensor, delta: torch.Tensor, eps: torch.Tensor | float,
                   bounds: tuple[float, float] = (0.0, 1.0), mask: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Euclidean projection of each perturbation onto {d : ||d||_1 <= eps, lo <= x + d <= hi}
    (and d = 0 where ``mask`` is 0); returns the projected perturbation.

    Croce & Hein 2021 ("Mind the box"): the problem is separable up to one multiplier lambda >= 0,
    d_i = sign(v_i) * min(max(|v_i| - lambda, 0), c_i) with c_i the room the box leaves in the
    direction of v_i (hi - x_i if v_i > 0, else x_i - lo). lambda = 0 if that is inside the ball,
    else the root of the decreasing piecewise-linear f(lambda) = sum_i min((|v_i| - lambda)_+, c_i) = eps,
    found by sorting the 2n breakpoints |v_i| - c_i and |v_i|. Projecting onto the ball and then
    clipping is not the same: it spends the budget on coordinates the box then cuts off.
    """
    flat = _flat(delta)
    b, n = flat.shape
    xf = _flat(x).to(flat.dtype)
    lo, hi = bounds
    abs_v = flat.abs()
    room = torch.where(flat > 0, hi - xf, xf - lo).clamp_min(0)
    if mask is not None:
        room = room * (_flat(torch.broadcast_to(mask.to(flat.dtype), delta.shape)) != 0)
    cap = torch.minimum(room, abs_v)  # a cap above |v_i| never binds (lambda >= 0); keeps it finite
    clipped = flat.sign() * cap
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).reshape(-1).expand(b)
    outside = cap.sum(1) > eps_t
    if not outside.any():
        return clipped.reshape(delta.shape)
    # f(lambda) in float64: sums over 2n breakpoints in float32 lose ~1e-5 of the budget
    a64, c64 = abs_v[outside].double(), cap[outside].double()
    e64 = eps_t[outside].double()
    points = torch.cat([a64 - c64, a64], 1)                       # breakpoints of f
    slope_change = torch.cat([-torch.ones_like(a64), torch.ones_like(a64)], 1)
    points, order = points.sort(1, descending=True)
    active = slope_change.gather(1, order).cumsum(1)              # -f'(lambda) just below each breakpoint
    gaps = points[:, :-1] - points[:, 1:]
    f_at = torch.cat([torch.zeros_like(points[:, :1]), (active[:, :-1] * gaps).cumsum(1)], 1)
    # first breakpoint (descending lambda) where f reaches eps; the root lies just above it
    k = (f_at < e64[:, None]).sum(1).clamp(1, 2 * n - 1)
    f_prev = f_at.gather(1, (k - 1)[:, None]).squeeze(1)
    p_prev = points.gather(1, (k - 1)[:, None]).squeeze(1)
    s_prev = active.gather(1, (k - 1)[:, None]).squeeze(1).clamp_min(1)
    lam = (p_prev - (e64 - f_prev) / s_prev).clamp_min(0)
    proj = (a64 - lam[:, None]).clamp_min(0)
    proj = torch.minimum(proj, c64).to(flat.dtype) * flat[outside].sign()
    clipped[outside] = proj
    return clipped.reshape(delta.shape)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp-ball threat model around each input, intersected with the input bounds.

    Args:
        norm: "linf", "l2" or "l1".
        eps: radius of the ball (>= 0).
        bounds: valid input range (after any normalisation is undone), default [0, 1].
        mask: optional tensor broadcastable to one input (or a batch); 0 where the input may
            not change (e.g. the right view of a stereo pair, a patch region).
    """

    norm: str
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        norm = str(self.norm).lower().replace("-", "").replace("_", "")
        norm = {"inf": "linf", "2": "l2", "1": "l1"}.get(norm, norm)
        if norm not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}; known norms: {', '.join(NORMS)}")
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "eps", check_eps(self.eps))
        lo, hi = (float(b) for b in self.bounds)
        if not lo < hi:
            raise InputError(f"bounds must satisfy low < high, got {self.bounds}")
        object.__setattr__(self, "bounds", (lo, hi))

    def with_eps(self, eps: float) -> "ThreatModel":
        return replace(self, eps=eps)

    def _mask_like(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.mask is None:
            return None
        m = self.mask.to(device=x.device, dtype=x.dtype)
        if m.dim() == x.dim() - 1:
            m = m.unsqueeze(0)
        try:
            return torch.broadcast_to(m, x.shape)
        except RuntimeError:
            raise InputError(
                f"threat mask of shape {tuple(self.mask.shape)} does not broadcast to inputs "
                f"of shape {tuple(x.shape)}"
            ) from None

    def masked(self, t: torch.Tensor) -> torch.Tensor:
        """t (a perturbation or a gradient) with the mask applied; t itself without a mask."""
        m = self._mask_like(t)
        return t if m is None else t * m

    def apply(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The perturbed input: clamp(x + mask * delta) to the bounds."""
        m = self._mask_like(x)
        if m is not None:
            delta = delta * m
        return (x + delta).clamp(*self.bounds)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor | float | None = None) -> torch.Tensor:
        """Project x_adv onto {x + delta : ||delta|| <= eps, x + delta in bounds}.

        Linf: exact (the box intersection is separable). L2: exact projection onto the ball followed
        by clamping to the bounds (clamping moves every coordinate towards x, so the result stays in
        the ball; not the exact projection onto ball-and-box). L1: the exact projection onto
        ball-and-box (:func:`project_l1_box`).
        """
        eps = self.eps if eps is None else eps
        delta = x_adv - x
        m = self._mask_like(x)
        if m is not None:
            delta = delta * m
        if self.norm == "linf":
            if isinstance(eps, torch.Tensor):
                e = _per_sample(eps, delta)
                delta = torch.maximum(torch.minimum(delta, e), -e)
            else:
                delta = delta.clamp(-eps, eps)
        elif self.norm == "l2":
            norms = lp_norm(delta, "l2")
            e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
            factor = torch.where(norms > e, e / norms.clamp_min(1e-12), torch.ones_like(norms))
            delta = delta * _per_sample(factor, delta)
        else:
            return (x + project_l1_box(x, delta, eps, self.bounds, m)).clamp(*self.bounds)
        return (x + delta).clamp(*self.bounds)

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """Project a perturbation onto the ball alone (masked), ignoring the input bounds: for a
        perturbation shared by many inputs, each is clamped when it is applied."""
        unbounded = replace(self, bounds=(float("-inf"), float("inf")))
        return unbounded.project(torch.zeros_like(delta), delta)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point inside the ball around x (and inside the bounds).

        Linf: uniform in the cube. L2: uniform in the ball (direction ~ N(0, I), radius ~ eps*U^(1/d)),
        not on its surface. L1: uniform on the simplex-ball via Laplace direction and radius eps*U^(1/d).
        """
        shape = x.shape
        if self.norm == "linf":
            u = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * self.eps
        else:
            d = x[0].numel()
            if self.norm == "l2":
                direction = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
            else:
                e = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
                direction = -torch.log(e.clamp_min(1e-12))
                s = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
                direction = direction * torch.where(s < 0.5, -1.0, 1.0)
            direction = direction / _per_sample(lp_norm(direction, self.norm).clamp_min(1e-12), direction)
            r = torch.rand(shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
            delta = direction * _per_sample(r * self.eps, direction)
        return self.project(x, x + delta)

    def step(self, grad: torch.Tensor, step_size: torch.Tensor | float, l1_sparsity: float = 0.95) -> torch.Tensor:
        """Steepest-ascent direction of Lp size `step_size` for gradient `grad`.

        Linf: step_size * sign(g). L2: step_size * g / ||g||_2. L1: sparse steepest ascent
        (Tramer & Boneh 2019): sign(g) on the coordinates above the `l1_sparsity` quantile of |g|,
        scaled to L1 norm step_size.
        """
        m = self._mask_like(grad)
        if m is not None:
            grad = grad * m
        if not isinstance(step_size, torch.Tensor):
            step_size = torch.full((grad.shape[0],), float(step_size), dtype=grad.dtype, device=grad.device)
        s = _per_sample(step_size, grad)
        if self.norm == "linf":
            return s * grad.sign()
        if self.norm == "l2":
            return s * grad / _per_sample(lp_norm(grad, "l2").clamp_min(1e-12), grad)
        flat = _flat(grad).abs()
        k = max(1, int(round((1 - l1_sparsity) * flat.shape[1])))
        thresh = flat.topk(k, dim=1).values[:, -1:]
        chosen = (flat >= thresh) & (flat > 0)
        direction = grad.sign() * chosen.reshape(grad.shape).to(grad.dtype)
        count = _per_sample(chosen.sum(1).clamp_min(1).to(grad.dtype), grad)
        return s * direction / count

    def contains(self, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Per-sample bool: x_adv lies in the ball around x and in the bounds."""
        norms = lp_norm(x_adv - x, self.norm)
        inside = norms <= self.eps * (1 + tol) + tol
        in_bounds = _flat((x_adv >= self.bounds[0] - tol) & (x_adv <= self.bounds[1] + tol)).all(1)
        return inside & in_bounds

    def describe(self) -> str:
        return f"{self.norm} eps={self.eps:g}"
