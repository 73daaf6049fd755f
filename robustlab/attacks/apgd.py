"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), untargeted (CE or DLR) and targeted over the top-k classes;
for L1 the APGD of Croce & Hein 2021 ("Mind the box: l1-APGD for sparse adversarial attacks on
image classifiers"): adaptive sparsity, exact L1-ball-and-box projection, eps schedule 3, 2, 1 x eps."""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..objectives import DLR, Objective, TargetedDLR
from ..threat import ThreatModel, per_sample, lp_norm
from .base import AttackContext, IterativeAttack, target_groups


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Iterations at which APGD may halve its step size, with 0 first.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in integer form:
    the first interval is max(floor(0.22 N), 1), every next one shrinks by max(floor(0.03 N), 1)
    down to a floor of max(floor(0.06 N), 1). For N = 100: 0, 22, 41, 57, 70, 80, 87, 93, 99.
    """
    first = max(int(0.22 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    floor = max(int(0.06 * n_iter), 1)
    points = [0]
    interval, k = first, first
    while k < n_iter:
        points.append(k)
        interval = max(interval - shrink, floor)
        k += interval
    return points


class APGD(IterativeAttack):
    """APGD: PGD with momentum 0.75 and a step size halved at checkpoints.

    eta starts at 2 * eps (Linf, L2) or eps (L1). At each checkpoint w_j, per sample, eta is
    halved and the iterate restarts from the best point (with its gradient) if
    (1) the loss increased in at most 75% of the steps since w_{j-1}, or
    (2) eta was not halved at w_{j-1} and the best loss did not improve since w_{j-1}
    (condition 2 is not applied at the first checkpoint).
    ``objective`` picks the loss: "ce" or "dlr" (or any Objective).

    L1 (Croce & Hein 2021, l1-APGD): no momentum; the step moves the top-k coordinates of |g| by
    eta / k each along sign(g) and projects exactly onto the L1 ball intersected with the box. The
    sparsity k is adapted: every max(floor(0.04 N), 1) iterations, k becomes ||x_best - x||_0 / 1.5;
    if that sparsity fell by more than 5% since the last check, eta resets to eps and the iterate
    restarts from the best point, else eta /= 1.5 (eta stays in [eps / 10, eps]). With
    ``eps_schedule`` (default for L1, as in AutoAttack-L1) each restart runs 30% of the steps at
    3 eps, 30% at 2 eps and the rest at eps, each phase starting from the previous phase's best point
    projected onto the smaller ball; only points inside the real eps ball count as results. The random
    start is x + N(0, I) projected onto the first phase's ball and the box.
    """

    name = "apgd"
    evaluate_final = False
    momentum = 0.75
    rho = 0.75

    #: L1: initial share of coordinates in the sparse step without the eps schedule
    l1_topk_init = 0.2

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = "ce", *, steps: int = 100,
                 restarts: int = 1, eps_schedule: bool | None = None, **options):
        super().__init__(threat, objective, **options)
        self.steps = int(steps)
        self.restarts = int(restarts)
        if self.steps < 1 or self.restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self._checkpoints = set(apgd_checkpoints(self.steps)[1:])
        self.eps_schedule = (threat.norm == "l1") if eps_schedule is None else bool(eps_schedule)
        if self.eps_schedule and threat.norm != "l1":
            raise InputError("eps_schedule (3, 2, 1 x eps) is the L1 APGD's; use it with an l1 threat model")
        self._phases = l1_phases(self.steps, self.eps_schedule)
        if type(self) is APGD:
            self.name = f"apgd-{self.objective.name}"

    def _random_start(self, ctx: AttackContext) -> torch.Tensor:
        threat = ctx.threat
        if not threat.variable_is_point:
            return ctx.random_init()
        if threat.norm == "linf":
            t = 2 * ctx.rand_full(ctx.x.shape[1:]) - 1
        elif threat.norm == "l2":
            t = ctx.rand_full(ctx.x.shape[1:], kind="randn")
        else:
            return ctx.random_init()
        t = t / per_sample(lp_norm(t, threat.norm).clamp_min(1e-12), t)
        return threat.project(ctx.x, ctx.x + threat.eps * t)

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        if ctx.threat.norm == "l1":
            return self._l1_init(ctx)
        x0 = self._random_start(ctx)
        loss, grad, _, _ = ctx.loss_and_grad(x0)
        n = x0.shape[0]
        eta0 = (2.0 if ctx.threat.norm in ("linf", "l2") else 1.0) * ctx.threat.eps
        return {
            "x_adv": x0, "x_prev": x0.clone(), "grad": grad, "loss": loss,
            "eta": torch.full((n,), eta0, dtype=x0.dtype, device=x0.device),
            "x_best": x0.clone(), "grad_best": grad.clone(), "loss_best": loss.clone(),
            "increases": torch.zeros(n, dtype=torch.long, device=x0.device),
            "loss_best_at_check": loss.clone(),
            "halved_at_check": torch.ones(n, dtype=torch.bool, device=x0.device),
            "since_check": 0,
        }

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        if ctx.threat.norm == "l1":
            return self._l1_step(ctx, s, i)
        threat = ctx.threat
        x_k = s["x_adv"]
        a = 1.0 if i == 0 else self.momentum
        z = threat.project(ctx.x, x_k + threat.step(s["grad"], s["eta"]))
        x_next = threat.project(ctx.x, x_k + a * (z - x_k) + (1 - a) * (x_k - s["x_prev"]))
        loss, grad, _, _ = ctx.loss_and_grad(x_next)

        s = dict(s)
        s["increases"] = s["increases"] + (loss > s["loss"]).long()
        improved = loss > s["loss_best"]
        s["x_best"] = torch.where(per_sample(improved, x_next), x_next, s["x_best"])
        s["grad_best"] = torch.where(per_sample(improved, grad), grad, s["grad_best"])
        s["loss_best"] = torch.where(improved, loss, s["loss_best"])
        s["x_prev"], s["x_adv"], s["grad"], s["loss"] = x_k, x_next, grad, loss
        s["since_check"] += 1

        if i + 1 in self._checkpoints:
            interval = s["since_check"]
            oscillating = s["increases"].to(loss.dtype) <= self.rho * interval
            stalled = ~s["halved_at_check"] & (s["loss_best_at_check"] >= s["loss_best"])
            halve = oscillating | stalled
            s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
            s["x_adv"] = torch.where(per_sample(halve, x_next), s["x_best"], s["x_adv"])
            s["grad"] = torch.where(per_sample(halve, grad), s["grad_best"], s["grad"])
            s["halved_at_check"] = halve
            s["loss_best_at_check"] = s["loss_best"].clone()
            s["increases"] = torch.zeros_like(s["increases"])
            s["since_check"] = 0
        return s


    # ----- L1 (Croce & Hein 2021) -------------------------------------------------------------
    def _l1_eval(self, ctx: AttackContext, x_adv: torch.Tensor, factor: float):
        """Loss and gradient; iterates of a larger-eps phase are recorded only when inside eps (the others are
        offered as unsuccessful with loss -inf, which never beats a recorded point: no host read)."""
        if factor == 1:
            loss, grad, _, _ = ctx.loss_and_grad(x_adv)
        else:
            loss, grad, succ, _ = ctx.loss_and_grad(x_adv, record=False)
            inside = lp_norm(x_adv - ctx.x, "l1") <= ctx.threat.eps
            ctx.record(x_adv, torch.where(inside, loss, float("-inf")), succ & inside, ctx.index)
        return loss, grad

    def _l1_phase_start(self, ctx: AttackContext, x_init: torch.Tensor, phase: int, fresh: bool) -> dict:
        """State at the start of one phase (a fresh run of l1-APGD at radius factor * eps from x_init)."""
        factor, n_iter = self._phases[phase]
        eps = factor * ctx.threat.eps
        x_adv = ctx.threat.project(ctx.x, x_init, eps)
        loss, grad = self._l1_eval(ctx, x_adv, factor)
        n = x_adv.shape[0]
        n_fts = x_adv[0].numel()
        if fresh:  # no starting point given: fixed initial sparsity
            topk = torch.full((n,), self.l1_topk_init, dtype=x_adv.dtype, device=x_adv.device)
            sp_old = torch.full((n,), float(n_fts), dtype=x_adv.dtype, device=x_adv.device)
        else:
            sp_old = _l0(x_adv - ctx.x)
            topk = sp_old / n_fts / 1.5
        return {
            "x_adv": x_adv, "grad": grad, "loss": loss,
            "x_best": x_adv.clone(), "grad_best": grad.clone(), "loss_best": loss.clone(),
            "eta": torch.full((n,), eps, dtype=x_adv.dtype, device=x_adv.device),
            "topk": topk, "sp_old": sp_old,
            "phase": phase, "since_check": 0, "check_every": max(int(0.04 * n_iter), 1),
        }

    def _l1_init(self, ctx: AttackContext) -> dict:
        t = ctx.rand_full(ctx.x.shape[1:], kind="randn")
        return self._l1_phase_start(ctx, ctx.x + t, 0, fresh=not self.eps_schedule)

    def _l1_step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        phase = s["phase"]
        if phase + 1 < len(self._phases) and i == sum(n for _, n in self._phases[:phase + 1]):
            s = self._l1_phase_start(ctx, s["x_best"], phase + 1, fresh=False)
            phase = s["phase"]
        factor = self._phases[phase][0]
        eps = factor * ctx.threat.eps
        x, x_k, grad = ctx.x, s["x_adv"], s["grad"]
        grad = ctx.threat.masked(grad)
        flat = grad.abs().flatten(1)
        n_fts = flat.shape[1]
        kth = ((1 - s["topk"]) * n_fts).clamp(0, n_fts - 1).long()
        thresh = flat.sort(1).values.gather(1, kth[:, None])
        direction = (grad.sign() * (flat >= thresh).reshape(grad.shape))
        direction = direction / per_sample(lp_norm(direction, "l1") + 1e-10, direction)
        x_step = x_k + per_sample(s["eta"], x_k) * direction
        x_next = ctx.threat.project(x, x_step, eps)
        loss, grad = self._l1_eval(ctx, x_next, factor)

        s = dict(s)
        improved = loss > s["loss_best"]
        s["x_best"] = torch.where(per_sample(improved, x_next), x_next, s["x_best"])
        s["grad_best"] = torch.where(per_sample(improved, grad), grad, s["grad_best"])
        s["loss_best"] = torch.where(improved, loss, s["loss_best"])
        s["x_adv"], s["grad"], s["loss"] = x_next, grad, loss
        s["since_check"] += 1
        if s["since_check"] == s["check_every"]:
            sp = _l0(s["x_best"] - x)
            sparser = sp / s["sp_old"].clamp_min(1) < 0.95
            s["topk"] = sp / n_fts / 1.5
            s["eta"] = torch.where(sparser, torch.full_like(s["eta"], eps), s["eta"] / 1.5).clamp(eps / 10, eps)
            s["sp_old"] = sp
            s["x_adv"] = torch.where(per_sample(sparser, x_next), s["x_best"], s["x_adv"])
            s["grad"] = torch.where(per_sample(sparser, grad), s["grad_best"], s["grad"])
            s["since_check"] = 0
        return s


def l1_phases(steps: int, eps_schedule: bool) -> list[tuple[float, int]]:
    """(eps factor, iterations) of each phase of an l1-APGD run: with the schedule
    3 eps for ceil(0.3 N), 2 eps for ceil(0.3 N), eps for the rest (at least one iteration)."""
    if not eps_schedule:
        return [(1.0, steps)]
    first = math.ceil(0.3 * steps)
    if steps - 2 * first < 1:
        return [(1.0, steps)]
    return [(3.0, first), (2.0, first), (1.0, steps - 2 * first)]


def _l0(t: torch.Tensor) -> torch.Tensor:
    return (t != 0).flatten(1).sum(1).to(t.dtype)


class APGDDLR(APGD):
    """APGD on the DLR loss."""

    name = "apgd-dlr"

    def __init__(self, threat: ThreatModel, *, steps: int = 100, restarts: int = 1,
                 eps_schedule: bool | None = None, **options):
        super().__init__(threat, DLR(), steps=steps, restarts=restarts, eps_schedule=eps_schedule, **options)


class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss, run once per target class.

    Targets are the 2nd to (k+1)-th most likely classes on the clean input. A point counts as broken
    when misclassified (the AutoAttack use of APGD-T). ``targets_at_once`` targets are attacked in
    one batch of (point, target) rows (default: one at a time on a CPU, where that is fastest; on an
    accelerator as many as ``base.ROWS_BUDGET`` allows, all of them on MNIST); a point's rows stop as soon as one succeeds,
    and the next group of targets runs only on the points still unbroken. Every (point, target)
    trajectory, and so every success, is the one the one-target-at-a-time run gives
    (``targets_at_once=1``, the reference's order) with one restart; batching only removes
    per-iteration overhead. Classification only.
    """

    name = "apgd-t"

    def __init__(self, threat: ThreatModel, *, n_targets: int = 9, steps: int = 100, restarts: int = 1,
                 eps_schedule: bool | None = None, targets_at_once: int | None = None, **options):
        super().__init__(threat, TargetedDLR(untargeted_success=True), steps=steps, restarts=restarts,
                         eps_schedule=eps_schedule, **options)
        self.n_targets, self.targets_at_once = int(n_targets), targets_at_once
        if targets_at_once is not None and int(targets_at_once) < 1:
            raise InputError(f"targets_at_once must be >= 1 (or None: the device's default), got {targets_at_once}")

    def run(self, ctx: AttackContext) -> None:
        labels = ctx.target_full
        if isinstance(labels, tuple):
            labels = labels[0]
        groups = target_groups(ctx, ctx.output(ctx.x), self.n_targets, self.targets_at_once, self.early_stop,
                               lambda t, k: (labels.repeat(k), t))
        for rows, _ in groups:
            super().run(rows)
