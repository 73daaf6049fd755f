"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), untargeted (CE or DLR) and targeted over the top-k classes."""
from __future__ import annotations

import torch

from ..objectives import DLR, CrossEntropy, Objective, TargetedDLR
from ..threat import ThreatModel, _per_sample, lp_norm
from .base import AttackContext, IterativeAttack


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
    ``objective`` picks the loss: "ce" or "dlr" (or any Objective). For L1 the step is the sparse
    steepest-ascent step of the threat model, not the adaptive-sparsity APGD-L1 of Croce & Hein 2021.
    """

    name = "apgd"
    evaluate_final = False
    momentum = 0.75
    rho = 0.75

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = "ce", *, steps: int = 100,
                 restarts: int = 1, early_stop: bool = True, seed: int = 0):
        super().__init__(threat, objective, early_stop=early_stop, seed=seed)
        self.steps = int(steps)
        self.restarts = int(restarts)
        if self.steps < 1 or self.restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self._checkpoints = set(apgd_checkpoints(self.steps)[1:])
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
        t = t / _per_sample(lp_norm(t, threat.norm).clamp_min(1e-12), t)
        return threat.project(ctx.x, ctx.x + threat.eps * t)

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
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
        threat = ctx.threat
        x_k = s["x_adv"]
        a = 1.0 if i == 0 else self.momentum
        z = threat.project(ctx.x, x_k + threat.step(s["grad"], s["eta"]))
        x_next = threat.project(ctx.x, x_k + a * (z - x_k) + (1 - a) * (x_k - s["x_prev"]))
        loss, grad, _, _ = ctx.loss_and_grad(x_next)

        s = dict(s)
        s["increases"] = s["increases"] + (loss > s["loss"]).long()
        improved = loss > s["loss_best"]
        s["x_best"] = torch.where(_per_sample(improved, x_next), x_next, s["x_best"])
        s["grad_best"] = torch.where(_per_sample(improved, grad), grad, s["grad_best"])
        s["loss_best"] = torch.where(improved, loss, s["loss_best"])
        s["x_prev"], s["x_adv"], s["grad"], s["loss"] = x_k, x_next, grad, loss
        s["since_check"] += 1

        if i + 1 in self._checkpoints:
            interval = s["since_check"]
            oscillating = s["increases"].to(loss.dtype) <= self.rho * interval
            stalled = ~s["halved_at_check"] & (s["loss_best_at_check"] >= s["loss_best"])
            halve = oscillating | stalled
            s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
            s["x_adv"] = torch.where(_per_sample(halve, x_next), s["x_best"], s["x_adv"])
            s["grad"] = torch.where(_per_sample(halve, grad), s["grad_best"], s["grad"])
            s["halved_at_check"] = halve
            s["loss_best_at_check"] = s["loss_best"].clone()
            s["increases"] = torch.zeros_like(s["increases"])
            s["since_check"] = 0
        return s


class APGDDLR(APGD):
    """APGD on the DLR loss."""

    name = "apgd-dlr"

    def __init__(self, threat: ThreatModel, *, steps: int = 100, restarts: int = 1,
                 early_stop: bool = True, seed: int = 0):
        super().__init__(threat, DLR(), steps=steps, restarts=restarts, early_stop=early_stop, seed=seed)


class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss, run once per target class.

    Targets are the 2nd to (k+1)-th most likely classes on the clean input; each target is
    attacked only on the points still unbroken. A point counts as broken when misclassified
    (the AutoAttack use of APGD-T). Classification only.
    """

    name = "apgd-t"

    def __init__(self, threat: ThreatModel, *, n_targets: int = 9, steps: int = 100, restarts: int = 1,
                 early_stop: bool = True, seed: int = 0):
        super().__init__(threat, TargetedDLR(untargeted_success=True), steps=steps, restarts=restarts,
                         early_stop=early_stop, seed=seed)
        self.n_targets = int(n_targets)

    def run(self, ctx: AttackContext) -> None:
        labels = ctx.target_full
        if isinstance(labels, tuple):
            labels = labels[0]
        clean_out = ctx.output(ctx.x)
        n_classes = clean_out.shape[1]
        ranked = clean_out.argsort(1, descending=True)
        n_targets = min(self.n_targets, n_classes - 1)
        try:
            for k in range(n_targets):
                ctx.retarget((labels, ranked[:, k + 1]))
                super().run(ctx)
        finally:
            ctx.retarget(labels)
