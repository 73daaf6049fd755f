"""Representation inversion, feature visualisation and class-conditional synthesis
(Engstrom et al. 2019, "Adversarial robustness as a prior for learned representations";
Santurkar et al. 2019, "Image synthesis with a single (robust) classifier").

All three are L2 PGD runs of the attack engine (``robustlab.attacks.PGD``) over the image, with a
radius ``eps`` around the seed (large = effectively unconstrained) and the input box [0, 1]:

- inversion: the model is R = ``layer``'s activations and the objective is the relative distance
  ``||R(x) - R(x_t)|| / ||R(x_t)||`` (minimised); from noise 0.5 + N(0, 1)/20 or another image;
- feature visualisation: maximise one unit R_i(x);
- synthesis: seeds drawn from a Gaussian fitted to each class (at ``seed_size`` resolution,
  upsampled), then a targeted L2 PGD on cross-entropy towards the class.

Each returns its images and fidelity numbers (distance reached, whether the model classifies the
result as the target class).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD
from ..data import Dataset
from ..errors import InputError
from ..objectives import Objective, TargetedCE
from ..runtime import device_of, eval_mode
from ..threat import ThreatModel
from .layers import activations


class RepresentationDistance(Objective):
    """loss = -||R(x) - t|| / ||t|| per sample (maximised = distance minimised); success = distance < tol."""

    name = "representation_distance"

    def __init__(self, tol: float = 0.0):
        self.tol = float(tol)

    def distance(self, output, target):
        t = target.reshape(target.shape[0], -1)
        return (output.reshape(output.shape[0], -1) - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)

    def loss(self, output, target):
        return -self.distance(output, target)

    def success(self, output, target):
        return self.distance(output, target) < self.tol


class UnitActivation(Objective):
    """loss = R_i(x) for the unit index given as target [B]; never 'succeeds' (runs all steps)."""

    name = "unit_activation"

    def loss(self, output, target):
        return output.gather(1, target.long()[:, None]).squeeze(1)

    def success(self, output, target):
        return torch.zeros(output.shape[0], dtype=torch.bool, device=output.device)


class _Layer(nn.Module):
    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x):
        return activations(self.model, x, self.layer)


def noise_seed(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """0.5 + N(0, 1)/20, clamped to [0, 1] (Engstrom et al.'s inversion seed)."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + torch.randn(like.shape, generator=g, dtype=like.dtype) / 20).clamp(0, 1).to(like.device)


@dataclass
class InversionResult:
    x: torch.Tensor                # the images found
    distance: torch.Tensor         # relative representation distance reached, per sample
    seed_distance: torch.Tensor    # the same at the seed
    predicted: torch.Tensor        # the model's class of x
    target_class: torch.Tensor     # the model's class of the target images
    settings: dict
    image_distance: torch.Tensor | None = None     # ||x - x_t|| / ||x_t|| in pixel space
    image_correlation: torch.Tensor | None = None  # Pearson correlation of x and x_t's pixels (offset/contrast-free)

    @property
    def same_class(self) -> torch.Tensor:
        return self.predicted == self.target_class

    def summary(self) -> dict:
        return {"distance_mean": float(self.distance.mean()), "seed_distance_mean": float(self.seed_distance.mean()),
                "classified_as_target": float(self.same_class.float().mean()), "n": int(self.x.shape[0]),
                **({"image_distance_mean": float(self.image_distance.mean())} if self.image_distance is not None else {}),
                **({"image_correlation_mean": float(self.image_correlation.mean())}
                   if self.image_correlation is not None else {}),
                **self.settings}


def invert(model: nn.Module, target_x: torch.Tensor, seed_x: torch.Tensor | None = None, layer: str = "penultimate",
           steps: int = 500, step_size: float = 0.1, eps: float = 1000.0, tol: float = 0.0,
           anneal: bool = True) -> InversionResult:
    """Find x near ``seed_x`` (default: noise) with R(x) close to R(target_x).

    Minimises ||R(x) - R(x_t)|| / ||R(x_t)|| by ``steps`` L2-normalised gradient steps of size
    ``step_size`` inside the L2 ball of radius ``eps`` around the seed and the box [0, 1]; stops a
    sample early once its distance is below ``tol``. The best iterate per sample is returned.
    With ``anneal`` the steps run in three phases (1/2 at ``step_size``, 1/4 at /5, 1/4 at /25): a
    fixed normalised step cannot get closer than about its own size to the optimum.
    """
    if seed_x is None:
        seed_x = noise_seed(target_x)
    if seed_x.shape != target_x.shape:
        raise InputError(f"seed_x {tuple(seed_x.shape)} and target_x {tuple(target_x.shape)} must have the same shape")
    with eval_mode(model):
        rep = _Layer(model, layer)
        objective = RepresentationDistance(tol)
        with torch.no_grad():
            target = rep(target_x)
            d0 = objective.distance(rep(seed_x), target)
        x_cur = seed_x.detach()
        for n_steps, size in _phases(steps, step_size, anneal):
            attack = PGD(ThreatModel("l2", eps), objective, steps=n_steps, step_size=size, random_start=False,
                         starting_points=x_cur)
            x_cur = attack(rep, seed_x.detach(), target).x_adv
        with torch.no_grad():
            dist = objective.distance(rep(x_cur), target)
            pred = model(x_cur).argmax(1)
            tcls = model(target_x).argmax(1)
        settings = {"layer": layer, "steps": steps, "step_size": step_size, "eps": eps, "anneal": anneal}
        img = ((x_cur - target_x).flatten(1).norm(dim=1) / target_x.flatten(1).norm(dim=1).clamp_min(1e-12)).cpu()
        a = x_cur.flatten(1) - x_cur.flatten(1).mean(1, keepdim=True)
        b = target_x.flatten(1) - target_x.flatten(1).mean(1, keepdim=True)
        corr = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).cpu()
        return InversionResult(x_cur, dist.cpu(), d0.cpu(), pred.cpu(), tcls.cpu(), settings, img, corr)


