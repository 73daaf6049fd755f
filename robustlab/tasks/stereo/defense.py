"""Defending a stereo network: adversarial fine-tuning with (a) the adversarial disparity loss,
(b) a left-right feature-consistency regulariser and (c) local linearity regularisation of the
disparity loss, each switchable.

(b): features are L2-normalised (otherwise the term is minimised by shrinking them); the right
view's 1/4-resolution features are warped by d/4 with the same grid_sample convention as the data
(left(y, x) matches right(y, x - d)) and compared with the left features on non-occluded pixels.
(a) and (c) are the shared training methods (``pgd_at``, ``local_linearity``) on the disparity
objective; only (b) is stereo. Always evaluate a defended model with attacks re-optimised against it
(``evaluate_defense``, the shared ``evaluate``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...attacks import PGD, local_linearity
from ...evaluation import SanityReport, evaluate, sanity_checks
from ...objectives import SmoothL1Error
from ...training import TrainConfig
from ...training.methods import BatchContext, pgd_at, standard
from .consistent import warp_to_left
from .data import StereoDataset
from .model import StereoNet
from .train import UNREACHED, disparity_objective, evaluate_stereo, stereo_threat

log = logging.getLogger(__name__)


@dataclass
class DefenseConfig:
    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    eps: float = 0.02
    views: str = "both"
    attack_steps: int = 5
    adversarial: bool = True        # (a) train on PGD pairs (else on clean pairs)
    lr_consistency: float = 0.0     # (b) weight of the left-right feature-consistency term
    llr: float = 0.0                # (c) weight of the local-linearity term
    llr_steps: int = 2
    seed: int = 0


def lr_feature_consistency(model: StereoNet, pair: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of L2-normalised left features and right features warped by d/4."""
    left, right = pair[:, :3], pair[:, 3:]
    f = model.features(torch.cat([left, right]))
    fl, fr = F.normalize(f[: left.shape[0]], dim=1), F.normalize(f[left.shape[0]:], dim=1)
    size = fl.shape[-2:]
    d4 = F.interpolate(torch.nan_to_num(disparity, posinf=0.0), size=size, mode="nearest") / 4
    m4 = F.interpolate(mask.float(), size=size, mode="nearest")
    warped = warp_to_left(fr, d4)
    dist = (fl - warped).pow(2).sum(1, keepdim=True)
    return (dist * m4).sum() / m4.sum().clamp_min(1)


def training_objective() -> SmoothL1Error:
    """The disparity training loss: per-pair smooth-L1 error over valid pixels (target (disparity, mask))."""
    return SmoothL1Error(threshold=UNREACHED)


def defend_stereo(model: StereoNet, data: StereoDataset, cfg: DefenseConfig) -> list[dict]:
    """Fine-tune `model` in place with the shared training methods (``pgd_at`` or ``standard`` on the
    disparity objective, and the shared ``local_linearity`` term); returns per-step losses."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    threat = stereo_threat(cfg.eps, cfg.views)
    objective = training_objective()
    method = pgd_at if cfg.adversarial else standard
    settings = TrainConfig(attack_steps=cfg.attack_steps, llr_steps=cfg.llr_steps)
    history = []
    step = 0
    while step < cfg.steps:
        for x, target in data.batches(cfg.batch_size, shuffle=True, generator=gen):
            ctx = BatchContext(threat, cfg.seed * 100_003 + step, settings, objective=objective)
            model.train()
            loss, _ = method(model, x, target, ctx)
            record = {"step": step, "disparity_loss": float(loss.detach())}
            if cfg.lr_consistency > 0:
                c = lr_feature_consistency(model, x, *target)
                loss = loss + cfg.lr_consistency * c
                record["lr_consistency"] = float(c.detach())
            if cfg.llr > 0:
                gamma = local_linearity(model, x, target, threat, objective, ctx.random_start(x), cfg.llr_steps,
                                        create_graph=True)[0].mean()
                loss = loss + cfg.llr * gamma
                record["local_linearity"] = float(gamma.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(record)
            step += 1
            if step >= cfg.steps:
                break
    model.eval()
    return history


def evaluate_defense(model: StereoNet, data: StereoDataset, eps: float = 0.02, views: str = "both",
                     steps: int = 10, seed: int = 0) -> dict:
    """Clean EPE and the EPE under PGD re-optimised against this model (an adaptive attack), by the
    shared ``evaluate`` on the disparity objective; metrics pooled over the valid pixels of all pairs."""
    threat = stereo_threat(eps, views)
    attack = PGD(threat, disparity_objective(UNREACHED), steps=steps, step_size=eps / 4, early_stop=False, seed=seed)
    report = evaluate(model, data, threat, [attack], objective=disparity_objective(UNREACHED), sanity=None,
                      keep_points=True, seed=seed, progress=False)
    return {"clean": evaluate_stereo(model, data), "adaptive": evaluate_stereo(model, data, x=report.x_adv)}


def stereo_checks(model, data: StereoDataset, eps: float = 0.02, checks: str = "all") -> SanityReport:
    """The shared gradient-masking checks on the disparity objective (mean error over valid pixels),
    with both views perturbed in an Linf ball of radius eps."""
    return sanity_checks(model, data, stereo_threat(eps, "both"), checks, n=len(data),
                         objective=disparity_objective(UNREACHED))
