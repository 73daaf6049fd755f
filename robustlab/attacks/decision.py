"""Decision-based attacks: they see only whether a query succeeds (e.g. the label changed).

HopSkipJump (Chen et al. 2020; L2 and Linf), RayS (Chen & Gu 2020; Linf) and the Boundary attack
(Brendel et al. 2018; L2). All are minimum-norm searches: they start from an adversarial point and
move it towards the clean input along the decision boundary. A sample counts as broken when the
adversarial point found lies within the threat model's eps; ``result.x_adv`` is always inside it
(the clean input where nothing within eps was found). ``starting_points`` supplies adversarial
starts; otherwise uniform noise is searched for one, and samples without a start are reported.

RayS is the chosen Sign-OPT/RayS family member: it needs no step-size or gradient-estimation
hyperparameters, its queries go to a hierarchical search over sign directions (Linf-natural), and it
is the stronger of the two in its paper's Linf comparisons.
"""
from __future__ import annotations

import logging
import math

import torch

from ..errors import InputError
from ..objectives import CrossEntropy, Objective
from ..threat import ThreatModel, _per_sample, lp_norm
from .base import Attack, AttackContext

log = logging.getLogger(__name__)


class DecisionAttack(Attack):
    """Base class: finds adversarial starts, tracks per-sample query budgets, records results."""

    default_objective = CrossEntropy  # only its success flag (the decision) is used
    needs_gradients = False
    oracle_kind = "decision"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, early_stop: bool = True,
                 seed: int = 0):
        super().__init__(threat, objective, early_stop=early_stop, seed=seed)
        if max_queries < 1:
            raise InputError(f"max_queries must be >= 1, got {max_queries}")
        self.max_queries = int(max_queries)
        self.starting_points = starting_points
        self.init_tries = int(init_tries)
        self.unstarted: torch.Tensor | None = None

    def dist(self, ctx: AttackContext, x_adv: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return lp_norm(x_adv - (ctx.x if x is None else x), ctx.threat.norm)

    def _starts(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial starting points for the active samples and a bool 'found' mask."""
        b = ctx.n_active
        all_pos = torch.arange(b, device=ctx.x.device)
        if self.starting_points is not None:
            sp = self.starting_points.to(ctx.x)
            if sp.shape != ctx.x_full.shape:
                raise InputError(f"starting_points must have the inputs' shape {tuple(ctx.x_full.shape)}, got {tuple(sp.shape)}")
            start = sp[ctx.index]
            found = ctx.probe_success(start, all_pos)
            if not found.all():
                log.warning("%d starting points are not adversarial; searching noise for them", int((~found).sum()))
        else:
            start, found = ctx.x.clone(), torch.zeros(b, dtype=torch.bool, device=ctx.x.device)
        lo, hi = ctx.threat.bounds
        for _ in range(self.init_tries):
            todo = (~found).nonzero().flatten()
            if todo.numel() == 0:
                break
            noise = lo + (hi - lo) * ctx.rand_full(ctx.x.shape[1:])[todo]
            ok = ctx.probe_success(noise, todo)
            start[todo[ok]] = noise[ok]
            found[todo[ok]] = True
        if not found.all():
            log.warning(
                "%s: no adversarial starting point for %d samples after %d uniform-noise tries; pass "
                "starting_points=... (e.g. images of another class) to attack them", self.name,
                int((~found).sum()), self.init_tries)
        return start, found

    def _binary_search(self, ctx, x, x_adv, owners, threshold: torch.Tensor, max_steps: int = 60) -> torch.Tensor:
        """Move x_adv (adversarial) towards x along the segment until the gap is below threshold.

        L2: interpolation (1 - a) x + a x_adv, a in [0, 1]. Linf: clipping x_adv to the Linf ball of
        radius a around x. Stops when the bracket on a is narrower than `threshold`.
        """
        lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        hi = self.dist(ctx, x_adv, x) if ctx.threat.norm == "linf" else torch.ones_like(lo)
        for _ in range(max_steps):
            todo = ((hi - lo) > threshold).nonzero().flatten()
            if todo.numel() == 0:
                break
            mid = (lo[todo] + hi[todo]) / 2
            cand = self._between(ctx, x[todo], x_adv[todo], mid)
            ok = ctx.probe_success(cand, owners[todo])
            hi[todo[ok]] = mid[ok]
            lo[todo[~ok]] = mid[~ok]
        return self._between(ctx, x, x_adv, hi)

    def _between(self, ctx, x, x_adv, a):
        if ctx.threat.norm == "linf":
            e = _per_sample(a, x)
            return torch.maximum(torch.minimum(x_adv, x + e), x - e)
        return x + _per_sample(a, x) * (x_adv - x)

    def _finish(self, ctx: AttackContext, x_best: torch.Tensor, have: torch.Tensor) -> None:
        """Record the final points: inside eps -> success; outside -> the clean input (failure)."""
        d = self.dist(ctx, x_best)
        inside = have & (d <= ctx.threat.eps * (1 + 1e-6) + 1e-12)
        loss = torch.where(inside, -d, torch.full_like(d, float("-inf")))
        ctx.record(torch.where(_per_sample(inside, x_best), x_best, ctx.x), loss, inside, ctx.index)

    def _budget_left(self, ctx: AttackContext) -> torch.Tensor:
        return ctx.forward_calls[ctx.index] < self.max_queries


class HopSkipJump(DecisionAttack):
    """HopSkipJump: boundary binary search, Monte-Carlo estimate of the boundary normal from
    min(init_evals * sqrt(t), max_evals) baseline-subtracted +-1 decisions, geometric step search
    from ||x_t - x|| / sqrt(t), binary search back to the boundary. L2 and Linf."""

    name = "hopskipjump"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 iterations: int = 64, init_evals: int = 100, max_evals: int = 10000, gamma: float = 1.0,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, early_stop: bool = True,
                 seed: int = 0):
        super().__init__(threat, objective, max_queries=max_queries, starting_points=starting_points,
                         init_tries=init_tries, early_stop=early_stop, seed=seed)
        if threat.norm not in ("l2", "linf"):
            raise InputError("HopSkipJump supports the l2 and linf norms")
        self.iterations, self.init_evals, self.max_evals, self.gamma = int(iterations), int(init_evals), int(max_evals), float(gamma)

    needs_positive_eps = True

    def run(self, ctx: AttackContext) -> None:
        x = ctx.x
        b = x.shape[0]
        d = x[0].numel()
        theta = self.gamma / (d * math.sqrt(d)) if ctx.threat.norm == "l2" else self.gamma / (d * d)
        pos = torch.arange(b, device=x.device)
        start, have = self._starts(ctx)
        thr = torch.full((b,), theta, dtype=x.dtype, device=x.device)
        x_b = start.clone()
        if have.any():
            hp = have.nonzero().flatten()
            x_b[hp] = self._binary_search(ctx, x[hp], start[hp], pos[hp], self._bs_threshold(ctx, thr[hp], x[hp], start[hp]))
        dist = self.dist(ctx, x_b)
        active = have & self._budget_left(ctx)
        for t in range(1, self.iterations + 1):
            if self.early_stop:
                active &= dist > ctx.threat.eps
            active &= self._budget_left(ctx)
            ids = active.nonzero().flatten()
            if ids.numel() == 0:
                break
            delta = (math.sqrt(d) if ctx.threat.norm == "l2" else d) * theta * dist[ids]
            n_evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            grad = self._estimate_normal(ctx, x_b[ids], ids, delta, n_evals)
            v = grad / _per_sample(lp_norm(grad, "l2").clamp_min(1e-12), grad) if ctx.threat.norm == "l2" else grad.sign()
            eps_step = dist[ids] / math.sqrt(t)
            cand = (x_b[ids] + _per_sample(eps_step, v) * v).clamp(*ctx.threat.bounds)
            ok = ctx.probe_success(cand, ids)
            for _ in range(30):
                bad = (~ok).nonzero().flatten()
                if bad.numel() == 0:
                    break
                eps_step[bad] = eps_step[bad] / 2
                cand[bad] = (x_b[ids[bad]] + _per_sample(eps_step[bad], v[bad]) * v[bad]).clamp(*ctx.threat.bounds)
                ok[bad] = ctx.probe_success(cand[bad], ids[bad])
            good = ids[ok]
            if good.numel():
                x_new = self._binary_search(ctx, x[good], cand[ok], good,
                                            self._bs_threshold(ctx, thr[good], x[good], cand[ok]))
                d_new = self.dist(ctx, x_new, x[good])
                improve = d_new < dist[good]
                x_b[good[improve]] = x_new[improve]
                dist[good[improve]] = d_new[improve]
        self._finish(ctx, x_b, have)

    def _bs_threshold(self, ctx, theta, x, x_adv):
        """theta for L2 (relative position on the segment); min(theta * dist, theta) for Linf radii."""
        if ctx.threat.norm == "linf":
            return torch.minimum(theta * self.dist(ctx, x_adv, x), theta)
        return theta

    def _estimate_normal(self, ctx, x_b, ids, delta, n_evals):
        """Monte-Carlo estimate of the boundary normal at x_b (baseline-subtracted decisions)."""
        b = x_b.shape[0]
        chunk = max(1, 20000 // n_evals)
        grads = []
        for s in range(0, b, chunk):
            xb, idb, de = x_b[s:s + chunk], ids[s:s + chunk], delta[s:s + chunk]
            m = xb.shape[0]
            if ctx.threat.norm == "l2":
                u = torch.randn((m, n_evals, *xb.shape[1:]), generator=ctx.generator, dtype=xb.dtype, device=xb.device)
            else:
                u = 2 * torch.rand((m, n_evals, *xb.shape[1:]), generator=ctx.generator, dtype=xb.dtype, device=xb.device) - 1
            u = u / lp_norm(u.flatten(0, 1), "l2").reshape(m, n_evals, *([1] * (xb.dim() - 1))).clamp_min(1e-12)
            probes = (xb[:, None] + de.reshape(m, 1, *([1] * (xb.dim() - 1))) * u).clamp(*ctx.threat.bounds)
            u = (probes - xb[:, None]) / de.reshape(m, 1, *([1] * (xb.dim() - 1))).clamp_min(1e-12)
            phi = ctx.probe_success(probes.flatten(0, 1), idb.repeat_interleave(n_evals)).reshape(m, n_evals)
            phi = phi.to(xb.dtype) * 2 - 1
            mean_phi = phi.mean(1, keepdim=True)
            all_same = (mean_phi.abs() == 1).squeeze(1)
            w = torch.where(all_same[:, None], phi, phi - mean_phi)
            grads.append((w.reshape(m, n_evals, *([1] * (xb.dim() - 1))) * u).mean(1))
        return torch.cat(grads)


class RayS(DecisionAttack):
    """RayS (Chen & Gu 2020), Linf: search over sign directions d in {-1, 1}^D with hierarchical block
    flips; for each candidate direction, the distance to the boundary along d is found by one check
    against the best distance so far plus a binary search. The Linf distance is the radius r."""

    name = "rays"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 early_stop: bool = True, seed: int = 0, tol: float = 1e-3):
        super().__init__(threat, objective, max_queries=max_queries, early_stop=early_stop, seed=seed)
        if threat.norm != "linf":
            raise InputError("RayS is an Linf attack: use ThreatModel('linf', eps)")
        self.tol = float(tol)

    def _at(self, ctx, x, d, r):
        return (x + _per_sample(r, d) * d).clamp(*ctx.threat.bounds)

    def _radius(self, ctx, x, d, ids, r_best):
        """Boundary radius along d for samples ids, or r_best where d is no better. Returns (r, better)."""
        r_best = r_best.clone()
        better = ctx.probe_success(self._at(ctx, x, d, r_best), ids)
        lo = torch.zeros_like(r_best)
        hi = r_best.clone()
        todo = better.nonzero().flatten()
        while todo.numel():
            mid = (lo[todo] + hi[todo]) / 2
            ok = ctx.probe_success(self._at(ctx, x[todo], d[todo], mid), ids[todo])
            hi[todo[ok]] = mid[ok]
            lo[todo[~ok]] = mid[~ok]
            todo = todo[(hi[todo] - lo[todo]) > self.tol]
        return torch.where(better, hi, r_best), better

    def run(self, ctx: AttackContext) -> None:
        x = ctx.x
        b = x.shape[0]
        pos = torch.arange(b, device=x.device)
        lo_b, hi_b = ctx.threat.bounds
        dims = x[0].numel()
        d_best = torch.where(ctx.rand_full(x.shape[1:]) < 0.5, -1.0, 1.0).to(x.dtype)
        r_max = torch.full((b,), float(hi_b - lo_b), dtype=x.dtype, device=x.device)
        have = ctx.probe_success(self._at(ctx, x, d_best, r_max), pos)
        r_best = torch.where(have, r_max, torch.full_like(r_max, float("inf")))
        if have.any():
            h = have.nonzero().flatten()
            r_best[h], _ = self._radius(ctx, x[h], d_best[h], h, r_max[h] + self.tol)
        level, block = 0, 0
        while True:
            active = have & self._budget_left(ctx)
            if self.early_stop:
                active &= r_best > ctx.threat.eps
            ids = active.nonzero().flatten()
            if ids.numel() == 0:
                break
            n_blocks = 2 ** level
            size = math.ceil(dims / n_blocks)
            d = d_best[ids].flatten(1).clone()
            d[:, block * size:(block + 1) * size] *= -1
            d = d.reshape(d_best[ids].shape)
            r_new, better = self._radius(ctx, x[ids], d, ids, r_best[ids])
            upd = ids[better]
            d_best[upd] = d[better]
            r_best[upd] = r_new[better]
            block += 1
            if block >= n_blocks or block * size >= dims:
                block, level = 0, level + 1 if size > 1 else level
        x_b = torch.where(_per_sample(have, x), self._at(ctx, x, d_best, torch.where(have, r_best, torch.zeros_like(r_best))), x)
        self._finish(ctx, x_b, have)


class BoundaryAttack(DecisionAttack):
    """Boundary attack (Brendel et al. 2018), L2: from an adversarial start, alternate an orthogonal
    (spherical) random step of relative size delta and a step of relative size epsilon towards the
    clean input; keep candidates that stay adversarial. delta and epsilon adapt every 10 steps so that
    about half of the spherical candidates and a quarter of the combined ones succeed."""

    name = "boundary"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 spherical_step: float = 0.01, source_step: float = 0.01, step_adaptation: float = 1.5,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, early_stop: bool = True,
                 seed: int = 0):
        super().__init__(threat, objective, max_queries=max_queries, starting_points=starting_points,
                         init_tries=init_tries, early_stop=early_stop, seed=seed)
        if threat.norm != "l2":
            raise InputError("the Boundary attack is an L2 attack: use ThreatModel('l2', eps)")
        self.spherical_step, self.source_step, self.adapt = float(spherical_step), float(source_step), float(step_adaptation)

    def run(self, ctx: AttackContext) -> None:
        x = ctx.x
        b = x.shape[0]
        pos = torch.arange(b, device=x.device)
        start, have = self._starts(ctx)
        x_b = start.clone()
        if have.any():
            hp = have.nonzero().flatten()
            x_b[hp] = self._binary_search(ctx, x[hp], start[hp], pos[hp], torch.full((hp.numel(),), 1e-3, dtype=x.dtype))
        sph = torch.full((b,), self.spherical_step, dtype=x.dtype, device=x.device)
        src = torch.full((b,), self.source_step, dtype=x.dtype, device=x.device)
        sph_hits = torch.zeros(b, dtype=x.dtype, device=x.device)
        src_hits = torch.zeros(b, dtype=x.dtype, device=x.device)
        step = 0
        while True:
            active = have & self._budget_left(ctx)
            if self.early_stop:
                active &= self.dist(ctx, x_b) > ctx.threat.eps
            ids = active.nonzero().flatten()
            if ids.numel() == 0:
                break
            xi, xb = x[ids], x_b[ids]
            diff = xb - xi
            dist = lp_norm(diff, "l2").clamp_min(1e-12)
            eta = ctx.rand_full(x.shape[1:], kind="randn")[ids]
            unit = diff / _per_sample(dist, diff)
            eta = eta - _per_sample((eta * unit).flatten(1).sum(1), eta) * unit          # orthogonal to x_b - x
            eta = eta / _per_sample(lp_norm(eta, "l2").clamp_min(1e-12), eta) * _per_sample(sph[ids] * dist, eta)
            on_sphere = xi + (diff + eta) * _per_sample(dist / lp_norm(diff + eta, "l2").clamp_min(1e-12), eta)
            on_sphere = on_sphere.clamp(*ctx.threat.bounds)
            ok_sph = ctx.probe_success(on_sphere, ids)
            cand = (xi + (on_sphere - xi) * _per_sample(1 - src[ids], xi)).clamp(*ctx.threat.bounds)
            ok = torch.zeros_like(ok_sph)
            if ok_sph.any():
                ok[ok_sph] = ctx.probe_success(cand[ok_sph], ids[ok_sph])
            sph_hits[ids] += ok_sph.to(x.dtype)
            src_hits[ids] += ok.to(x.dtype)
            x_b[ids[ok]] = cand[ok]
            step += 1
            if step % 10 == 0:  # adapt step sizes to the recent acceptance rates
                rate_sph, rate_src = sph_hits / 10, src_hits / 10
                sph = torch.where(rate_sph > 0.5, sph * self.adapt, torch.where(rate_sph < 0.2, sph / self.adapt, sph))
                src = torch.where(rate_src > 0.25, src * self.adapt, torch.where(rate_src < 0.1, src / self.adapt, src))
                src = src.clamp(max=0.5)
                sph_hits.zero_()
                src_hits.zero_()
        self._finish(ctx, x_b, have)
