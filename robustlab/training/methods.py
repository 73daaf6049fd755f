"""Training methods: each is a small function computing the training loss of one batch, for any
task: the loss is the task's objective (``ctx.objective``: cross-entropy for classifiers, a disparity
error for stereo), whose per-sample ``loss`` training minimises and attacks maximise.

``method(model, x, target, ctx) -> (loss, outputs_on_training_inputs)`` where ``ctx`` carries the
objective, the current eps, the threat model, the method's hyperparameters and the batch's random
numbers. New methods register in ``METHODS``; a ``regularizer(model, x, target, outputs, ctx) ->
scalar`` passed to ``train`` adds its own term to any method.

Which methods are defined for which objectives: standard, PGD-AT, FGSM-RS (+GradAlign) and LLR need
only a differentiable per-sample loss and work for every task; TRADES needs the objective's output
divergence (KL for classifiers, mean squared output difference for regression; not defined for
objectives without one, e.g. sequence losses).

Random starts come from ``ctx.random_start``: the threat model's one random draw (``random_delta``),
made for the whole global batch and sliced to this rank's part, so 2 ranks with batch B see exactly
the numbers that 1 process with batch 2B sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD
from ..objectives import CrossEntropy, Objective
from ..registry import Registry
from ..runtime import eval_mode
from ..threat import ThreatModel


@dataclass
class BatchContext:
    threat: ThreatModel      # with the current (possibly warmed-up) eps
    seed: int                # per-batch seed (the same on every rank)
    attack_steps: int = 10
    attack_step_size: float | None = None
    fgsm_alpha: float | None = None   # FGSM-RS step, default 1.25 * eps
    grad_align: float = 0.0           # GradAlign weight for FGSM-RS (0: off)
    trades_beta: float = 1.0
    llr_lambda: float = 4.0
    llr_mu: float = 3.0
    llr_steps: int = 10
    attack_model: nn.Module | None = None  # the unwrapped model for inner maximisations (not the DDP wrapper)
    global_size: int | None = None    # size of the global batch (all ranks)
    offset: int = 0                   # where this rank's samples start in the global batch
    objective: Objective = field(default_factory=CrossEntropy)  # the task's training loss
    _gen: torch.Generator | None = field(default=None, repr=False)

    def loss(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        """The mean training loss of a batch."""
        return self.objective.loss(output, target).mean()

    def rand(self, x: torch.Tensor, kind: str = "rand") -> torch.Tensor:
        """Random numbers shaped like x, drawn for the global batch and sliced to this rank."""
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        n = self.global_size or x.shape[0]
        fn = torch.rand if kind == "rand" else torch.randn
        full = fn((n, *x.shape[1:]), generator=self._gen, dtype=x.dtype)
        return full[self.offset:self.offset + x.shape[0]].to(x.device)

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """A uniform random point of the threat's ball around x (and in the bounds), drawn for the
        global batch with the threat model's own ``random_delta`` and sliced to this rank."""
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        n = self.global_size or x.shape[0]
        full = self.threat.random_delta((n, *x.shape[1:]), self._gen, x.dtype)
        return self.threat.project(x, x + full[self.offset:self.offset + x.shape[0]].to(x.device))


def standard(model: nn.Module, x, y, ctx: BatchContext):
    """Empirical risk minimisation: the mean objective loss l(f(x), y) (CE for classifiers)."""
    logits = model(x)
    return ctx.loss(logits, y), logits


def pgd_at(model: nn.Module, x, y, ctx: BatchContext):
    """PGD adversarial training (Madry et al. 2018): l(f(x'), y), x' = the last PGD iterate on the
    same objective from a random start (``PGD.for_training``: no early stopping, no extra forward
    passes: the cost of the hand-written loop)."""
    if ctx.threat.eps == 0:
        return standard(model, x, y, ctx)
    step = ctx.attack_step_size if ctx.attack_step_size is not None else 2.5 * ctx.threat.eps / ctx.attack_steps
    attack = PGD.for_training(ctx.threat, ctx.objective, steps=ctx.attack_steps, step_size=step,
                              starting_points=ctx.random_start(x), seed=ctx.seed)
    inner = ctx.attack_model or model
    with eval_mode(inner):
        x_adv = attack(inner, x, y).x_adv.detach()
    logits = model(x_adv)
    return ctx.loss(logits, y), logits


def _input_grad(model, x, y, objective: Objective, create_graph: bool = False):
    x = x.detach().requires_grad_(True) if not x.requires_grad else x
    loss = objective.loss(model(x), y).mean()
    grad, = torch.autograd.grad(loss, x, create_graph=create_graph)
    return grad


def fgsm_rs(model: nn.Module, x, y, ctx: BatchContext):
    """FGSM with a random start (Wong et al. 2020): delta0 ~ U(-eps, eps),
    delta = clip_eps(delta0 + alpha * sign(grad)), alpha = 1.25 eps by default.

    Trains on the point after the step. With ``grad_align > 0`` adds the GradAlign regulariser
    (Andriushchenko & Flammarion 2020): lambda * (1 - cos(grad_x l(x), grad_x l(x + eta))),
    eta ~ U[-eps, eps], differentiated through both gradients (double backprop).
    """
    threat = ctx.threat
    if threat.eps == 0:
        return standard(model, x, y, ctx)
    alpha = ctx.fgsm_alpha if ctx.fgsm_alpha is not None else 1.25 * threat.eps
    x0 = ctx.random_start(x)
    inner = ctx.attack_model or model
    with eval_mode(inner):
        grad = _input_grad(inner, x0, y, ctx.objective)
    x_adv = threat.project(x, x0 + threat.step(grad, alpha)).detach()
    logits = model(x_adv)
    loss = ctx.loss(logits, y)
    if ctx.grad_align > 0:
        eta_point = ctx.random_start(x)
        g1 = _input_grad(model, x.detach().requires_grad_(True), y, ctx.objective, create_graph=True).flatten(1)
        g2 = _input_grad(model, eta_point.detach().requires_grad_(True), y, ctx.objective, create_graph=True).flatten(1)
        cos = F.cosine_similarity(g1, g2, dim=1, eps=1e-12)
        loss = loss + ctx.grad_align * (1 - cos).mean()
    return loss, logits


