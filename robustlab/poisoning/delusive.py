"""Delusive poisons: every training image moved a little, labels unchanged, so that a model trained on them
learns little that holds on clean data.

- ``AdversarialPoison`` (Fowl et al. 2021, "Adversarial Examples Make Strong Poisons"): class-targeted PGD
  on a trained model, towards a fixed permutation of the classes, ``t = (y + shift) mod K``.
- ``Unlearnable`` (Huang et al. 2021, "Unlearnable Examples"): sample-wise error-minimising noise, the
  min-min problem ``min_theta E min_{||delta||<=eps} CE(f(x + delta), y)``, solved by alternating a few
  training steps of the model on ``x + delta`` with PGD steps that *minimise* the CE over ``delta``.

Both perturb inside an Linf ball (8/255) and the box through the engine (``robustlab.attacks.PGD`` with
``TargetedCE``: towards the permuted class, or towards the sample's own label, which is error minimisation).
Tao et al. 2021 show that adversarial training at a budget at least the poison's defeats them.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD
from ..objectives import TargetedCE
from ..progress import progress_bar
from ..threat import ThreatModel
from .base import POISONS, Poison, check_rate, draw_without_replacement


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def attack_in_batches(make_attack: Callable[[torch.Tensor], PGD], model: nn.Module, x: torch.Tensor,
                      target: torch.Tensor, batch_size: int, desc: str = "", progress: bool = False) -> torch.Tensor:
    """The engine's points for ``x`` (on the CPU), batch by batch on the model's device. ``make_attack(rows)``
    builds the attack of the rows ``rows`` (so per-batch starting points can be passed)."""
    dev, out = model_device(model), torch.empty_like(x)
    starts = range(0, len(x), batch_size)
    for s in progress_bar(starts, total=len(starts), desc=desc, unit="batch", disable=not progress):
        rows = torch.arange(s, min(s + batch_size, len(x)))
        res = make_attack(rows)(model, x[rows].to(dev), target[rows].to(dev))
        out[rows] = res.x_adv.detach().to(out)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` that ``model`` (in its current mode) classifies as ``y``."""
    dev, right = model_device(model), 0
    for s in range(0, len(x), batch_size):
        right += int((model(x[s:s + batch_size].to(dev)).argmax(1).cpu() == y[s:s + batch_size]).sum())
    return right / max(len(x), 1)


