"""Defending a stereo network: adversarial fine-tuning with (a) the adversarial disparity loss,
(b) a left-right feature-consistency regulariser and (c) local linearity regularisation of the
disparity loss, each switchable.

(b): features are L2-normalised (otherwise the term is minimised by shrinking them); the right
view's 1/4-resolution features are warped by d/4 with the same grid_sample convention as the data
(left(y, x) matches right(y, x - d)) and compared with the left features on non-occluded pixels.
(c): gamma = |l(x + delta) - l(x) - delta^T grad_x l(x)| maximised over the eps ball by a few sign
steps with grad_x l(x) fixed, then added (and back-propagated through grad_x l, double backprop).
Always evaluate a defended model with attacks re-optimised against it (``evaluate_defense``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...attacks import PGD, Square
from ...evaluation.sanity import Check, SanityReport
from .attacks import stereo_attack
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


def _disparity_loss(pred, disparity, mask):
    m = mask.bool()
    return F.smooth_l1_loss(pred[m], disparity[m])


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


def _local_linearity(model, x, disparity, mask, eps_mask, eps, steps):
    """gamma for the disparity loss (differentiable in the weights)."""
    x_req = x.detach().requires_grad_(True)
    l_x = _disparity_loss(model(x_req), disparity, mask)
    grad, = torch.autograd.grad(l_x, x_req, create_graph=True)
    g_fixed, l_fixed = grad.detach(), l_x.detach()
    delta = (2 * torch.rand_like(x) - 1) * eps * eps_mask
    was = model.training
    model.eval()
    for _ in range(steps):
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            l_d = _disparity_loss(model((x + d).clamp(0, 1)), disparity, mask)
            g = (l_d - l_fixed - (d * g_fixed).sum()).abs()
            step, = torch.autograd.grad(g, d)
        delta = ((delta + 0.25 * eps * step.sign()) * eps_mask).clamp(-eps, eps)
    model.train(was)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    l_delta = _disparity_loss(model(x + delta), disparity, mask)
    return (l_delta - l_x - (delta * grad).sum()).abs()


def defend_stereo(model: StereoNet, data: StereoDataset, cfg: DefenseConfig) -> list[dict]:
    """Fine-tune `model` in place; returns per-step losses."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    threat = stereo_threat(cfg.eps, cfg.views)
    eps_mask = threat.mask[None]
    history = []
    step = 0
    while step < cfg.steps:
        for x, (disp, mask) in data.batches(cfg.batch_size, shuffle=True, generator=gen):
            if cfg.adversarial:
                model.eval()  # BN statistics are not updated by the attack
                attack = PGD(threat, disparity_objective(100.0), steps=cfg.attack_steps, step_size=2.5 * cfg.eps / cfg.attack_steps,
                             early_stop=False, seed=cfg.seed + step)
                attack.keep_last, attack.judge_final, attack.verify = True, False, False
                x_train = attack(model, x, (disp, mask)).x_adv.detach()
            else:
                x_train = x
            model.train()
            loss = _disparity_loss(model(x_train), disp, mask)
            record = {"step": step, "disparity_loss": float(loss.detach())}
            if cfg.lr_consistency > 0:
                c = lr_feature_consistency(model, x_train, disp, mask)
                loss = loss + cfg.lr_consistency * c
                record["lr_consistency"] = float(c.detach())
            if cfg.llr > 0:
                gamma = _local_linearity(model, x, disp, mask, eps_mask, cfg.eps, cfg.llr_steps)
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
    """Clean EPE and the EPE under PGD re-optimised against this model (an adaptive attack)."""
    res = stereo_attack(model, data.x, data.disparity, data.mask, eps=eps, views=views, steps=steps, seed=seed)
    return {"clean": evaluate_stereo(model, data), "adaptive": evaluate_stereo(model, data, x=res.x_adv)}


def stereo_sanity_checks(model, data: StereoDataset, eps: float = 0.02, checks: str = "all") -> SanityReport:
    """Gradient-masking checks for a disparity model (the classification checks, restated for EPE):
    deterministic outputs; finite, non-zero input gradients; PGD-10 at least as strong as FGSM; and
    with ``checks="all"``: 5x more PGD steps (2 restarts) within 15% of PGD-10, Square (300 queries)
    no stronger than PGD-10, and a larger eps (0.1) raising the error further."""
    model.eval()
    x, target = data.x, (data.disparity, data.mask)
    objective = disparity_objective(UNREACHED)
    threat = stereo_threat(eps, "both")

    def epe(x_adv):
        return evaluate_stereo(model, data, x=x_adv)["epe"]

    out = []
    with torch.no_grad():
        diff = float((model(x[:2]) - model(x[:2])).abs().max())
    out.append(Check("randomness", "pass" if diff <= 1e-4 else "warn",
                     "outputs are deterministic" if diff <= 1e-4 else
                     f"outputs differ between identical calls (max {diff:.3g} px): attack with EOT", {"max_abs_diff": diff}))
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(objective.loss(model(x_req), target).sum(), x_req)
    norms = grad.flatten(1).norm(dim=1)
    finite = bool(torch.isfinite(grad).all())
    zero = float((norms < 1e-12).float().mean())
    out.append(Check("gradients", "fail" if not finite else "warn" if zero > 0.1 else "pass",
                     "input gradients are finite and non-zero" if finite and zero <= 0.1 else
                     f"input gradients are {'not finite' if not finite else f'zero for {zero:.0%} of pairs'} (masked gradients)",
                     {"zero_gradient_fraction": zero, "finite": finite}))
    pgd = epe(stereo_attack(model, x, *target, eps=eps).x_adv)
    fgsm = epe(stereo_attack(model, x, *target, eps=eps, method="fgsm").x_adv)
    out.append(Check("one_step_vs_iterative", "warn" if fgsm > 1.02 * pgd else "pass",
                     f"PGD-10 EPE {pgd:.2f} vs FGSM {fgsm:.2f}", {"pgd10_epe": pgd, "fgsm_epe": fgsm}))
    if checks == "all":
        long = epe(PGD(threat, objective, steps=50, step_size=eps / 10, restarts=2, early_stop=False)(model, x, target).x_adv)
        out.append(Check("convergence", "warn" if long > 1.15 * pgd else "pass",
                         f"PGD-50 x 2 restarts EPE {long:.2f} vs PGD-10 {pgd:.2f}"
                         + (": PGD-10 has not converged, report the stronger number" if long > 1.15 * pgd else ""),
                         {"pgd10_epe": pgd, "pgd50x2_epe": long}))
        square = epe(Square(threat, objective, max_queries=300, early_stop=False)(model, x, target).x_adv)
        out.append(Check("black_box_vs_white_box", "warn" if square > pgd else "pass",
                         f"Square-300 EPE {square:.2f} vs PGD-10 {pgd:.2f}"
                         + (": the black-box attack is stronger, gradients are uninformative" if square > pgd else ""),
                         {"square300_epe": square, "pgd10_epe": pgd}))
        big_eps = max(0.1, 5 * eps)
        big = epe(PGD(stereo_threat(big_eps, "both"), objective, steps=10, step_size=big_eps / 4, early_stop=False)(model, x, target).x_adv)
        out.append(Check("large_eps", "warn" if big <= pgd else "pass",
                         f"EPE at eps {big_eps:g}: {big:.2f} vs {pgd:.2f} at eps {eps:g}", {"large_eps_epe": big, "pgd10_epe": pgd}))
    return SanityReport(out)
