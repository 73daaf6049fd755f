"""Decision-based attacks: they see only whether a query succeeds (e.g. the label changed).

HopSkipJump (Chen et al. 2020; L2 and Linf), RayS (Chen & Gu 2020; Linf) and the Boundary attack
(Brendel et al. 2018; L2). All are minimum-norm searches: they start from an adversarial point and
move it towards the clean input along the decision boundary. A sample counts as broken when the
adversarial point found lies within the threat model's eps; ``result.x_adv`` is always inside it
(the clean input where nothing within eps was found). ``starting_points`` supplies adversarial
starts; otherwise uniform noise is searched for one, and samples without a start are reported.

Budgets are per sample and exact: before every batch of probes each sample's remaining budget
(``max_queries``, and the oracle's own budget if it has one) is checked and only the probes that fit
are sent, so no sample ever exceeds ``max_queries``. An exhausted oracle or a black box that raises
(after the oracle's retries) stops the samples concerned, never the whole attack, and every sample
keeps its best point; ``AttackResult.status`` says per sample why it stopped ("success",
"max_queries", "oracle_budget", "oracle_error", "no_start" or "done").

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
from ..oracles import OracleError, QueryBudgetExceeded
from ..threat import ThreatModel, lp_norm, per_sample
from .base import Attack, AttackContext, check_query_budget

log = logging.getLogger(__name__)


class DecisionAttack(Attack):
    """Base class: finds adversarial starts, enforces per-sample query budgets, records results.

    Every probe goes through ``_probe``, which checks each sample's remaining budget first (the
    attack's ``max_queries`` and, for an oracle with a budget, the oracle's) and sends only the rows
    that fit: a sample never exceeds ``max_queries``. A probe the black box fails on (``OracleError``
    after the oracle's retries, or ``QueryBudgetExceeded`` from an oracle shared with other attacks)
    stops the samples of that batch, not the attack: the others go on, and every sample returns the
    best point found so far. ``ctx.status`` (-> ``AttackResult.status``) says why each sample stopped.
    """

    default_objective = CrossEntropy  # only its success flag (the decision) is used
    needs_gradients = False
    oracle_kind = "decision"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, **options):
        super().__init__(threat, objective, **options)
        self.max_queries = check_query_budget(max_queries, type(self).__name__)
        self.starting_points = starting_points
        self.init_tries = int(init_tries)
        self.unstarted: torch.Tensor | None = None

    def dist(self, ctx: AttackContext, x_adv: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return lp_norm(x_adv - (ctx.x if x is None else x), ctx.threat.norm)

    # ----- budgets and failures -------------------------------------------------------------
    def _remaining(self, ctx: AttackContext, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Queries each active sample (or positions `pos`) may still spend; 0 once it was stopped."""
        if ctx.status is None:
            self._init_status(ctx)
        idx = ctx.index if pos is None else ctx.index[pos]
        left = self.max_queries - ctx.forward_calls[idx]
        if ctx.is_oracle and getattr(ctx.model, "budget", None) is not None:
            left = torch.minimum(left, ctx.model.remaining(idx).to(left.device))
        stopped = torch.tensor([ctx.status[i] in _STOPPED for i in idx.tolist()], dtype=torch.bool,
                               device=left.device)
        return torch.where(stopped, torch.zeros_like(left), left).clamp_min(0)

    def _budget_left(self, ctx: AttackContext) -> torch.Tensor:
        return self._remaining(ctx) > 0

    def _stop(self, ctx: AttackContext, pos: torch.Tensor, why: str) -> None:
        if ctx.status is None:
            self._init_status(ctx)
        for i in ctx.index[pos].unique().tolist():
            if ctx.status[i] not in _STOPPED:
                ctx.status[i] = why

    def _probe(self, ctx: AttackContext, x_many: torch.Tensor, owners: torch.Tensor, with_valid: bool = False):
        """Success at probe rows (row i belongs to active sample owners[i]) for the rows within their
        samples' budgets; rows over budget (or lost to a failing black box) read as not adversarial."""
        n = owners.numel()
        ok = torch.zeros(n, dtype=torch.bool, device=x_many.device)
        valid = torch.zeros(n, dtype=torch.bool, device=x_many.device)
        if n:
            order = torch.argsort(owners, stable=True)
            sorted_owners = owners[order]
            first = torch.searchsorted(sorted_owners, sorted_owners)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(n, device=owners.device) - first
            allowed = rank < self._remaining(ctx, owners).to(rank.device)
            rows = allowed.nonzero().flatten()
            if rows.numel():
                try:
                    ok[rows] = ctx.probe_success(x_many[rows], owners[rows]).to(ok.device)
                    valid[rows] = True
                except QueryBudgetExceeded as e:
                    log.warning("%s: %s; those samples keep their best point so far", self.name, e)
                    self._stop(ctx, owners[rows], "oracle_budget")
                except OracleError as e:
                    log.warning("%s: %s; the %d samples of that batch keep their best point so far", self.name, e,
                                int(owners[rows].unique().numel()))
                    self._stop(ctx, owners[rows], "oracle_error")
        return (ok, valid) if with_valid else ok

    # ----- shared steps -----------------------------------------------------------------------
    def _starts(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial starting points for the active samples and a bool 'found' mask."""
        b = ctx.n_active
        all_pos = torch.arange(b, device=ctx.x.device)
        if self.starting_points is not None:
            sp = self.starting_points.to(ctx.x)
            if sp.shape != ctx.x_full.shape:
                raise InputError(f"starting_points must have the inputs' shape {tuple(ctx.x_full.shape)}, got {tuple(sp.shape)}")
            start = sp[ctx.index]
            if ctx.threat.mask is not None:
                start = ctx.x + ctx.threat.masked(start - ctx.x)
            found = self._probe(ctx, start, all_pos)
            if not found.all():
                log.warning("%d starting points are not adversarial; searching noise for them", int((~found).sum()))
        else:
            start, found = ctx.x.clone(), torch.zeros(b, dtype=torch.bool, device=ctx.x.device)
        lo, hi = ctx.threat.bounds
        for _ in range(self.init_tries):
            todo = ((~found) & self._budget_left(ctx)).nonzero().flatten()
            if todo.numel() == 0:
                break
            noise = lo + (hi - lo) * ctx.rand_full(ctx.x.shape[1:])[todo]
            if ctx.threat.mask is not None:   # noise only where the threat lets the input change
                noise = ctx.x[todo] + ctx.threat.subset(todo).masked(noise - ctx.x[todo])
            ok = self._probe(ctx, noise, todo)
            start[todo[ok]] = noise[ok]
            found[todo[ok]] = True
        if not found.all():
            log.warning(
                "%s: no adversarial starting point for %d samples after %d uniform-noise tries; pass "
                "starting_points=... (e.g. images of another class) to attack them", self.name,
                int((~found).sum()), self.init_tries)
            for i in ctx.index[~found].tolist():
                if ctx.status[i] not in _STOPPED:
                    ctx.status[i] = "no_start"
        return start, found

    def _binary_search(self, ctx, x, x_adv, owners, threshold: torch.Tensor, max_steps: int = 60) -> torch.Tensor:
        """Move x_adv (adversarial) towards x along the segment until the gap is below threshold.

        L2: interpolation (1 - a) x + a x_adv, a in [0, 1]. Linf: clipping x_adv to the Linf ball of
        radius a around x. Stops when the bracket on a is narrower than `threshold` (or the budget is
        spent: the upper end is always a point that was seen to be adversarial).
        """
        lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        hi = self.dist(ctx, x_adv, x) if ctx.threat.norm == "linf" else torch.ones_like(lo)
        for _ in range(max_steps):
            todo = ((hi - lo) > threshold).nonzero().flatten()
            todo = todo[self._remaining(ctx, owners[todo]) > 0] if todo.numel() else todo
            if todo.numel() == 0:
                break
            mid = (lo[todo] + hi[todo]) / 2
            cand = self._between(ctx, x[todo], x_adv[todo], mid)
            ok, valid = self._probe(ctx, cand, owners[todo], with_valid=True)
            hi[todo[ok]] = mid[ok]
            lo[todo[valid & ~ok]] = mid[valid & ~ok]
        return self._between(ctx, x, x_adv, hi)

    def _between(self, ctx, x, x_adv, a):
        if ctx.threat.norm == "linf":
            e = per_sample(a, x)
            return torch.maximum(torch.minimum(x_adv, x + e), x - e)
        return x + per_sample(a, x) * (x_adv - x)

    def _finish(self, ctx: AttackContext, x_best: torch.Tensor, have: torch.Tensor) -> None:
        """Record the final points: inside eps -> success; outside -> the clean input (failure)."""
        if ctx.status is None:
            self._init_status(ctx)
        d = self.dist(ctx, x_best)
        inside = have & (d <= ctx.threat.eps * (1 + 1e-6) + 1e-12)
        loss = torch.where(inside, -d, torch.full_like(d, float("-inf")))
        ctx.record(torch.where(per_sample(inside, x_best), x_best, ctx.x), loss, inside, ctx.index)
        spent = ctx.forward_calls[ctx.index] >= self.max_queries
        oracle_out = torch.zeros_like(spent)
        if ctx.is_oracle and getattr(ctx.model, "budget", None) is not None:
            oracle_out = (ctx.model.remaining(ctx.index) <= 0).to(spent.device)
        for j, i in enumerate(ctx.index.tolist()):
            if bool(inside[j]):
                ctx.status[i] = "success"
            elif ctx.status[i] == "running":
                ctx.status[i] = "max_queries" if bool(spent[j]) else "oracle_budget" if bool(oracle_out[j]) else "done"

    def _init_status(self, ctx: AttackContext) -> None:
        ctx.status = ["running"] * ctx.x_full.shape[0]


_STOPPED = ("oracle_budget", "oracle_error")


class HopSkipJump(DecisionAttack):
    """HopSkipJump: boundary binary search, Monte-Carlo estimate of the boundary normal from
    min(init_evals * sqrt(t), max_evals) baseline-subtracted +-1 decisions, geometric step search
    from ||x_t - x|| / sqrt(t), binary search back to the boundary. L2 and Linf. A threat mask is
    honoured: starts and random probe directions are masked, so every step and every point of the
    binary search (between masked points) stays inside the mask."""

    name = "hopskipjump"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 iterations: int = 64, init_evals: int = 100, max_evals: int = 10000, gamma: float = 1.0,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, **options):
        super().__init__(threat, objective, max_queries=max_queries, starting_points=starting_points,
                         init_tries=init_tries, **options)
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
        self._init_status(ctx)
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
            v = grad / per_sample(lp_norm(grad, "l2").clamp_min(1e-12), grad) if ctx.threat.norm == "l2" else grad.sign()
            eps_step = dist[ids] / math.sqrt(t)
            cand = (x_b[ids] + per_sample(eps_step, v) * v).clamp(*ctx.threat.bounds)
            ok = self._probe(ctx, cand, ids)
            for _ in range(30):
                bad = (~ok).nonzero().flatten()
                bad = bad[self._remaining(ctx, ids[bad]) > 0] if bad.numel() else bad
                if bad.numel() == 0:
                    break
                eps_step[bad] = eps_step[bad] / 2
                cand[bad] = (x_b[ids[bad]] + per_sample(eps_step[bad], v[bad]) * v[bad]).clamp(*ctx.threat.bounds)
                ok[bad] = self._probe(ctx, cand[bad], ids[bad])
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
        """Monte-Carlo estimate of the boundary normal at x_b (baseline-subtracted decisions); a sample
        with fewer queries left than n_evals uses the probes its budget allows."""
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
            if ctx.threat.mask is not None:
                u = u * ctx.threat.subset(idb).masked(torch.ones_like(xb))[:, None]
            u = u / lp_norm(u.flatten(0, 1), "l2").reshape(m, n_evals, *([1] * (xb.dim() - 1))).clamp_min(1e-12)
            probes = (xb[:, None] + de.reshape(m, 1, *([1] * (xb.dim() - 1))) * u).clamp(*ctx.threat.bounds)
            u = (probes - xb[:, None]) / de.reshape(m, 1, *([1] * (xb.dim() - 1))).clamp_min(1e-12)
            phi, valid = self._probe(ctx, probes.flatten(0, 1), idb.repeat_interleave(n_evals), with_valid=True)
            phi, valid = phi.reshape(m, n_evals), valid.reshape(m, n_evals).to(xb.dtype)
            phi = (phi.to(xb.dtype) * 2 - 1) * valid
            count = valid.sum(1, keepdim=True).clamp_min(1)
            mean_phi = phi.sum(1, keepdim=True) / count
            all_same = (mean_phi.abs() == 1).squeeze(1)
            w = torch.where(all_same[:, None], phi, (phi - mean_phi) * valid)
            grads.append((w.reshape(m, n_evals, *([1] * (xb.dim() - 1))) * u).sum(1)
                         / count.reshape(m, *([1] * (xb.dim() - 1))))
        return torch.cat(grads)


class RayS(DecisionAttack):
    """RayS (Chen & Gu 2020, "RayS: A Ray Searching Method for Hard-label Adversarial Attack"), Linf.

    Searches over rays x + d * s / ||s||_2 with sign directions s in {-1, 1}^D; the radius d along the
    normalised direction relates to the Linf distance by d / sqrt(D). Hierarchical search: at level k
    the flattened input is cut into 2^k blocks, and each block of the best direction s* is flipped in
    turn. A flipped direction is checked once at the best radius so far d* (one query: it is better
    only if adversarial there) and, if so, its boundary radius is found by binary search on [0, d*]
    to a tolerance ``tol`` along the normalised direction (the paper's 1e-3). Before any adversarial
    direction is known d* = inf, i.e. the check is at the box corner the direction points to, and the
    search keeps flipping blocks until some corner is adversarial (it never gives up on a sample while
    it has queries). Starts from s = (1, ..., 1), as the paper's code does.
    """

    name = "rays"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 tol: float = 1e-3, **options):
        super().__init__(threat, objective, max_queries=max_queries, **options)
        if threat.norm != "linf":
            raise InputError("RayS is an Linf attack: use ThreatModel('linf', eps)")
        if not tol > 0:
            raise InputError(f"tol must be > 0, got {tol}")
        self.tol = float(tol)

    def _at(self, ctx, x, unit, d):
        """x + d * unit, clipped to the box (d = inf: the corner the direction points to)."""
        lo, hi = ctx.threat.bounds
        far = (hi - lo) * math.sqrt(unit[0].numel()) * 2  # beyond this every coordinate is clipped
        d = torch.nan_to_num(d, posinf=far).clamp(max=far)
        return (x + per_sample(d, unit) * unit).clamp(lo, hi)

    def _search(self, ctx, x, sgn, ids, d_best, x_best, s_best):
        """Try direction sgn for samples ids: one check at d_best, then binary search if better."""
        root_d = math.sqrt(sgn[0].numel())
        unit = sgn / root_d
        d_old = d_best[ids]
        better = self._probe(ctx, self._at(ctx, x, unit, d_old), ids)
        lo = torch.zeros_like(d_old)
        hi = torch.minimum(d_old, torch.full_like(d_old, root_d * (ctx.threat.bounds[1] - ctx.threat.bounds[0])))
        todo = better.nonzero().flatten()
        while todo.numel():
            mid = (lo[todo] + hi[todo]) / 2
            ok, valid = self._probe(ctx, self._at(ctx, x[todo], unit[todo], mid), ids[todo], with_valid=True)
            hi[todo[ok]] = mid[ok]
            lo[todo[valid & ~ok]] = mid[valid & ~ok]
            keep = (hi[todo] - lo[todo]) > self.tol
            todo = todo[keep]
            if todo.numel():
                todo = todo[self._remaining(ctx, ids[todo]) > 0]
        upd = (better & (hi < d_old)) | (better & torch.isinf(d_old))
        if upd.any():
            u = ids[upd]
            d_best[u] = hi[upd]
            s_best[u] = sgn[upd]
            x_best[u] = self._at(ctx, x[upd], unit[upd], hi[upd])

    def run(self, ctx: AttackContext) -> None:
        x = ctx.x
        b = x.shape[0]
        dims = x[0].numel()
        self._init_status(ctx)
        s_best = torch.ones_like(x)
        d_best = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
        x_best = x.clone()
        level, block = 0, 0
        while True:
            active = self._budget_left(ctx)
            if self.early_stop:
                active &= torch.isinf(d_best) | (self.dist(ctx, x_best) > ctx.threat.eps)
            ids = active.nonzero().flatten()
            if ids.numel() == 0:
                break
            size = math.ceil(dims / 2 ** level)
            lo_i, hi_i = block * size, min(dims, (block + 1) * size)
            sgn = s_best[ids].flatten(1).clone()
            sgn[:, lo_i:hi_i] *= -1
            self._search(ctx, x[ids], sgn.reshape(s_best[ids].shape), ids, d_best, x_best, s_best)
            block += 1
            if block == 2 ** level or hi_i == dims:
                level, block = level + 1, 0
        have = torch.isfinite(d_best)
        self._finish(ctx, torch.where(per_sample(have, x), x_best, x), have)


class BoundaryAttack(DecisionAttack):
    """Boundary attack (Brendel et al. 2018), L2: from an adversarial start, alternate an orthogonal
    (spherical) random step of relative size delta and a step of relative size epsilon towards the
    clean input; keep candidates that stay adversarial. delta and epsilon adapt every 10 steps so that
    about half of the spherical candidates and a quarter of the combined ones succeed."""

    name = "boundary"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, max_queries: int = 5000,
                 spherical_step: float = 0.01, source_step: float = 0.01, step_adaptation: float = 1.5,
                 starting_points: torch.Tensor | None = None, init_tries: int = 100, **options):
        super().__init__(threat, objective, max_queries=max_queries, starting_points=starting_points,
                         init_tries=init_tries, **options)
        if threat.norm != "l2":
            raise InputError("the Boundary attack is an L2 attack: use ThreatModel('l2', eps)")
        self.spherical_step, self.source_step, self.adapt = float(spherical_step), float(source_step), float(step_adaptation)

    def run(self, ctx: AttackContext) -> None:
        x = ctx.x
        b = x.shape[0]
        pos = torch.arange(b, device=x.device)
        self._init_status(ctx)
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
            unit = diff / per_sample(dist, diff)
            eta = eta - per_sample((eta * unit).flatten(1).sum(1), eta) * unit          # orthogonal to x_b - x
            eta = eta / per_sample(lp_norm(eta, "l2").clamp_min(1e-12), eta) * per_sample(sph[ids] * dist, eta)
            on_sphere = xi + (diff + eta) * per_sample(dist / lp_norm(diff + eta, "l2").clamp_min(1e-12), eta)
            on_sphere = on_sphere.clamp(*ctx.threat.bounds)
            ok_sph = self._probe(ctx, on_sphere, ids)
            cand = (xi + (on_sphere - xi) * per_sample(1 - src[ids], xi)).clamp(*ctx.threat.bounds)
            ok = torch.zeros_like(ok_sph)
            if ok_sph.any():
                ok[ok_sph] = self._probe(ctx, cand[ok_sph], ids[ok_sph])
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