def draw_rows(n: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """bool[n]: ``round(rate * n)`` rows drawn without replacement (all of them at rate 1)."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[draw_without_replacement(torch.ones(n, dtype=torch.bool), round(rate * n), generator)] = True
    return mask


def engine_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2 ** 31 - 1, (1,), generator=generator))


class AdversarialPoison(Poison):
    """Adversarial poisons (Fowl et al. 2021): each poisoned training image becomes a class-targeted
    adversarial example of a trained ``model``, towards ``(y + shift) mod K`` (a fixed permutation of the
    classes), found by the engine's PGD maximising ``-CE(f(x + delta), t)`` over the Linf ball of radius
    ``eps`` (paper: 8/255; 250 steps by default) intersected with [0, 1]; labels unchanged. ``rate``: the share of the
    training set poisoned (paper: all of it), drawn without replacement. The engine keeps the point of the
    lowest target CE over all steps (no early stop at the first success: the poison should be confident)."""

    name = "adversarial_poison"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 250, step_size: float | None = None,
                 shift: int = 1, rate: float = 1.0, batch_size: int = 256, progress: bool = False, seed: int = 0):
        super().__init__(seed)
        self._model = model
        self.eps, self.steps, self.step_size = float(eps), int(steps), step_size
        self.shift, self.rate, self.batch_size = int(shift), check_rate(rate, "AdversarialPoison"), int(batch_size)
        self._progress = progress

    def target_classes(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return (y + self.shift) % num_classes

    def _poison(self, x, y, generator):
        poisoned = draw_rows(len(y), self.rate, generator)
        idx = torch.nonzero(poisoned).flatten()
        k = int(self._model_classes(x))
        threat, seed = ThreatModel("linf", self.eps), engine_seed(generator)
        x[idx] = attack_in_batches(
            lambda rows: PGD(threat, TargetedCE(), steps=self.steps, step_size=self.step_size, early_stop=False,
                             verify=False, seed=seed),
            self._model, x[idx], self.target_classes(y[idx], k), self.batch_size, "adversarial poisons",
            self._progress)
        return x, y, poisoned

    def _model_classes(self, x: torch.Tensor) -> int:
        with torch.no_grad():
            return self._model(x[:1].to(model_device(self._model))).shape[1]


def sgd_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
              batch_size: int, generator: torch.Generator) -> None:
    """``steps`` plain minibatch steps of cross-entropy on ``(x, y)`` (batches drawn with the generator)."""
    dev = model_device(model)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[rows].to(dev)), y[rows].to(dev)).backward()
        optimizer.step()
    model.eval()


class Unlearnable(Poison):
    """Unlearnable examples (Huang et al. 2021): sample-wise error-minimising noise in the Linf ball of radius
    ``eps`` (paper: 8/255) and the box. Rounds of: ``train_steps`` minibatch SGD steps of a copy of ``model``
    (an untrained net of the victim's kind; the paper: 10 steps, lr 0.1, momentum 0.9) on ``x + delta``, then
    ``pgd_steps`` engine PGD steps (paper: 20, step eps/10) on every sample minimising CE(f(x + delta), y)
    (``TargetedCE`` towards the sample's own label), continued from the current delta; stop once the model's
    accuracy on ``x + delta`` reaches ``stop_accuracy`` (paper: 0.99) or after ``max_rounds``. Labels
    unchanged; ``rate`` of the set is poisoned (paper: all). ``train_step(model, x, y, generator)``: your own
    training steps instead of the plain SGD ones. ``rounds`` afterwards: the rounds it took and the accuracies."""

    name = "unlearnable"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, pgd_steps: int = 20, step_size: float | None = None,
                 train_steps: int = 10, lr: float = 0.1, momentum: float = 0.9, train_batch_size: int = 128,
                 stop_accuracy: float = 0.99, max_rounds: int = 100, rate: float = 1.0, batch_size: int = 512,
                 train_step: Callable | None = None, progress: bool = False, seed: int = 0):
        super().__init__(seed)
        self._model, self._train_step, self._progress = model, train_step, progress
        self.eps, self.pgd_steps, self.step_size = float(eps), int(pgd_steps), step_size
        self.train_steps, self.lr, self.momentum = int(train_steps), float(lr), float(momentum)
        self.train_batch_size, self.stop_accuracy, self.max_rounds = int(train_batch_size), float(stop_accuracy), \
            int(max_rounds)
        self.rate, self.batch_size = check_rate(rate, "Unlearnable"), int(batch_size)
        self._rounds: list[float] = []

    @property
    def rounds(self) -> list[float]:
        """The model's accuracy on x + delta after each round of the last ``poison`` call."""
        return list(self._rounds)

    def _poison(self, x, y, generator):
        poisoned = draw_rows(len(y), self.rate, generator)
        idx = torch.nonzero(poisoned).flatten()
        model = copy.deepcopy(self._model)
        step = self._train_step or self._sgd(model)
        x_p, y_p = x[idx].clone(), y[idx]
        threat, seed, self._rounds = ThreatModel("linf", self.eps), engine_seed(generator), []
        alpha = self.step_size if self.step_size is not None else self.eps / 10
        for _ in progress_bar(range(self.max_rounds), desc="error-minimising noise", disable=not self._progress):
            step(model, x_p, y_p, generator)
            x_p = attack_in_batches(
                lambda rows: PGD.for_training(threat, TargetedCE(), steps=self.pgd_steps, step_size=alpha,
                                              random_start=False, starting_points=x_p[rows], seed=seed),
                model, x[idx], y_p, self.batch_size)
            self._rounds.append(accuracy(model, x_p, y_p))
            if self._rounds[-1] >= self.stop_accuracy:
                break
        x[idx] = x_p
        return x, y, poisoned

    def _sgd(self, model: nn.Module) -> Callable:
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)
        return lambda m, xs, ys, gen: sgd_steps(m, opt, xs, ys, self.train_steps, self.train_batch_size, gen)


POISONS.register("adversarial_poison", AdversarialPoison, doc=AdversarialPoison.__doc__.splitlines()[0])
POISONS.register("unlearnable", Unlearnable, doc=Unlearnable.__doc__.splitlines()[0])
