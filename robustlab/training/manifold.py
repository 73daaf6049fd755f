"""On-manifold adversarial training (Stutz et al. 2019): train on latent-space adversarial examples
x~ = decode(mu(x) + zeta), ||zeta||_inf <= eta, found by PGD on zeta through a VAE's decoder, mixed
50/50 with clean examples. Stutz et al. show it improves generalisation (on-manifold robustness
behaves like generalisation) without buying off-manifold (pixel) robustness.

``make_on_manifold_method(vae, eta)`` returns a training method ``method(model, x, y, ctx) -> (loss,
logits)`` for ``robustlab.training.train``; with a class-conditional VAE the latent attack encodes and
decodes with the batch's labels (the class-y model, as Stutz et al.'s class-specific VAE-GANs), so
the adversarial example keeps its class. ``on_manifold`` (the registered method) is that method with
the cached class-conditional MNIST VAE (``pretrained_vae(VAEConfig(conditional=True))``) and
eta = 0.5, trained on first use; ``make_on_manifold_method(conditional=False)`` is the unconditional
variant (which did not reproduce Stutz et al.: a latent step can change the digit).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import ParametricPGD
from ..models.vae import VAE, VAEConfig, pretrained_vae
from ..threat import LatentThreat
from .methods import BatchContext, standard
from ..runtime import eval_mode

DEFAULT_ETA = 0.5


def make_on_manifold_method(vae: VAE | None = None, eta: float = DEFAULT_ETA, steps: int = 10,
                            rel_step: float = 0.25, clean_weight: float = 0.5, conditional: bool = True) -> Callable:
    """A training method: loss = w CE(f(x), y) + (1 - w) CE(f(x~), y), x~ the last latent PGD iterate
    (``steps`` sign steps of ``rel_step * eta`` from a random start in the latent box). ``ctx.threat.eps``
    is not used (the latent radius is ``eta``); ``eta = 0`` is standard training. ``vae`` None: the cached
    MNIST VAE, class-conditional if ``conditional`` (a given ``vae`` decides by itself)."""
    if vae is None:
        vae = pretrained_vae(VAEConfig(conditional=conditional))
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)

    def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
        if eta == 0:
            return standard(model, x, y, ctx)
        threat = LatentThreat(vae, eta, labels=y if vae.conditional else None)
        attack = ParametricPGD.for_training(threat, "ce", steps=steps, rel_step=rel_step, random_start=True,
                                            seed=ctx.seed)
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
    """On-manifold adversarial training with the cached class-conditional MNIST VAE and eta = 0.5."""
    if "method" not in _DEFAULT:
        _DEFAULT["method"] = make_on_manifold_method(None, DEFAULT_ETA, conditional=True)
    return _DEFAULT["method"](model, x, y, ctx)
