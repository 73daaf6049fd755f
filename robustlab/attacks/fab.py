"""FAB-T: targeted fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), the minimum-norm member of the standard suite."""
from __future__ import annotations

import torch

from ..errors import InputError
from ..objectives import CrossEntropy, labels_of
from ..progress import attack_steps
from ..threat import ThreatModel, per_sample, lp_norm
from .base import Attack, AttackContext, target_groups


#: L1 projection: coordinates whose weight |w_i| is at most this do not move (the reference's threshold)
L1_MIN_WEIGHT = 1e-8


def project_hyperplane_box(t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str,
                           bounds: tuple[float, float] = (0.0, 1.0), movable: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Minimal-norm step d with <w, d> = c and lo <= t + d <= hi, exactly (per sample, flattened rows).

    FAB's projection onto the linearised boundary intersected with the box (Croce & Hein 2020). With
    s = sign(c), each coordinate moves by m_i in [0, cap_i] along s * sign(w_i), where cap_i is the
    room the box leaves in that direction, and sum_i |w_i| m_i = |c|:
      L2:   m_i = min(lambda |w_i|, cap_i);   Linf: m_i = min(lambda, cap_i);
      L1:   fill the coordinates in order of decreasing |w_i| up to their caps (a linear programme),
    with lambda >= 0 the root of phi(lambda) = sum_i |w_i| m_i(lambda), concave, nondecreasing and
    piecewise linear with breakpoints key_i (cap_i for Linf, cap_i / |w_i| for L2). Newton's method
    from lambda = 0 finds it exactly without sorting: the line through the current segment lies above
    phi, so each step lands at or below the root, and either on it or past at least one more
    breakpoint; it stops when the set of saturated coordinates stops growing (at most D steps; 2 to 15,
    mostly 3 to 5, in the FAB runs measured). L1 sorts |w| and, as the reference code does
    (auto-attack's ``projection_l1``), leaves coordinates with |w_i| <= ``L1_MIN_WEIGHT`` (1e-8) where they
    are: filling them would move a coordinate by about (remaining |c|) / |w_i|, far for a nearly flat
    direction. When the hyperplane is out of reach inside the box,
    every coordinate moves to its cap (the box corner closest to the hyperplane).
    ``movable``: bool or 0/1 rows, False where a coordinate may not change (a threat mask).
    """
    lo, hi = bounds
    sgn = torch.where(c >= 0, 1.0, -1.0).to(w.dtype)
    wp = w * sgn[:, None]                                   # now <wp, d> = |c| >= 0 is wanted
    target = c.abs()
    aw = wp.abs()
    cap = torch.where(wp > 0, hi - t, t - lo).clamp_min(0) * (wp != 0)
    if movable is not None:
        cap = cap * (movable != 0)
    if norm == "l1":  # as the reference's projection_l1: a coordinate with |w| <= 1e-8 never moves
        cap = cap * (aw > L1_MIN_WEIGHT)
    gain = aw * cap                                         # progress of a saturated coordinate
    if norm == "l1":
        _, order = (-aw).sort(1)                            # decreasing |w_i|
        gain_s = gain.gather(1, order)
        cum_gain = gain_s.cumsum(1)
        feasible = cum_gain[:, -1] >= target
        # first k with cumulative gain >= target: coordinates before it saturate, k moves partially
        k = (cum_gain < target[:, None]).sum(1).clamp(max=w.shape[1] - 1)
        before = torch.cat([torch.zeros_like(cum_gain[:, :1]), cum_gain[:, :-1]], 1).gather(1, k[:, None]).squeeze(1)
        idx = order.gather(1, k[:, None]).squeeze(1)
        a_k = aw.gather(1, idx[:, None]).squeeze(1).clamp_min(1e-30)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(w.shape[1], device=w.device).expand_as(order))
        m = torch.where(rank < k[:, None], cap, torch.zeros_like(cap))
        m.scatter_(1, idx[:, None], ((target - before) / a_k).clamp_min(0)[:, None])
        m = torch.minimum(m, cap)
    elif norm in ("l2", "linf"):
        if norm == "l2":
            key, slope = torch.where(aw > 0, cap / aw.clamp_min(1e-30), torch.zeros_like(aw)), aw * aw
        else:
            key, slope = cap, aw
        feasible = gain.sum(1) >= target
        lam = _newton_root(key, slope, gain, target)[:, None]
        m = torch.minimum(lam * (aw if norm == "l2" else (aw > 0).to(aw.dtype)), cap)
    else:
        raise InputError(f"unknown norm {norm!r}")
    m = torch.where(feasible[:, None], m, cap)
    return m * torch.sign(wp)


#: Newton iterations of :func:`_newton_root` run on every row before the first convergence check (one host
#: read each): 3 to 4 suffice for almost every FAB projection measured (MNIST CNN, Linf and L2; at most 9)
NEWTON_FIRST_CHECK = 4


def _newton_root(key: torch.Tensor, slope: torch.Tensor, gain: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the lambda >= 0 with phi(lambda) = target, where phi(lambda) = sum over key_i <= lambda of
    gain_i (= slope_i key_i) plus lambda * sum over key_i > lambda of slope_i; rows where phi never
    reaches target get a lambda at which every coordinate saturates. Newton steps: lambda never decreases,
    so the saturated set only grows and the loop ends; a row whose step no longer moves lambda is done,
    and further steps leave it as it is. So the first ``NEWTON_FIRST_CHECK`` steps run on every row
    without looking, then each step checks (one host read) and keeps only the rows still moving."""
    lam = target / torch.linalg.vecdot(slope, (key > 0).to(slope.dtype)).clamp_min(1e-30)
    rows = torch.arange(len(lam), device=lam.device)
    k_, g_, s_, t_, l_ = key, gain, slope, target, lam
    for it in range(key.shape[1] + 1):
        sat = (k_ <= l_[:, None]).to(s_.dtype)  # masked sums as dot products: several times faster than where
        new = torch.maximum((t_ - torch.linalg.vecdot(g_, sat)) / torch.linalg.vecdot(s_, 1 - sat).clamp_min(1e-30), l_)
        moved = new != l_
        l_ = new
        if it + 1 < NEWTON_FIRST_CHECK and it < key.shape[1]:
            continue
        lam[rows] = l_
        moving = moved.nonzero().flatten()  # the check: the one host read
        if not moving.numel():
            break
        rows, k_, g_, s_, t_, l_ = rows[moving], k_[moving], g_[moving], s_[moving], t_[moving], l_[moving]
    # past the largest breakpoint every coordinate is saturated: a larger lambda changes nothing (and a
    # row that is feasible only up to rounding would otherwise get lambda ~ 1e30 and inf * 0 = NaN steps)
    return torch.minimum(lam, key.amax(1))


class FABT(Attack):
    """FAB-T: for each of the top-k target classes t, iterate

        delta_k = minimal step onto the linearised boundary {f_t = f_y} at x_k, inside the box,
        delta_0 = minimal step from the clean x onto the same hyperplane, inside the box,
        alpha = min(||delta_k|| / (||delta_k|| + ||delta_0||), alpha_max),
        x_{k+1} = clip((1 - alpha)(x_k + eta delta_k) + alpha (x + eta delta_0)),

    and on reaching the target side step back towards x: x_{k+1} <- (1 - beta) x + beta x_{k+1}.
    The smallest successful perturbation is kept; a point is broken when it lies within eps.
    FAB is a minimal-norm attack: the point it reports (``perturbation_norms``) is the smallest
    misclassified iterate within eps. With ``early_stop`` (as the reference's ``perturb``) a broken point
    still runs to the end of the target that broke it, shrinking its norm, and the later targets run only
    on the points still unbroken; the success flags are those of the run without early stop.
    delta_k and delta_0 are the exact projections onto the hyperplane intersected with the box
    (:func:`project_hyperplane_box`), and alpha is computed from their norms, as in the paper's code.
    ``targets_at_once`` targets are attacked in one batch of (point, target) rows (default: one at a
    time on a CPU, where that is fastest; on an accelerator as many as ``base.ROWS_BUDGET`` allows); the
    iterations are deterministic, so every point's success equals the one-target-at-a-time run's (with
    ``early_stop`` its norm can be smaller: the targets of one batch all run to the end).
    """

    name = "fab-t"

    def __init__(self, threat: ThreatModel, *, n_targets: int = 9, steps: int = 100, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, targets_at_once: int | None = None, **options):
        super().__init__(threat, CrossEntropy(), **options)
        self.n_targets, self.steps, self.targets_at_once = int(n_targets), int(steps), targets_at_once
        if targets_at_once is not None and int(targets_at_once) < 1:
            raise InputError(f"targets_at_once must be >= 1 (or None: the device's default), got {targets_at_once}")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def run(self, ctx: AttackContext) -> None:
        clean = ctx.output(ctx.x)
        ctx.judge(ctx.x, clean)
        labels = torch.zeros(ctx.x_full.shape[0], dtype=torch.long, device=ctx.index.device)
        labels[ctx.index] = labels_of(clean, ctx.target).to(labels.device)
        groups = target_groups(ctx, clean, self.n_targets, self.targets_at_once, self.early_stop,
                               lambda t, k: labels.repeat(k))
        for rows, classes in groups:
            self._descend(rows, labels.repeat(rows.n_targets), classes)

    def _descend(self, ctx: AttackContext, labels_full: torch.Tensor, targets_full: torch.Tensor) -> None:
        """``steps`` FAB iterations on the active rows, towards each row's target class (all of them, broken
        or not: later iterates can be closer to x)."""
        lo, hi = ctx.threat.bounds
        movable = None
        if ctx.threat.mask is not None:
            movable = ctx.threat.masked(torch.ones_like(ctx.x[:1])).flatten(1)
        x0 = ctx.x
        y, t = labels_full[ctx.index], targets_full[ctx.index]
        x_k = x0.clone()
        attack_steps.plan(self.steps)
        for _ in range(self.steps):
            attack_steps.step()
            x_req = x_k.detach().requires_grad_(True)
            with torch.enable_grad():
                out = ctx.forward(x_req)
                g = out.gather(1, y[:, None]).squeeze(1) - out.gather(1, t[:, None]).squeeze(1)
                w, = torch.autograd.grad(g.sum(), x_req)
            ctx.grad_calls[ctx.index] += 1
            out, g = out.detach(), g.detach()
            self._record(ctx, x_k, out)
            # both projections at once: rows [x_k; x0] onto {z : g + <w, z - x_k> = 0} and the box
            wf = w.flatten(1)
            g0 = g + (wf * (x0 - x_k).flatten(1)).sum(1)
            both = project_hyperplane_box(torch.cat([x_k.flatten(1), x0.flatten(1)]), torch.cat([wf, wf]),
                                          -torch.cat([g, g0]), ctx.threat.norm, (lo, hi),
                                          None if movable is None else movable.expand(2 * len(g), -1))
            d_k, d_0 = both[:len(g)].reshape(x_k.shape), both[len(g):].reshape(x_k.shape)
            n_k = lp_norm(d_k, ctx.threat.norm).clamp_min(1e-8)
            n_0 = lp_norm(d_0, ctx.threat.norm).clamp_min(1e-8)
            alpha = (n_k / (n_k + n_0)).clamp(0, self.alpha_max)
            a = per_sample(alpha, x_k)
            x_next = ((1 - a) * (x_k + self.eta * d_k) + a * (x0 + self.eta * d_0)).clamp(lo, hi)
            out_next = ctx.output(x_next)
            adv = self._record(ctx, x_next, out_next)
            x_k = torch.where(per_sample(adv, x_next), (1 - self.beta) * x0 + self.beta * x_next, x_next).detach()

    def _record(self, ctx: AttackContext, x_adv, out) -> torch.Tensor:
        """Offer misclassified points inside eps with loss -norm (the engine keeps the smallest; every other
        row is offered as unsuccessful with loss -inf, which never wins: no host read); return misclassification."""
        mis = ctx.objective.success(out, ctx.target)
        norms = lp_norm(x_adv - ctx.x, ctx.threat.norm)
        good = mis & (norms <= ctx.threat.eps * (1 + 1e-6))
        ctx.record(x_adv, torch.where(good, -norms, float("-inf")), good, ctx.index)
        return mis
