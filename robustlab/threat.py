"""Threat models: what the attacker controls and how much.

A pixel threat model perturbs the input additively, ``apply(x, delta) = clamp(x + delta, bounds)``,
with ``delta`` inside an Lp ball of radius ``eps``. It owns the projection onto the feasible set,
the random start inside the ball and the steepest-ascent step for its norm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .errors import InputError, check_eps

NORMS = ("linf", "l2", "l1")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a [B] tensor over the remaining dimensions of `like`."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


_per_sample = per_sample  # old private name, kept for modules not yet moved to the public one


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
    # f(lambda) in float64: sums over 2n breakpoints in float32 lose ~1e-5 of the budget. Every row is
    # solved and the rows inside the ball keep `clipped` (torch.where): no host read, no data-dependent size
    a64, c64 = abs_v.double(), cap.double()
    e64 = eps_t.double()
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
    proj = torch.minimum(proj, c64).to(flat.dtype) * flat.sign()
    return torch.where(outside[:, None], proj, clipped).reshape(delta.shape)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp-ball threat model around each input, intersected with the input bounds.

    Args:
        norm: "linf", "l2" or "l1".
        eps: radius of the ball (>= 0).
        bounds: valid input range (after any normalisation is undone), default [0, 1].
        mask: optional tensor broadcastable to one input (or a batch); 0 where the input may
            not change (e.g. the right view of a stereo pair, a patch region).
        mask_per_sample: the mask has a leading batch dimension, row i belonging to input i (a
            text-stroke mask per line, a valid-pixel mask per pair); the engine subsets it with
            the samples when it drops finished ones (``subset``).

    The attack variable of a pixel threat is the perturbed input itself (``variable_is_point``):
    ``init`` draws a random point, ``project`` and ``step`` act on points; structured threats
    (``VariableThreat``) optimise another variable and map it to the input with ``apply``.
    """

    norm: str
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: torch.Tensor | None = field(default=None, compare=False, repr=False)
    mask_per_sample: bool = False

    variable_is_point = True

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

    @property
    def has_per_sample_state(self) -> bool:
        return self.mask is not None and self.mask_per_sample

    def subset(self, index: torch.Tensor) -> "ThreatModel":
        """The threat model of samples `index` (per-sample masks are indexed, shared ones kept)."""
        if not self.has_per_sample_state:
            return self
        return replace(self, mask=self.mask[index.to(self.mask.device)])

    def init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The attack variable's random start: a random point of the feasible set (``random_init``)."""
        return self.random_init(x, generator)

    def point(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The input that variable `v` stands for: for a pixel threat the variable is that input."""
        return v

    def pullback(self, x: torch.Tensor, v: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to the variable, given the gradient at the input ``point(x, v)``."""
        return grad_x

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
        return self.project(x, x + self.random_delta(x.shape, generator, x.dtype, x.device))

    def random_delta(self, shape, generator: torch.Generator | None = None, dtype=torch.float32,
                     device=None) -> torch.Tensor:
        """A perturbation uniform in the ball (ignoring the bounds), for a batch of `shape`: the one
        random start every attack and training method draws from (``random_init`` adds the bounds)."""
        shape = tuple(shape)
        if self.norm == "linf":
            u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return (2 * u - 1) * self.eps
        d = math.prod(shape[1:])
        if self.norm == "l2":
            direction = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        else:
            e = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            direction = -torch.log(e.clamp_min(1e-12))
            s = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            direction = direction * torch.where(s < 0.5, -1.0, 1.0)
        direction = direction / per_sample(lp_norm(direction, self.norm).clamp_min(1e-12), direction)
        r = torch.rand(shape[0], generator=generator, device=device, dtype=dtype) ** (1.0 / d)
        return direction * per_sample(r * self.eps, direction)

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


class VariableThreat:
    """A threat model whose attack variable is not the input: ``x_adv = apply(x, v)``, with ``v`` in
    an Lp ball of radius ``eps`` (linf or l2). Subclasses define ``variable_like(x)`` (a zero variable
    for a batch) and ``transform(x, v)`` (differentiable in ``v``); per-sample state (a warp map, a
    mask) is held in tensors named in ``per_sample_fields`` and subset with the samples.

    Every attack works on it unchanged: the engine evaluates ``point(x, v) = apply(x, v)`` and maps
    the input gradient back to the variable with autograd (``pullback``); ``init``, ``project`` and
    ``step`` act on the variable.
    """

    variable_is_point = False
    per_sample_fields: tuple[str, ...] = ()

    def __init__(self, norm: str = "linf", eps: float = 0.0, bounds: tuple[float, float] = (0.0, 1.0)):
        self._ball = ThreatModel(norm, eps, bounds=(float("-inf"), float("inf")))
        if self._ball.norm not in ("linf", "l2"):
            raise InputError(f"{type(self).__name__} supports linf and l2 balls, got {norm!r}")
        self.norm, self.eps = self._ball.norm, self._ball.eps
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise InputError(f"bounds must satisfy low < high, got {bounds}")
        self.bounds = (lo, hi)
        self.mask = None

    # ---- to implement ----------------------------------------------------------------------
    def variable_like(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- the contract --------------------------------------------------------------------
    def _copy(self, **changes) -> "VariableThreat":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def with_eps(self, eps: float) -> "VariableThreat":
        ball = self._ball.with_eps(eps)
        return self._copy(_ball=ball, eps=ball.eps)

    @property
    def has_per_sample_state(self) -> bool:
        return bool(self.per_sample_fields)

    def subset(self, index: torch.Tensor) -> "VariableThreat":
        return self._copy(**{f: getattr(self, f)[index.to(getattr(self, f).device)] for f in self.per_sample_fields})

    def check_batch(self, x: torch.Tensor) -> None:
        for f in self.per_sample_fields:
            n = getattr(self, f).shape[0]
            if n != x.shape[0]:
                raise InputError(f"{type(self).__name__} holds {f} for {n} samples but the batch has {x.shape[0]}; "
                                 "build the threat for these inputs, or take .subset(index) of it")

    def apply(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.transform(x, v).clamp(*self.bounds)

    def point(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.apply(x, v)

    def pullback(self, x: torch.Tensor, v: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
        v_req = v.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.apply(x, v_req)
            grad_v, = torch.autograd.grad(out, v_req, grad_x)
        return grad_v

    def init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        zero = self.variable_like(x)
        return self._ball.random_init(zero, generator)

    def zero(self, x: torch.Tensor) -> torch.Tensor:
        return self.variable_like(x)

    def project(self, x: torch.Tensor, v: torch.Tensor, eps: torch.Tensor | float | None = None) -> torch.Tensor:
        return self._ball.project(torch.zeros_like(v), v, eps)

    def step(self, grad: torch.Tensor, step_size: torch.Tensor | float, **kw) -> torch.Tensor:
        return self._ball.step(grad, step_size)

    def project_delta(self, v: torch.Tensor) -> torch.Tensor:
        """A variable shared by many inputs (a universal perturbation) projected onto the ball."""
        return self._ball.project_delta(v)

    def contains(self, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Inputs lie in the bounds (the ball constrains the variable, checked by the attack)."""
        return ((x_adv >= self.bounds[0] - tol) & (x_adv <= self.bounds[1] + tol)).flatten(1).all(1)

    def describe(self) -> str:
        return f"{type(self).__name__} {self.norm} eps={self.eps:g}"


class ParametricThreat(VariableThreat):
    """Beyond the image space: a few parameters theta of a differentiable transform (colour,
    geometry, blur and lighting). Identity parameters theta_0, per-parameter range r; the feasible
    set is the box |theta - theta_0| <= eps * r, so ``eps`` scales the whole box (eps = 1: the
    nominal ranges). The step is ``step_size * r * sign(grad)``, so step sizes are in units of eps.
    Subclasses define ``names``, ``default_ranges``, ``identity`` and ``transform(x, theta)``."""

    norm = "param"
    names: tuple[str, ...] = ()

    def __init__(self, eps: float = 1.0, ranges: dict[str, float] | None = None, bounds=(0.0, 1.0)):
        super().__init__("linf", eps, bounds)
        self.norm = "param"
        r = dict(self.default_ranges())
        for k, v in (ranges or {}).items():
            if k not in r:
                raise InputError(f"unknown parameter {k!r} for {type(self).__name__}; known: {', '.join(r)}")
            r[k] = float(v)
        self.range_values = r

    def default_ranges(self) -> dict[str, float]:
        raise NotImplementedError

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """theta_0 for a batch, shape [B, P]."""
        raise NotImplementedError

    def param_names(self, x: torch.Tensor) -> list[str]:
        return list(self.names)

    def _expand_ranges(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.range_values[n] for n in self.param_names(x)], dtype=x.dtype, device=x.device)

    def param_ranges(self, x: torch.Tensor) -> torch.Tensor:
        return self.eps * self._expand_ranges(x)

    def variable_like(self, x):
        return self.identity(x)

    def with_eps(self, eps: float) -> "ParametricThreat":
        return self._copy(eps=check_eps(eps))

    def project_params(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        t0, r = self.identity(x), self.param_ranges(x)
        return torch.maximum(torch.minimum(theta, t0 + r), t0 - r)

    def project(self, x, v, eps=None):
        return self.project_params(x, v)

    def random_params(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Uniform in the box, from uniform [0, 1) numbers u of shape [B, P]."""
        return self.identity(x) + (2 * u - 1) * self.param_ranges(x)

    def init(self, x, generator=None):
        t0 = self.identity(x)
        u = torch.rand(t0.shape, generator=generator, dtype=t0.dtype, device=t0.device)
        return self.project_params(x, self.random_params(x, u))

    def step(self, grad, step_size, **kw):
        # the box is per parameter: a sign step scaled by each parameter's nominal range
        if not isinstance(step_size, torch.Tensor):
            step_size = torch.full((grad.shape[0],), float(step_size), dtype=grad.dtype, device=grad.device)
        r = torch.tensor([self.range_values[n] for n in self._names_for(grad)], dtype=grad.dtype, device=grad.device)
        return step_size[:, None] * r[None] * grad.sign()

    def _names_for(self, theta: torch.Tensor) -> list[str]:
        names = list(self.names)
        if len(names) == theta.shape[1]:
            return names
        per = theta.shape[1] // len(names)  # per-channel parameters, grouped by name
        return [n for n in names for _ in range(per)]

    def describe(self) -> str:
        return f"{type(self).__name__} eps={self.eps:g} ranges={self.range_values}"


class ColorThreat(ParametricThreat):
    """Per-channel affine colour change x'_c = a_c x_c + b_c (contrast a, brightness b)."""

    names = ("contrast", "brightness")

    def default_ranges(self):
        return {"contrast": 0.3, "brightness": 0.2}

    def param_names(self, x):
        c = x.shape[1]
        return ["contrast"] * c + ["brightness"] * c

    def identity(self, x):
        c = x.shape[1]
        return torch.cat([torch.ones(x.shape[0], c), torch.zeros(x.shape[0], c)], 1).to(x)

    def transform(self, x, theta):
        c = x.shape[1]
        a, b = theta[:, :c, None, None], theta[:, c:, None, None]
        return a * x + b


class GeometricThreat(ParametricThreat):
    """Rotation (degrees), translation (fractions of the image) and scale, via affine_grid."""

    names = ("rotation", "tx", "ty", "scale")

    def default_ranges(self):
        return {"rotation": 30.0, "tx": 0.1, "ty": 0.1, "scale": 0.1}

    def identity(self, x):
        return torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype, device=x.device).expand(x.shape[0], 4).clone()

    def transform(self, x, theta):
        ang = theta[:, 0] * math.pi / 180
        s = theta[:, 3]
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        mat = torch.stack([torch.stack([cos, -sin, theta[:, 1] * 2], 1), torch.stack([sin, cos, theta[:, 2] * 2], 1)], 1)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BlurLightingThreat(ParametricThreat):
    """Gaussian blur (sigma in pixels, differentiable kernel) and a linear lighting ramp:
    x' = blur(x) * (1 + gx * u + gy * v) + bias with u, v in [-1, 1] the image coordinates."""

    names = ("sigma", "gx", "gy", "bias")

    def default_ranges(self):
        return {"sigma": 1.5, "gx": 0.3, "gy": 0.3, "bias": 0.1}

    def identity(self, x):
        t = torch.zeros(x.shape[0], 4, dtype=x.dtype, device=x.device)
        return t

    def project_params(self, x, theta):
        theta = super().project_params(x, theta)
        return torch.cat([theta[:, :1].clamp_min(0), theta[:, 1:]], 1)  # sigma >= 0

    def transform(self, x, theta):
        b, c, h, w = x.shape
        sigma = theta[:, 0].clamp_min(1e-3)
        k = 7
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)                                           # [B, k]
        xp = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="replicate")
        # separable blur with a per-sample kernel: grouped convolution over B*C channels
        xr = xp.reshape(1, b * c, *xp.shape[-2:])
        kh = g.repeat_interleave(c, 0)[:, None, None, :]
        kv = g.repeat_interleave(c, 0)[:, None, :, None]
        blurred = F.conv2d(F.conv2d(xr, kh, groups=b * c), kv, groups=b * c).reshape(b, c, h, w)
        v = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device)[:, None]
        u = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device)[None, :]
        gain = 1 + theta[:, 1, None, None] * u + theta[:, 2, None, None] * v
        return blurred * gain[:, None] + theta[:, 3, None, None, None]


class LatentThreat(ParametricThreat):
    """The latent code of a VAE as the attacker's variable: theta_0 = mu(x), |theta - theta_0| <= eps
    elementwise (eps = eta, Stutz et al.'s ||zeta||_inf bound), x~ = decode(theta).

    For a class-conditional VAE the threat holds the batch's ``labels`` (per-sample state, subset with
    the samples): theta_0 = mu(x, y) and x~ = decode(theta, y), the sample's own class model."""

    names = ("z",)

    def __init__(self, vae, eps: float = 0.5, bounds=(0.0, 1.0), labels: torch.Tensor | None = None):
        self.vae = vae
        if vae.conditional:
            if labels is None:
                raise InputError("a class-conditional VAE's latent threat needs the labels of the batch (labels=y)")
            self.labels = torch.as_tensor(labels).long().reshape(-1)
            self.per_sample_fields = ("labels",)
        else:
            self.labels = None
        super().__init__(eps, None, bounds)

    def default_ranges(self):
        return {"z": 1.0}

    def param_names(self, x):
        return ["z"] * self.vae.latent_dim

    def _labels(self, x):
        if self.labels is None:
            return None
        self.check_batch(x)
        return self.labels.to(x.device)

    def identity(self, x):
        with torch.no_grad():
            return self.vae.encode(x, self._labels(x))[0]

    def transform(self, x, theta):
        return self.vae.decode(theta, self._labels(x)).reshape(x.shape)
