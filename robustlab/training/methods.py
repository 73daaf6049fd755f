"""Training methods: each is a small function computing the training loss of one batch.

``method(model, x, y, ctx) -> (loss, logits_on_training_inputs)`` where ``ctx`` carries the
current eps, the threat model and a per-batch seed. New methods register in ``METHODS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD
from ..errors import unknown_name
from ..threat import ThreatModel


@dataclass
class BatchContext:
    threat: ThreatModel      # with the current (possibly warmed-up) eps
    seed: int                # per-batch seed for random starts
    attack_steps: int
    attack_step_size: float | None
    fgsm_alpha: float | None  # FGSM-RS step, default 1.25 * eps


def _attack_in_eval_mode(model: nn.Module, attack, x, y) -> torch.Tensor:
    """Run an attack with the model in eval mode (no BN statistics updates), restore the mode."""
    was_training = model.training
    model.eval()
    try:
        return attack(model, x, y).x_adv.detach()
    finally:
        model.train(was_training)


def standard(model: nn.Module, x, y, ctx: BatchContext):
    """Empirical risk minimisation: CE(f(x), y)."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def pgd_at(model: nn.Module, x, y, ctx: BatchContext):
    """PGD adversarial training (Madry et al. 2018): CE(f(x'), y), x' = PGD with a random start.

    The attack keeps each sample's highest-loss point (no early stopping).
    """
    if ctx.threat.eps == 0:
        return standard(model, x, y, ctx)
    step = ctx.attack_step_size if ctx.attack_step_size is not None else 2.5 * ctx.threat.eps / ctx.attack_steps
    attack = PGD(ctx.threat, "ce", steps=ctx.attack_steps, step_size=step, early_stop=False, seed=ctx.seed)
    x_adv = _attack_in_eval_mode(model, attack, x, y)
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


def fgsm_rs(model: nn.Module, x, y, ctx: BatchContext):
    """FGSM with a random start (Wong et al. 2020): delta0 ~ U(-eps, eps),
    delta = clip_eps(delta0 + alpha * sign(grad)), alpha = 1.25 eps by default.

    Trains on the point after the step (one forward/backward for the attack).
    """
    threat = ctx.threat
    if threat.eps == 0:
        return standard(model, x, y, ctx)
    alpha = ctx.fgsm_alpha if ctx.fgsm_alpha is not None else 1.25 * threat.eps
    gen = torch.Generator(device=x.device).manual_seed(ctx.seed)
    x0 = threat.random_init(x, generator=gen).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            grad, = torch.autograd.grad(F.cross_entropy(model(x0), y), x0)
    finally:
        model.train(was_training)
    x_adv = threat.project(x, x0.detach() + threat.step(grad, alpha)).detach()
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


METHODS: dict[str, Callable] = {"standard": standard, "pgd": pgd_at, "fgsm_rs": fgsm_rs}


def get_method(name: str) -> Callable:
    key = name.lower().replace("-", "_")
    if key not in METHODS:
        raise unknown_name("training method", name, METHODS)
    return METHODS[key]