def _phases(steps: int, step_size: float, anneal: bool) -> list[tuple[int, float]]:
    if not anneal or steps < 4:
        return [(steps, step_size)]
    a, b = steps // 2, steps // 4
    return [(a, step_size), (b, step_size / 5), (steps - a - b, step_size / 25)]


def visualize_feature(model: nn.Module, unit: int | torch.Tensor, seed_x: torch.Tensor, layer: str = "penultimate",
                      steps: int = 200, step_size: float = 0.1, eps: float = 1000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise unit(s) R_unit(x) from ``seed_x``; returns (images, activation reached, per sample)."""
    with eval_mode(model):
        rep = _Layer(model, layer)
        units = torch.as_tensor(unit, dtype=torch.long, device=seed_x.device).expand(seed_x.shape[0]).clone()
        res = PGD(ThreatModel("l2", eps), UnitActivation(), steps=steps, step_size=step_size,
                  random_start=False)(rep, seed_x.detach(), units)
        with torch.no_grad():
            act = rep(res.x_adv).gather(1, units[:, None]).squeeze(1)
        return res.x_adv, act.cpu()


@dataclass
class ClassGaussian:
    """Per-class Gaussian over images downsampled to ``size`` (mean [K, D], Cholesky factor [K, D, D])."""

    mean: torch.Tensor
    chol: torch.Tensor
    size: tuple[int, int]
    shape: tuple[int, ...]

    @classmethod
    def fit(cls, data: Dataset, size: int = 14, shrinkage: float = 0.1) -> "ClassGaussian":
        """Fit mean and covariance per class; the covariance is shrunk towards its diagonal
        (``shrinkage``) plus 1e-4 I so it stays positive definite with few samples."""
        x = F.interpolate(data.x, size=(size, size), mode="bilinear", align_corners=False).flatten(1).double()
        means, chols = [], []
        for k in range(data.num_classes):
            xk = x[data.y == k]
            if xk.shape[0] < 2:
                raise InputError(f"class {k} has fewer than 2 samples; cannot fit its Gaussian")
            mu = xk.mean(0)
            cov = torch.cov(xk.t())
            eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            cov = (1 - shrinkage) * cov + shrinkage * torch.diag(torch.diag(cov)) + 1e-4 * eye
            means.append(mu)
            chols.append(torch.linalg.cholesky(cov))
        return cls(torch.stack(means).float(), torch.stack(chols).float(), (size, size), tuple(data.x.shape[1:]))

    def sample(self, classes: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Images of ``classes`` (on the Gaussian's device); the noise comes from a CPU generator seeded
        with ``seed``, so a seed gives the same images on every device."""
        classes = torch.as_tensor(classes, dtype=torch.long, device=self.mean.device)
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(classes.shape[0], self.mean.shape[1], generator=g).to(self.mean.device)
        flat = self.mean[classes] + torch.einsum("bij,bj->bi", self.chol[classes], z)
        c = self.shape[0]
        small = flat.reshape(-1, c, *self.size)
        return F.interpolate(small, size=self.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


def synthesize(model: nn.Module, gaussian: ClassGaussian, classes, eps: float = 10.0, steps: int = 60,
               step_size: float | None = None, seed: int = 0) -> dict:
    """Class-conditional synthesis: Gaussian seeds, then targeted L2 PGD on CE (radius ``eps``).

    Returns seeds, images, success (classified as the class) and the class probability reached.
    """
    with eval_mode(model):
        device = device_of(model)
        classes = torch.as_tensor(classes, dtype=torch.long, device=device)
        seeds = gaussian.sample(classes, seed).to(device)
        attack = PGD(ThreatModel("l2", eps), TargetedCE(), steps=steps,
                     step_size=step_size if step_size is not None else 2.5 * eps / steps, random_start=False,
                     early_stop=False, seed=seed)
        res = attack(model, seeds, classes)
        with torch.no_grad():
            p = F.softmax(model(res.x_adv), 1).gather(1, classes[:, None]).squeeze(1)
            p0 = F.softmax(model(seeds), 1).gather(1, classes[:, None]).squeeze(1)
        return {"seeds": seeds, "x": res.x_adv, "success": res.success.cpu(), "prob": p.cpu(), "seed_prob": p0.cpu(),
                "settings": {"eps": eps, "steps": steps, "seed_size": list(gaussian.size)}}
