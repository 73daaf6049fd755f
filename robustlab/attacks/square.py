"""Square attack (Andriushchenko et al. 2020): score-based random search with square updates."""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..objectives import Margin, Objective
from ..threat import ThreatModel, per_sample, lp_norm
from .base import AttackContext, IterativeAttack, check_query_budget


def square_p(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels in the square at iteration `it` (0-based: the first update after the start is
    it = 0): p_init halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
    10,000-query schedule, rescaled to n_iters (the reference's ``p_selection``)."""
    it = int(it / n_iters * 10000)
    halvings = sum(it > b for b in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2 ** halvings


def _window_corners(u: torch.Tensor, side: int | tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Window corners (top, left) [B, 2] from uniform draws u [B, 2] in [0, 1): along a side of n pixels
    uniform over 0 .. n - side, the paper's range (Algorithm 2 of Andriushchenko et al. 2020:
    r, s ~ U{0, ..., w - h}), both sides in one operation.

    Deliberately not the reference code's range: auto-attack's ``random_int(0, h - s)`` (as the authors'
    square-attack code) stops at n - side - 1, so no window ever covers the last row or column, which
    keep their initial values (with the side capped at h - 1, even while the window is nearly the whole
    image). Measured on the 8 x 8 digits MLP (1,000 queries, seeds 0-2): Linf 0.1 successes 0.58-0.60
    with this range, 0.42-0.45 with the reference's; L2 1.0: 0.97-0.99 against 0.86-0.90. Clamped, since
    u (n - side + 1) can round up to n - side + 1 in float32."""
    sh, sw = _sides(side)
    key = (sh, sw, h, w, str(u.device), u.dtype)
    span = _cached(("span", *key), lambda: torch.tensor([h - sh + 1, w - sw + 1], dtype=u.dtype, device=u.device))
    last = _cached(("last", *key), lambda: torch.tensor([h - sh, w - sw], device=u.device))
    return torch.minimum((u * span).long(), last)


def _sides(side: int | tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of a window: a square's side, or a 1-D window's (1, length)."""
    return (side, side) if isinstance(side, int) else side


def linf_window(p: float, h: int, w: int) -> int:
    """The side of the Linf window covering a fraction p of the input: a square of side sqrt(p H W), at most
    H - 1 (the reference's cap for square images) and W; on one-row inputs (a waveform as [B, C, 1, T]) the
    length of a 1-D window, round(p T) samples."""
    if h == 1:
        return int(min(max(round(p * w), 1), w))
    return int(min(max(round(math.sqrt(p * h * w)), 1), h - 1, w))


def _window_masks(ctx: AttackContext, side: int, h: int, w: int) -> torch.Tensor:
    """Per-sample random square windows as a bool mask [B, 1, H, W] (corners from :func:`_window_corners`)."""
    return _mask_of(_window_corners(ctx.rand_full((2,)), side, h, w), side, h, w)


def _windows(ctx: AttackContext, side: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random square windows, drawn as :func:`_window_masks` draws them: the bool mask
    [B, 1, H, W] and the flat pixel indices [B, side * side] (:func:`_window_pixels`)."""
    corners = _window_corners(ctx.rand_full((2,)), side, h, w)
    return _mask_of(corners, side, h, w), _window_pixels(corners, side, w)


def _mask_of(corners: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """The bool mask [B, 1, H, W] of the windows with these corners (a row band and a column band, ANDed)."""
    rows, cols = _bands(side, h, corners.device), _bands(side, w, corners.device)
    return (rows[corners[:, 0]][:, :, None] & cols[corners[:, 1]][:, None, :])[:, None]


def _two_windows(ctx: AttackContext, side: int, b: int, c: int, h: int, w: int):
    """The L2/L1 moves' windows 1 and 2 (drawn in this order): both masks expanded to [B, C, H, W], and
    window 1's pixel indices."""
    w1, pix1 = _windows(ctx, side, h, w)
    return w1.expand(b, c, h, w), _window_masks(ctx, side, h, w).expand(b, c, h, w), pix1


def _window_pixels(corners: torch.Tensor, side: int | tuple[int, int], w: int) -> torch.Tensor:
    """Flat pixel indices [B, side * side] of each sample's window (rows top .. top + side - 1, columns
    left .. left + side - 1, row-major: the order in which a boolean mask of the window lists them), so
    windows are read and written with ``gather``/``scatter`` at a size the host knows:
    top w + left + (i w + j) for the window's offsets (i, j)."""
    device = corners.device
    sh, sw = _sides(side)
    offsets = _cached(("offsets", sh, sw, w, str(device)),
                      lambda: (torch.arange(sh, device=device)[:, None] * w + torch.arange(sw, device=device)).reshape(-1))
    return (corners[:, 0] * w + corners[:, 1])[:, None] + offsets


def _read_window(t: torch.Tensor, pix: torch.Tensor, side: int) -> torch.Tensor:
    """The windows ``pix`` of a [B, C, H, W] tensor as [B, C, side, side]."""
    b, c = t.shape[:2]
    return t.reshape(b, c, -1).gather(2, pix[:, None].expand(b, c, pix.shape[1])).reshape(b, c, side, side)


def _write_window(t: torch.Tensor, pix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A copy of the [B, C, H, W] tensor ``t`` with its windows ``pix`` set to ``values`` [B, C, side, side]."""
    b, c = t.shape[:2]
    return t.reshape(b, c, -1).scatter(2, pix[:, None].expand(b, c, pix.shape[1]), values.reshape(b, c, -1)).view_as(t)


#: constant index tensors (bands, corner spans, window offsets) per size and device, at most 256
_BANDS: dict = {}


def _cached(key: tuple, make):
    if key not in _BANDS:
        _BANDS[key] = make()
        if len(_BANDS) > 256:
            _BANDS.pop(next(iter(_BANDS)))
    return _BANDS[key]


def _bands(side: int, n: int, device) -> torch.Tensor:
    """bool [n - side + 1, n]: row j marks the band [j, j + side) (cached per size and device)."""
    def make():
        j = torch.arange(n - side + 1, device=device)[:, None]
        k = torch.arange(n, device=device)[None, :]
        return (k >= j) & (k < j + side)
    return _cached(("bands", side, n, str(device)), make)


class Square(IterativeAttack):
    """Square attack, Linf, L2 and L1, on any score objective (default: the margin loss).

    Linf: start from vertical stripes of +-eps; each iteration resamples a random square of side
    round(sqrt(p * H * W)) to +-eps per channel and keeps it if the loss improves.
    L2: start from a grid of centred "meta-square" bumps; each iteration moves perturbation mass from
    one square to another, keeping ||delta||_2 = eps (the paper's L2 update).
    L1 (the L1 version of the reference AutoAttack code, Croce et al. 2022): the same moves with bumps
    of weight 1 / (k + 1)^4 normalised in L1, and the exact projection onto the L1 ball and the box.
    Uses one query per iteration after the first; ``max_queries`` is the per-sample budget, shared
    evenly by the restarts (each gets ``max_queries // restarts``). On a ``VariableThreat`` (linf, l2) the
    search runs on the threat's variable from its zero (e.g. a perturbation scaled per sample: one radius
    per sample).
    """

    name = "square"
    default_objective = Margin
    evaluate_final = False
    needs_gradients = False

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 p_init: float = 0.8, restarts: int = 1, **options):
        super().__init__(threat, objective, **options)
        if threat.norm not in ("linf", "l2", "l1"):
            raise InputError("Square supports the linf, l2 and l1 norms")
        self.restarts = check_query_budget(restarts, "Square", name="restarts")
        self.max_queries = check_query_budget(max_queries, "Square", self.restarts, "one query per restart's start")
        self.steps = self.max_queries // self.restarts - 1  # the restarts share max_queries
        self.p_init = float(p_init)

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        x, eps = ctx.x, ctx.threat.eps
        b, c, h, w = x.shape
        if ctx.threat.norm == "linf":
            signs = torch.where(ctx.rand_full((c, 1, w)) < 0.5, -1.0, 1.0).to(x.dtype)
            delta = eps * signs.expand(b, c, h, w)
        else:
            delta = self._l2_init(ctx, b, c, h, w)
        x0 = ctx.threat.project(x, _origin(ctx) + delta, self._budget(ctx.threat))
        loss, _, _ = ctx.evaluate(x0)
        return {"x_adv": x0, "loss": loss}

    @staticmethod
    def _budget(threat: ThreatModel) -> float:
        """L1 aims just inside the ball (the reference's eps (1 - 1e-6)), so float sums stay within eps."""
        return threat.eps * (1 - 1e-6) if threat.norm == "l1" else threat.eps

    def _l2_init(self, ctx, b, c, h, w) -> torch.Tensor:
        """A grid of (h // 5)-sized meta-square bumps with a random sign per square and channel,
        rescaled to ||delta||_2 = eps (L2); for L1 the bumps have unit L1 norm and the sum is left to
        the projection onto the L1 ball."""
        norm = ctx.threat.norm
        s = max(h // 5, 1)
        delta = torch.zeros(b, c, h, w, dtype=ctx.x.dtype, device=ctx.x.device)
        start = (h - 5 * s) // 2 if h >= 5 * s else 0
        n_h, n_w = h // s, w // s
        signs = torch.where(ctx.rand_full((n_h, n_w, c)) < 0.5, -1.0, 1.0).to(ctx.x.dtype)
        flips = ctx.rand_full((n_h, n_w))
        for i in range(n_h):
            for j in range(n_w):
                top, left = start + i * s, start + j * s
                if top + s > h or left + s > w:
                    continue
                bump = _meta_bump(s, ctx.x, norm)
                bumps = torch.where(per_sample(flips[:, i, j] < 0.5, bump[None]), bump.T[None], bump[None])
                delta[:, :, top:top + s, left:left + s] += bumps[:, None] * signs[:, i, j, :, None, None]
        if norm == "l1":
            return delta
        delta = delta / per_sample(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return delta * ctx.threat.eps

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        x, threat = ctx.x, ctx.threat
        b, c, h, w = x.shape
        p = square_p(self.p_init, i, self.max_queries)  # iteration i = 0, 1, ...: the reference's p_selection(i_iter)
        linf_side = linf_window(p, h, w)
        if threat.norm == "linf" and threat.mask is None:
            return self._linf_window_step(ctx, s, linf_side)
        origin = _origin(ctx)
        delta = s["x_adv"] - origin
        if threat.norm == "linf":
            side = linf_side if h > 1 else 1  # masked: square windows (one sample on one-row inputs)
            window = _window_masks(ctx, side, h, w)
            signs = torch.where(ctx.rand_full((c, 1, 1)) < 0.5, -1.0, 1.0).to(x.dtype) * threat.eps
            new = torch.where(window, signs, delta)
            unchanged = ~(self._apply(threat, x, new) != s["x_adv"]).flatten(1).any(1)
            # the window already had these signs: flip them so the query is not wasted (a no-op elsewhere)
            new = torch.where(window & per_sample(unchanged, window), -signs, new)
            x_new = self._apply(threat, x, new)
        elif threat.norm == "l2":
            x_new = threat.project(x, origin + self._l2_update(ctx, delta, p, b, c, h, w))
        else:
            x_new = threat.project(x, origin + self._l1_update(ctx, delta, p, b, c, h, w), self._budget(threat))
        loss, _, _ = ctx.evaluate(x_new)
        better = loss > s["loss"]
        return {"x_adv": torch.where(per_sample(better, x_new), x_new, s["x_adv"]),
                "loss": torch.where(better, loss, s["loss"])}

    @staticmethod
    def _linf_window_step(ctx: AttackContext, s: dict, side: int) -> dict:
        """The Linf step touching only the window: the iterate is changed in place on the window's
        pixels, queried, and the window restored where the loss did not improve. Equal to the
        full-image step (same draws, same points) at a cost independent of the image size. No host
        synchronisation: the flip of an unchanged window and the restore are masks (``torch.where``).
        On a ``VariableThreat`` the window is set on the variable (unbounded: the threat clamps its input)."""
        x, eps = _origin(ctx), ctx.threat.eps
        lo, hi = ctx.threat.bounds if ctx.threat.variable_is_point else (-math.inf, math.inf)
        b, c, h, w = x.shape
        window = (1, side) if h == 1 else side  # one-row inputs: a 1-D window of `side` samples
        pix = _window_pixels(_window_corners(ctx.rand_full((2,)), window, h, w), window, w)[:, None].expand(b, c, -1)
        signs = torch.where(ctx.rand_full((c, 1)) < 0.5, -eps, eps).to(x.dtype)          # [B, C, 1]
        if not s["x_adv"].is_contiguous():
            s["x_adv"] = s["x_adv"].contiguous()
        flat = s["x_adv"].view(b, c, h * w)
        old = flat.gather(2, pix)
        x_win = x.reshape(b, c, h * w).gather(2, pix)
        new = (x_win + signs).clamp(lo, hi)
        unchanged = (new == old).flatten(1).all(1)
        # the window already had these signs: flip them so the query is not wasted
        new = torch.where(unchanged[:, None, None], (x_win - signs).clamp(lo, hi), new)
        flat.scatter_(2, pix, new)
        loss, _, _ = ctx.evaluate(s["x_adv"])
        better = loss > s["loss"]
        flat.scatter_(2, pix, torch.where(better[:, None, None], new, old))  # restored where not better
        return {"x_adv": s["x_adv"], "loss": torch.where(better, loss, s["loss"])}

    @staticmethod
    def _apply(threat: ThreatModel, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x + delta in the bounds; |delta| <= eps holds by construction (Linf), so only a mask needs projecting."""
        if threat.mask is not None:
            return threat.project(x, x + delta)
        return (x + delta).clamp(*threat.bounds)

    def _l1_update(self, ctx, delta, p, b, c, h, w) -> torch.Tensor:
        return _l1_window_update(ctx, delta, p, b, c, h, w)

    def _l2_update(self, ctx, delta, p, b, c, h, w) -> torch.Tensor:
        """The paper's L2 step: window 1 gets a fresh meta-square bump (random sign per channel) plus its
        old direction, rescaled per channel to take over the mass of windows 1 and 2 and the unused
        budget eps^2 - ||delta||^2 (split over channels); window 2 is zeroed; the whole perturbation is
        then rescaled to ||delta||_2 = eps."""
        eps = ctx.threat.eps
        side = max(int(round(math.sqrt(p * h * w))), 3)
        side = min(side + (side % 2 == 0), h - 1 if h > 3 else h, w)  # the reference's h - 1 (square images), and the width
        w1, w2, pix1 = _two_windows(ctx, side, b, c, h, w)
        old_w1 = _read_window(delta, pix1, side)
        norm_old_w1 = old_w1.flatten(2).norm(dim=2)                                   # [B, C]
        norm_image = lp_norm(delta, "l2")                                             # [B]
        norm_windows = (delta * (w1 | w2)).flatten(2).norm(dim=2)                     # [B, C]
        bump = _meta_bump(side, delta)
        flips = ctx.rand_full(()) < 0.5
        bumps = torch.where(flips[:, None, None], bump.T[None], bump[None])            # [B, s, s]
        signs = torch.where(ctx.rand_full((c,)) < 0.5, -1.0, 1.0).to(delta.dtype)     # [B, C]
        new_w1 = bumps[:, None] * signs[:, :, None, None] + old_w1 / (norm_old_w1[:, :, None, None] + 1e-10)
        target = ((eps ** 2 - norm_image ** 2).clamp_min(0)[:, None] / c + norm_windows ** 2).sqrt()
        new_w1 = new_w1 / new_w1.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None] * target[:, :, None, None]
        new = _write_window(delta.masked_fill(w2, 0.0), pix1, new_w1)
        return new / per_sample(lp_norm(new, "l2").clamp_min(1e-12), new) * eps


def _origin(ctx: AttackContext) -> torch.Tensor:
    """The unperturbed variable of the active samples: the inputs for a pixel threat, the threat's zero
    variable for a ``VariableThreat`` (e.g. a perturbation scaled per sample), whose ball Square searches."""
    return ctx.x if ctx.threat.variable_is_point else ctx.input_shaped_variable("Square")


def _l1_window_update(ctx, delta, p, b, c, h, w) -> torch.Tensor:
    """The L1 move: window 1 gets a fresh L1 meta-square bump (random sign per channel) plus its old
    direction (unit L1 per channel), rescaled per channel to L1 mass c * (free / c + the mass of windows 1
    and 2 in that channel), free = max(eps - ||delta||_1, 0); window 2 is zeroed. The caller projects."""
    eps = ctx.threat.eps
    side = max(int(round(math.sqrt(p * h * w))), 3)
    side = min(side + (side % 2 == 0), h, w)
    w1, w2, pix1 = _two_windows(ctx, side, b, c, h, w)
    old_w1 = _read_window(delta, pix1, side)
    mass_old_w1 = old_w1.abs().flatten(2).sum(2)                                   # [B, C]
    mass_image = lp_norm(delta, "l1")                                              # [B]
    mass_windows = (delta * (w1 | w2)).abs().flatten(2).sum(2)                     # [B, C]
    bump = _meta_bump(side, delta, "l1")
    flips = ctx.rand_full(()) < 0.5
    bumps = torch.where(flips[:, None, None], bump.T[None], bump[None])            # [B, s, s]
    signs = torch.where(ctx.rand_full((c,)) < 0.5, -1.0, 1.0).to(delta.dtype)     # [B, C]
    new_w1 = bumps[:, None] * signs[:, :, None, None] + old_w1 / (mass_old_w1[:, :, None, None] + 1e-12)
    target = ((eps - mass_image).clamp_min(0)[:, None] / c + mass_windows) * c
    new_w1 = new_w1 / (new_w1.abs().flatten(2).sum(2)[:, :, None, None] + 1e-12) * target[:, :, None, None]
    return _write_window(delta.masked_fill(w2, 0.0), pix1, new_w1)


def _pyramid(rows: int, cols: int, like: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Centred bump: sum over nested squares around the centre of 1 / (k + 1)^2, unit L2 norm
    (L1: 1 / (k + 1)^4, unit L1 norm)."""
    ci, cj = rows // 2, cols // 2
    n_rings = max(ci, cj) + 1
    ii = torch.arange(rows, device=like.device)[:, None]
    jj = torch.arange(cols, device=like.device)[None, :]
    r = torch.maximum((ii - ci).abs(), (jj - cj).abs())
    weights = 1.0 / torch.arange(1, n_rings + 1, dtype=like.dtype, device=like.device) ** (4 if norm == "l1" else 2)
    tail = weights.flip(0).cumsum(0).flip(0)      # tail[k] = sum_{j >= k} 1 / (j + 1)^2
    bump = tail[r.clamp(max=n_rings - 1)]
    return bump / (bump.abs().sum() if norm == "l1" else bump.norm())


def _meta_bump(s: int, like: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """The meta-square: a positive bump on the top half and a negative one on the bottom half
    (unit L2 norm; unit L1 norm for L1)."""
    top = s // 2
    bump = torch.zeros(s, s, dtype=like.dtype, device=like.device)
    if top > 0:
        bump[:top] = _pyramid(top, s, like, norm)
    bump[top:] = -_pyramid(s - top, s, like, norm)
    return bump / (bump.abs().sum() if norm == "l1" else bump.norm())