def trades(model: nn.Module, x, y, ctx: BatchContext):
    """TRADES (Zhang et al. 2019): l(f(x), y) + beta * D(f(x'), f(x)), x' from x + 0.001 N(0, I) by
    ``attack_steps`` projected steepest-ascent steps on D (model in eval mode). D is the objective's
    ``divergence``: KL(p(x) || p(x')) for classifiers, the mean squared output difference for regression."""
    threat = ctx.threat
    if threat.eps == 0:
        return standard(model, x, y, ctx)
    objective = ctx.objective
    step = ctx.attack_step_size if ctx.attack_step_size is not None else 2.5 * threat.eps / ctx.attack_steps
    inner = ctx.attack_model or model
    with eval_mode(inner):
        with torch.no_grad():
            out_clean = inner(x)
        x_adv = threat.project(x, x + 0.001 * ctx.rand(x, "randn"))
        for _ in range(ctx.attack_steps):
            x_req = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                div = objective.divergence(inner(x_req), out_clean, y).sum()
                grad, = torch.autograd.grad(div, x_req)
            x_adv = threat.project(x, x_adv.detach() + threat.step(grad, step))
    # one forward over clean and adversarial points (DDP allows one forward per backward)
    both = model(torch.cat([x, x_adv.detach()]))
    logits, logits_adv = both[: x.shape[0]], both[x.shape[0]:]
    div = objective.divergence(logits_adv, logits, y).mean()
    return ctx.loss(logits, y) + ctx.trades_beta * div, logits


def local_linearity(model: nn.Module, x, y, ctx: BatchContext, create_graph: bool = False):
    """gamma(eps, x) = max_{delta in ball} |l(x + delta) - l(x) - delta^T grad_x l(x)| (Qin et al. 2019),
    with l the per-sample objective loss (any task).

    The inner maximum: ``llr_steps`` projected sign steps from a random start with grad_x l(x) held
    fixed. Returns (gamma per sample, delta, grad_x l(x), l(x) per sample); with ``create_graph`` the
    gradient and losses stay differentiable in the weights (double backprop) for training.
    """
    threat = ctx.threat
    objective = ctx.objective
    x_req = x.detach().requires_grad_(True)
    loss_x = objective.loss(model(x_req), y)
    grad, = torch.autograd.grad(loss_x.sum(), x_req, create_graph=create_graph)
    g_fixed = grad.detach()
    lx_fixed = loss_x.detach()
    step = 2.5 * threat.eps / max(ctx.llr_steps, 1)
    x_d = ctx.random_start(x)
    with eval_mode(model):
        for _ in range(ctx.llr_steps):
            xq = x_d.detach().requires_grad_(True)
            with torch.enable_grad():
                lq = objective.loss(model(xq), y)
                g = (lq - lx_fixed - ((xq - x) * g_fixed).flatten(1).sum(1)).abs()
                gd, = torch.autograd.grad(g.sum(), xq)
            x_d = threat.project(x, x_d.detach() + threat.step(gd, step))
    delta = (x_d - x).detach()
    l_delta = objective.loss(model(x + delta), y)
    lin = (delta * grad).flatten(1).sum(1)
    gamma = (l_delta - loss_x - lin).abs()
    return gamma, delta, grad, loss_x


def llr(model: nn.Module, x, y, ctx: BatchContext):
    """Local linearity regularisation (Qin et al. 2019):
    l(x) + lambda * gamma(eps, x) + mu * |delta_LLR^T grad_x l(x)|, with double backprop."""
    if ctx.threat.eps == 0:
        return standard(model, x, y, ctx)
    gamma, delta, grad, loss_x = local_linearity(model, x, y, ctx, create_graph=True)
    lin = (delta * grad).flatten(1).sum(1).abs()
    loss = loss_x.mean() + ctx.llr_lambda * gamma.mean() + ctx.llr_mu * lin.mean()
    with torch.no_grad():
        logits = model(x)
    return loss, logits


def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
    """On-manifold adversarial training (Stutz et al. 2019): train on adversarial examples found in
    the latent space of a class-conditional VAE of the data, decoded with the sample's own label
    (``training/manifold.py``; the MNIST VAE is trained and cached on first use). The latent radius is
    fixed there; ``ctx.threat.eps`` is not used."""
    from .manifold import on_manifold as run

    return run(model, x, y, ctx)


METHODS = Registry("training method")
METHODS.register("standard", standard, adversarial=False, objectives="any")
METHODS.register("pgd", pgd_at, aliases=("pgd_at",), adversarial=True, objectives="any")
METHODS.register("fgsm_rs", fgsm_rs, adversarial=True, objectives="any")
METHODS.register("trades", trades, adversarial=True, objectives="with a divergence (classification, regression)")
METHODS.register("llr", llr, adversarial=True, objectives="any")
METHODS.register("on_manifold", on_manifold, adversarial=True, select_on="clean",
                 objectives="classification (1x28x28 inputs: the MNIST VAE)")


def get_method(name: str) -> Callable:
    return METHODS.get(name)


def list_methods(**where) -> list[str]:
    return METHODS.names(**where)
