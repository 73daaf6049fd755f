"""On-manifold adversarial training (Stutz et al. 2019): train on latent-space adversarial examples
x~ = decode(mu(x) + zeta), ||zeta||_inf <= eta, found by PGD on zeta through a VAE's decoder, mixed
50/50 with clean examples. Stutz et al. show it improves generalisation (on-manifold robustness
behaves like generalisation) without buying off-manifold (pixel) robustness.

``make_on_manifold_method(vae, eta)`` returns a training method ``method(model, x, y, ctx) -> (loss,
logits)`` for ``robustlab.training.train``; ``on_manifold`` is that method with the cached default
MNIST VAE (``robustlab.representations.pretrained_vae()``) and eta = 0.5, trained on first use.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import ParametricPGD, eval_mode
from ..representations.manifold import VAE, LatentThreat, pretrained_vae
from .methods import BatchContext, standard

DEFAULT_ETA = 0.5


def make_on_manifold_method(vae: VAE, eta: float = DEFAULT_ETA, steps: int = 10, rel_step: float = 0.25,
                            clean_weight: float = 0.5) -> Callable:
    """A training method: loss = w CE(f(x), y) + (1 - w) CE(f(x~), y), x~ the last latent PGD iterate
    (``steps`` sign steps of ``rel_step * eta`` from a random start in the latent box). ``ctx.threat.eps``
    is not used (the latent radius is ``eta``); ``eta = 0`` is standard training."""
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)

    def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
        if eta == 0:
            return standard(model, x, y, ctx)
        attack = ParametricPGD(LatentThreat(vae, eta), "ce", steps=steps, rel_step=rel_step, random_start=True,
                               early_stop=False, seed=ctx.seed)
        attack.keep_last, attack.judge_final, attack.verify = True, False, False
        inner = ctx.attack_model or model
        with eval_mode(inner):
            x_adv = attack(inner, x, y).x_adv.detach()
        both = model(torch.cat([x, x_adv]))
        logits, logits_adv = both[: x.shape[0]], both[x.shape[0]:]
        loss = clean_weight * F.cross_entropy(logits, y) + (1 - clean_weight) * F.cross_entropy(logits_adv, y)
        return loss, logits

    return on_manifold


_DEFAULT: dict[str, Callable] = {}


def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
    """On-manifold adversarial training with the cached default MNIST VAE and eta = 0.5."""
    if "method" not in _DEFAULT:
        _DEFAULT["method"] = make_on_manifold_method(pretrained_vae(), DEFAULT_ETA)
    return _DEFAULT["method"](model, x, y, ctx)
