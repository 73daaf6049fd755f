"""On-manifold adversarial examples (Stutz et al. 2019, "Disentangling adversarial robustness and
generalization").

A small fully connected VAE (Kingma & Welling 2014) approximates the data manifold: images are
``decode(z)`` for latent codes z. An on-manifold adversarial example perturbs the latent code of x,
``x~ = decode(mu(x) + zeta)`` with ``||zeta||_inf <= eta``, so it always lies on the decoder's range
(in [0, 1], since the decoder ends in a sigmoid). ``LatentThreat`` is a ``ParametricThreat`` whose
parameters are the latent code, so the attack is the engine's ``ParametricPGD`` (sign steps of
``rel_step * eta`` on zeta). Off-manifold (regular) examples are pixel-space PGD.

Stutz et al. use class-specific VAE-GANs so that a latent perturbation keeps the class. The VAE here
is optionally class-conditional (Sohn et al. 2015, CVAE): with ``num_classes > 0`` the encoder sees
(x, onehot(y)) and the decoder (z, onehot(y)), so the class is carried by the label and z only by
the style; the on-manifold attack perturbs z and decodes with the sample's own label y, which plays
the role of Stutz et al.'s class-y model. The unconditional VAE (``num_classes = 0``) stays available;
with it a large latent step can change the true digit (then the "on-manifold robust accuracy"
undercounts and on-manifold training sees label noise). Both train on CPU in a minute or two.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..attacks import PGD, AttackResult, ParametricPGD
from ..data import Dataset
from ..errors import InputError
from ..models.vae import VAE
from ..runtime import eval_mode
from ..threat import LatentThreat, ThreatModel

__all__ = ["on_manifold_attack", "on_off_manifold"]


def on_manifold_attack(model: nn.Module, vae: VAE, x: torch.Tensor, y: torch.Tensor, eta: float = 0.5,
                       steps: int = 40, rel_step: float = 0.1, random_start: bool = False, seed: int = 0,
                       early_stop: bool = True) -> AttackResult:
    """Untargeted on-manifold attack: maximise CE(f(decode(mu(x) + zeta)), y) over ||zeta||_inf <= eta
    (a class-conditional VAE encodes and decodes with the true label y: the class-y model).

    Every returned image is a decoder output (on the manifold and inside [0, 1])."""
    if vae.input_shape != tuple(x.shape[1:]):
        raise InputError(f"the VAE models inputs of shape {vae.input_shape}, got {tuple(x.shape[1:])}")
    threat = LatentThreat(vae, eta, labels=y if vae.conditional else None)
    attack = ParametricPGD(threat, "ce", steps=steps, rel_step=rel_step, random_start=random_start,
                           early_stop=early_stop, seed=seed)
    with eval_mode(vae), eval_mode(model):
        return attack(model, x, y)


def on_off_manifold(model: nn.Module, vae: VAE, data: Dataset, eta: float = 0.5, eps: float = 0.1,
                    norm: str = "linf", steps: int = 40, batch_size: int = 250, seed: int = 0) -> dict:
    """On- vs off-manifold robustness of ``model`` on ``data``.

    - ``clean_acc``: accuracy on x; ``recon_acc``: on the reconstructions decode(mu(x)) (on-manifold clean points);
    - ``on_manifold_robust_acc``: fraction whose latent attack (radius eta) fails, among all points
      (a point misclassified after reconstruction counts as broken);
    - ``off_manifold_robust_acc``: pixel PGD accuracy at ``eps`` in ``norm``.
    """
    n = len(data)
    s = dict.fromkeys(("clean", "recon", "on", "off"), 0.0)
    with eval_mode(vae), eval_mode(model):
        for xb, yb in data.batches(batch_size):
            with torch.no_grad():
                s["clean"] += float((model(xb).argmax(1) == yb).sum())
                rec = vae.reconstruct(xb, yb if vae.conditional else None)
                s["recon"] += float((model(rec).argmax(1) == yb).sum())
            s["on"] += float((~on_manifold_attack(model, vae, xb, yb, eta, steps, seed=seed).success).sum())
            off = PGD(ThreatModel(norm, eps), "ce", steps=steps, seed=seed)(model, xb, yb)
            s["off"] += float((~off.success).sum())
    return {"n": n, "eta": eta, "eps": eps, "norm": norm, "conditional_vae": vae.conditional,
            "clean_acc": s["clean"] / n, "recon_acc": s["recon"] / n,
            "on_manifold_robust_acc": s["on"] / n, "off_manifold_robust_acc": s["off"] / n}
