"""First-order attacks with a fixed step: FGSM, PGD/BIM, MI-FGSM."""
from __future__ import annotations

import torch

from ..objectives import Objective
from ..threat import ThreatModel, per_sample, lp_norm
from .base import AttackContext, IterativeAttack, finite_or_raise


class PGD(IterativeAttack):
    """Projected gradient descent (Madry et al. 2018): x <- P(x + alpha * steepest_ascent(grad)).

    With ``random_start=False`` and one restart this is BIM / I-FGSM (Kurakin et al. 2017).
    ``starting_points`` (projected onto the threat model) replace the first restart's random start.
    ``step_size`` defaults to 2.5 * eps / steps. Each restart draws a new random start; the
    engine keeps the best point per sample across steps and restarts.
    """

    name = "pgd"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 40,
                 step_size: float | None = None, rel_step_size: float | None = None, restarts: int = 1,
                 random_start: bool = True, starting_points: torch.Tensor | None = None, **options):
        super().__init__(threat, objective, **options)
        self.starting_points = starting_points
        self.steps = int(steps)
        self.restarts = int(restarts)
        if self.steps < 1 or self.restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.step_size = None if step_size is None else finite_or_raise(step_size, "step_size")
        self.rel_step_size = rel_step_size
        self.random_start = random_start

    def _alpha(self, eps: float) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.rel_step_size is not None:
            return self.rel_step_size * eps
        return 2.5 * eps / self.steps

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        if self.starting_points is not None and restart == 0:
            x0 = ctx.threat.project(ctx.x, self.starting_points[ctx.index].to(ctx.x))
        else:
            x0 = ctx.random_init() if self.random_start else ctx.zero_variable()
        return {"x_adv": x0}

    def step(self, ctx: AttackContext, state: dict, i: int) -> dict:
        _, grad, _, _ = ctx.loss_and_grad(state["x_adv"])
        x_new = state["x_adv"] + ctx.threat.step(grad, self._alpha(ctx.threat.eps))
        return {"x_adv": ctx.threat.project(ctx.x, x_new)}


class BIM(PGD):
    """Basic iterative method: PGD from the clean point, step eps / steps by default."""

    name = "bim"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 10,
                 step_size: float | None = None, **options):
        super().__init__(threat, objective, steps=steps, step_size=step_size, random_start=False,
                         **options)

    def _alpha(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else eps / self.steps


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one steepest-ascent step of size eps.

    ``random_start=True`` with ``step_size=1.25*eps`` is the FGSM-RS step of Wong et al. 2020.
    """

    name = "fgsm"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *,
                 random_start: bool = False, step_size: float | None = None, **options):
        super().__init__(threat, objective, steps=1, step_size=step_size, random_start=random_start,
                         **options)

    def _alpha(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else eps


class MIFGSM(IterativeAttack):
    """Momentum iterative FGSM (Dong et al. 2018).

    g <- mu * g + grad / ||grad||_1 (per sample), x <- P(x + alpha * steepest_ascent(g)),
    alpha = eps / steps by default.
    """

    name = "mifgsm"

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 10,
                 decay: float = 1.0, step_size: float | None = None, **options):
        super().__init__(threat, objective, **options)
        self.steps = int(steps)
        self.decay = float(decay)
        self.step_size = None if step_size is None else finite_or_raise(step_size, "step_size")

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        x0 = ctx.zero_variable()
        return {"x_adv": x0, "momentum": torch.zeros_like(x0)}

    def step(self, ctx: AttackContext, state: dict, i: int) -> dict:
        _, grad, _, _ = ctx.loss_and_grad(state["x_adv"])
        l1 = lp_norm(grad, "l1").clamp_min(1e-12)
        momentum = self.decay * state["momentum"] + grad / per_sample(l1, grad)
        alpha = self.step_size if self.step_size is not None else ctx.threat.eps / self.steps
        x_new = ctx.threat.project(ctx.x, state["x_adv"] + ctx.threat.step(momentum, alpha))
        return {"x_adv": x_new, "momentum": momentum}


class SignedAdam(IterativeAttack):
    """Adam on the signed gradient, projected onto the threat model: the optimiser of Witches' Brew
    (Geiping et al. 2021, "signAdam"). Per step: g = sign(grad), m <- b1 m + (1 - b1) g,
    v <- b2 v + (1 - b2) g^2, x <- P(x + lr_i * m_hat / (sqrt(v_hat) + 1e-8)) (ascent on the objective;
    m_hat, v_hat bias-corrected). The step ``lr`` (default ``rel_lr * eps``: the paper's tau = 0.1 scaled
    by eps) is multiplied by ``gamma`` at each of ``milestones`` (fractions of the steps; the paper's
    3/8, 5/8, 7/8). The engine keeps the best point over steps and ``restarts``.

    The last iterate is not evaluated on its own (``evaluate_final = False``): the points offered are those
    of the gradient passes, so objectives that need a gradient pass to be judged (``GradientMatchingLoss``)
    work too.
    """

    name = "signed_adam"
    evaluate_final = False

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 250,
                 lr: float | None = None, rel_lr: float = 0.1, milestones: tuple[float, ...] = (3 / 8, 5 / 8, 7 / 8),
                 gamma: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), restarts: int = 1,
                 random_start: bool = True, **options):
        super().__init__(threat, objective, **options)
        self.steps, self.restarts = int(steps), int(restarts)
        if self.steps < 1 or self.restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.lr = None if lr is None else finite_or_raise(lr, "lr")
        self.rel_lr = finite_or_raise(rel_lr, "rel_lr")
        self.milestones, self.gamma, self.betas = tuple(float(m) for m in milestones), float(gamma), betas
        self.random_start = random_start

    def step_size(self, i: int, eps: float) -> float:
        """The step of step `i` (0-based): the base step decayed by gamma at each milestone already passed
        (step i uses the decayed step once i >= floor(fraction * steps))."""
        base = self.lr if self.lr is not None else self.rel_lr * eps
        passed = sum(i >= int(m * self.steps) for m in self.milestones)
        return base * self.gamma ** passed

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        x0 = ctx.random_init() if self.random_start else ctx.zero_variable()
        return {"x_adv": x0, "m": torch.zeros_like(x0), "v": torch.zeros_like(x0)}

    def step(self, ctx: AttackContext, state: dict, i: int) -> dict:
        _, grad, _, _ = ctx.loss_and_grad(state["x_adv"])
        g = grad.sign()
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        update = (m / (1 - b1 ** (i + 1))) / ((v / (1 - b2 ** (i + 1))).sqrt() + 1e-8)
        x_new = state["x_adv"] + self.step_size(i, ctx.threat.eps) * update
        return {"x_adv": ctx.threat.project(ctx.x, x_new), "m": m, "v": v}
