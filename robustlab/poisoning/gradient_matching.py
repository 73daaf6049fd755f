"""Targeted poisoning by gradient matching (Witches' Brew, Geiping et al. 2021).

The attacker wants one (or a few) chosen target images ``x_t`` classified as an adversarial class
``y_adv`` by a model trained *from scratch* on the poisoned set, and may perturb a small budget of
training images (1% of the set, drawn from the adversarial class, labels unchanged) inside an Linf ball
(16/255). The poisons are crafted on a model trained on clean data so that their training gradient points
where the target's adversarial gradient points:

    min_delta  1 - cos( grad_theta L(f(x_t), y_adv),  grad_theta mean_i L(f(x_i + delta_i), y_i) )

with one cosine over *all* parameters concatenated. Optimiser: signed Adam, 250 steps, step 0.1 x eps,
decayed by 10 at 3/8, 5/8 and 7/8 of the steps, 8 restarts keeping the lowest loss; each step sees the
poisons through a random differentiable augmentation (flips, shifts), so the poisons work under the
victim's own augmentation. All of it runs in the engine: ``SignedAdam`` on ``GradientMatchingLoss``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.gradient import SignedAdam
from ..errors import InputError
from ..objectives import GradientMatchingLoss
from ..threat import ThreatModel
from .base import POISONS, Poison, check_rate, draw_without_replacement
from .delusive import engine_seed, model_device


class DifferentiableAugment(nn.Module):
    """``model`` behind a random augmentation that gradients flow through: a horizontal flip with probability
    1/2 (``flip``) and an integer shift of up to ``shift`` pixels each way (zero padding), drawn per sample on
    every call from its own seeded generator."""

    def __init__(self, model: nn.Module, flip: bool = True, shift: int = 4, seed: int = 0):
        super().__init__()
        self.model, self.flip, self.shift = model, bool(flip), int(shift)
        self._gen = torch.Generator().manual_seed(int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.flip:
            flips = torch.rand(n, generator=self._gen) < 0.5
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
        if self.shift:
            s = self.shift
            moves = torch.randint(-s, s + 1, (n, 2), generator=self._gen)
            padded = F.pad(x, (s, s, s, s))
            dev = x.device
            rows = ((s - moves[:, 0])[:, None] + torch.arange(h)[None, :]).to(dev)   # [n, h]
            cols = ((s - moves[:, 1])[:, None] + torch.arange(w)[None, :]).to(dev)   # [n, w]
            batch = torch.arange(n, device=dev)[:, None, None]
            # advanced indices around a slice put their dims first: [n, h, w, C]
            x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return self.model(x)


class GradientMatching(Poison):
    """Witches' Brew (Geiping et al. 2021). ``model``: trained on the clean set (the crafting model);
    ``target_x`` ([T, C, H, W]): the target image(s); ``adv_class``: the class the attacker wants them in.
    ``round(rate * N)`` training images of ``adv_class`` (paper: 1%) are drawn without replacement and
    perturbed in the Linf ball of radius ``eps`` (16/255) and the box by ``SignedAdam`` (``steps`` = 250,
    step ``lr`` x eps with lr = 0.1, decays at 3/8, 5/8, 7/8, ``restarts`` = 8, the lowest loss kept) on
    ``GradientMatchingLoss``, the poisons seen through ``DifferentiableAugment`` (``augment``; ``flip`` and
    ``shift``: turn flips off for digits). Labels unchanged. Success is measured on a victim retrained
    from scratch on the poisoned set (``target_success``)."""

    name = "gradient_matching"

    def __init__(self, model: nn.Module, target_x: torch.Tensor, adv_class: int, rate: float = 0.01,
                 eps: float = 16 / 255, steps: int = 250, lr: float = 0.1, restarts: int = 8, augment: bool = True,
                 flip: bool = True, shift: int = 4, seed: int = 0):
        super().__init__(seed)
        target_x = torch.as_tensor(target_x)
        if target_x.dim() != 4:
            raise InputError(f"target_x must be images [T, C, H, W]; got {tuple(target_x.shape)}")
        self._model, self._target_x = model, target_x
        self.adv_class, self.rate, self.eps = int(adv_class), check_rate(rate, "GradientMatching"), float(eps)
        self.steps, self.lr, self.restarts = int(steps), float(lr), int(restarts)
        self.augment, self.flip, self.shift = bool(augment), bool(flip), int(shift)
        self.final_loss: float | None = None

    def objective(self) -> GradientMatchingLoss:
        """The matching objective of this target on the crafting model (its target gradient is fixed)."""
        dev = model_device(self._model)
        x_t = self._target_x.to(dev)
        y_t = torch.full((len(x_t),), self.adv_class, dtype=torch.long, device=dev)
        was_training = self._model.training
        self._model.eval()
        try:
            with torch.enable_grad():
                return GradientMatchingLoss(self._model.parameters(), self._model(x_t), y_t)
        finally:
            self._model.train(was_training)

    def matching_loss(self, x_p: torch.Tensor, y_p: torch.Tensor) -> float:
        """The paper's ``1 - cos`` at poisons ``x_p`` (no augmentation), for reports and tests."""
        dev = model_device(self._model)
        with torch.enable_grad():
            out = self._model(x_p.to(dev))
            return float(-self.objective().loss(out, y_p.to(dev))[0].detach())

    def _poison(self, x, y, generator):
        idx = draw_without_replacement(y == self.adv_class, round(self.rate * len(y)), generator)
        poisoned = torch.zeros(len(y), dtype=torch.bool)
        poisoned[idx] = True
        if not len(idx):
            return x, y, poisoned
        seed, dev = engine_seed(generator), model_device(self._model)
        net = DifferentiableAugment(self._model, self.flip, self.shift, seed) if self.augment else self._model
        attack = SignedAdam(ThreatModel("linf", self.eps), self.objective(), steps=self.steps, rel_lr=self.lr,
                            restarts=self.restarts, early_stop=False, verify=False, seed=seed)
        res = attack(net, x[idx].to(dev), y[idx].to(dev))
        x[idx] = res.x_adv.detach().to(x)
        self.final_loss = float(-res.loss[0])
        return x, y, poisoned

    def target_success(self, victim: nn.Module) -> torch.Tensor:
        """bool[T]: whether ``victim`` (retrained on the poisoned set) classifies each target as ``adv_class``."""
        with torch.no_grad():
            return victim(self._target_x.to(model_device(victim))).argmax(1).cpu() == self.adv_class


POISONS.register("gradient_matching", GradientMatching, doc=GradientMatching.__doc__.splitlines()[0])
