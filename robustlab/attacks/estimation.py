"""Score-based attacks that estimate the gradient from queries: NES (Ilyas et al. 2018) and
Bandits-TD (Ilyas et al. 2019), each followed by a projected steepest-ascent step."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..objectives import CrossEntropy, Objective
from ..threat import ThreatModel, per_sample, lp_norm
from .base import AttackContext, IterativeAttack, check_query_budget


class NES(IterativeAttack):
    """NES gradient estimation + PGD.

    g = 1 / (2 n sigma) * sum_i [L(x + sigma u_i) - L(x - sigma u_i)] u_i with n antithetic pairs
    u_i ~ N(0, I); then x <- P(x + step_size * steepest_ascent(g)). Costs 2n + 1 queries per step, after
    one for the clean point: ``max_queries`` >= 4 (one pair). A step that the budget left (the attack's,
    or a score oracle's) cannot pay in full uses fewer pairs, (left - 1) // 2: under 2n + 2 queries the
    one step is such a partial step, so the budget is spent exactly (up to one query).
    """

    name = "nes"
    needs_gradients = False
    default_objective = CrossEntropy
    evaluate_final = False

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, n_samples: int = 50,
                 sigma: float = 0.001, step_size: float | None = None, max_queries: int = 10000,
                 **options):
        super().__init__(threat, objective, **options)
        self.n_samples, self.sigma = int(n_samples), float(sigma)
        self.step_size = step_size
        self.max_queries = check_query_budget(max_queries, "NES", 4, "the clean point, then one step: an "
                                              "antithetic pair of probes and the new point")
        self.steps = max(1, (self.max_queries - 1) // (2 * self.n_samples + 1))
        # pairs per step within the attack's own budget: all n_samples, or fewer in a lone partial step
        self.pairs = max(1, min(self.n_samples, (self.max_queries - 2) // 2))

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        ctx.evaluate(ctx.x)
        return {"x_adv": ctx.x.clone()}

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        x_adv = s["x_adv"]
        b = x_adv.shape[0]
        n = self.pairs                                                            # a step costs 2n + 1
        if ctx.is_oracle and getattr(ctx.model, "budget", None) is not None:  # an oracle's budget left may be less
            n = max(1, min(n, (int(ctx.queries_left(self.max_queries).min()) - 1) // 2))
        u = ctx.rand_full((n, *x_adv.shape[1:]), kind="randn")                  # [B, n, ...]
        probes = torch.cat([x_adv[:, None] + self.sigma * u, x_adv[:, None] - self.sigma * u], 1)
        owners = torch.arange(b, device=x_adv.device)[:, None].expand(b, 2 * n).reshape(-1)  # row i // 2n: sample i
        losses = ctx.probe(probes.flatten(0, 1), owners).reshape(b, 2 * n)
        diff = losses[:, :n] - losses[:, n:]                                     # [B, n]
        grad = (diff.reshape(b, n, *([1] * (x_adv.dim() - 1))) * u).sum(1) / (2 * n * self.sigma)
        alpha = self.step_size if self.step_size is not None else ctx.threat.eps / 10
        x_new = ctx.threat.project(ctx.x, x_adv + ctx.threat.step(grad, alpha))
        ctx.evaluate(x_new)
        return {"x_adv": x_new}


class BanditsTD(IterativeAttack):
    """Bandits with time and data-dependent priors (Ilyas et al. 2019).

    A gradient prior v lives on a low-resolution grid (``prior_size`` x ``prior_size``, upsampled to
    the image: the data prior). Each step draws exploration noise u, queries L at
    x + fd_eta * up(v +- exploration * u) / ||.||, and updates the prior with the finite-difference
    estimate (Linf: exponentiated gradient; L2: gradient step, rate ``online_lr``: the time prior).
    The image then takes a projected steepest-ascent step along up(v). 3 queries per step, after one
    for the clean point: ``max_queries`` >= 4.
    """

    name = "bandits"
    needs_gradients = False
    default_objective = CrossEntropy
    evaluate_final = False

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, prior_size: int | None = None,
                 fd_eta: float = 0.1, image_lr: float | None = None, online_lr: float = 100.0,
                 exploration: float = 1.0, max_queries: int = 10000, **options):
        super().__init__(threat, objective, **options)
        self.prior_size, self.fd_eta, self.image_lr = prior_size, float(fd_eta), image_lr
        self.online_lr, self.exploration = float(online_lr), float(exploration)
        self.max_queries = check_query_budget(max_queries, "Bandits-TD", 4, "the clean point, then one step "
                                              "of 3 queries")
        self.steps = (self.max_queries - 1) // 3

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        b, c, h, w = ctx.x.shape
        size = self.prior_size or max(2, round(h / 4.5))
        ctx.evaluate(ctx.x)
        return {"x_adv": ctx.x.clone(), "prior": torch.zeros(b, c, size, size, dtype=ctx.x.dtype, device=ctx.x.device)}

    def _up(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(v, size=like.shape[-2:], mode="nearest")

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        x_adv, prior = s["x_adv"], s["prior"]
        b = x_adv.shape[0]
        d = prior[0].numel()
        u = ctx.rand_full(prior.shape[1:], kind="randn") * self.exploration / math.sqrt(d)
        q1, q2 = self._up(prior + u, x_adv), self._up(prior - u, x_adv)
        norm = "l2"
        q1 = q1 / per_sample(lp_norm(q1, norm).clamp_min(1e-12), q1)
        q2 = q2 / per_sample(lp_norm(q2, norm).clamp_min(1e-12), q2)
        probes = torch.cat([x_adv + self.fd_eta * q1, x_adv + self.fd_eta * q2])
        owners = torch.arange(b, device=x_adv.device).repeat(2)
        l = ctx.probe(probes, owners)
        deriv = (l[:b] - l[b:]) / (self.fd_eta * self.exploration)
        g = per_sample(deriv, u) * u
        if ctx.threat.norm == "linf":  # exponentiated-gradient step on the prior in (-1, 1)
            p = (prior + 1) / 2
            pos, neg = p * torch.exp(self.online_lr * g), (1 - p) * torch.exp(-self.online_lr * g)
            prior = (pos / (pos + neg).clamp_min(1e-30)) * 2 - 1
            prior = torch.nan_to_num(prior, nan=0.0).clamp(-1, 1)
        else:
            prior = prior + self.online_lr * g
        lr = self.image_lr if self.image_lr is not None else ctx.threat.eps / 30
        x_new = ctx.threat.project(ctx.x, x_adv + ctx.threat.step(self._up(prior, x_adv), lr))
        ctx.evaluate(x_new)
        return {"x_adv": x_new, "prior": prior}
