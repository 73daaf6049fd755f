"""Transfer attacks: craft on a surrogate (or an ensemble of surrogates), measure on a target.

Adversarial examples generalise across architectures (Szegedy et al. 2014; Papernot et al. 2016):
``transfer_matrix`` measures the source x target success table. Transferability improves with
momentum (MI-FGSM, Dong et al. 2018), input diversity (random resize-and-pad, Xie et al. 2019) and
surrogate ensembles (Liu et al. 2017).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..threat import ThreatModel, lp_norm
from .base import Attack
from .gradient import MIFGSM


class Ensemble(nn.Module):
    """Average of the logits of several models (optionally weighted)."""

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        w = torch.ones(len(models)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, x):
        return sum(w * m(x) for w, m in zip(self.weights, self.models))


class InputDiversity(nn.Module):
    """With probability p, resize the input to a random size in [size, size * max_scale) and pad it
    back to a random position at that size, then resize to the original size (Xie et al. 2019)."""

    def __init__(self, model: nn.Module, p: float = 0.5, max_scale: float = 1.15, generator: torch.Generator | None = None):
        super().__init__()
        self.model, self.p, self.max_scale = model, float(p), float(max_scale)
        self.generator = generator

    def forward(self, x):
        if torch.rand((), generator=self.generator) >= self.p:
            return self.model(x)
        h, w = x.shape[-2:]
        big = int(h * self.max_scale) + 1
        rnd = int(torch.randint(h, max(h + 1, big), (), generator=self.generator))
        resized = F.interpolate(x, size=(rnd, rnd * w // h), mode="nearest")
        pad_h, pad_w = big - resized.shape[-2], big * w // h - resized.shape[-1]
        top = int(torch.randint(0, pad_h + 1, (), generator=self.generator))
        left = int(torch.randint(0, max(pad_w, 0) + 1, (), generator=self.generator))
        padded = F.pad(resized, (left, max(pad_w, 0) - left, top, pad_h - top))
        return self.model(F.interpolate(padded, size=(h, w), mode="nearest"))


def _default_attack(threat: ThreatModel, seed: int) -> MIFGSM:
    """MI-FGSM, 10 steps, run to the end, returning the last iterate."""
    return MIFGSM(threat, steps=10, early_stop=False, seed=seed, keep_last=True)


def _craft(source, x, y, threat: ThreatModel, attack: Attack | None, diversity: float, seed: int):
    """Run the attack on the surrogate: a model, or a list of models (their logit ensemble),
    seen through input diversity when ``diversity > 0``."""
    surrogate = Ensemble(list(source)) if isinstance(source, (list, tuple)) else source
    if diversity > 0:
        surrogate = InputDiversity(surrogate, p=diversity, generator=torch.Generator().manual_seed(seed))
    return (attack or _default_attack(threat, seed))(surrogate, x, y)


@dataclass
class TransferResult:
    x_adv: torch.Tensor
    source_success: torch.Tensor
    target_success: torch.Tensor
    target_correct_clean: torch.Tensor
    norms: torch.Tensor

    @property
    def transfer_rate(self) -> float:
        """Success on the target among points it classifies correctly when clean."""
        ok = self.target_correct_clean
        return float(self.target_success[ok].float().mean()) if ok.any() else float("nan")

    def summary(self) -> dict:
        return {"source_success_rate": float(self.source_success.float().mean()), "transfer_rate": self.transfer_rate,
                "queries_per_sample_on_target": 2, "median_norm": float(self.norms.median())}


def _decide(target, x) -> torch.Tensor | list:
    with torch.no_grad():
        out = target(x)
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        return out.argmax(1)
    return out


def transfer_attack(source: nn.Module | Sequence[nn.Module], target: Callable, x: torch.Tensor, y: torch.Tensor,
                    threat: ThreatModel, attack: Attack | None = None, diversity: float = 0.0,
                    seed: int = 0) -> TransferResult:
    """Craft on `source` (a model or a list: an ensemble) and measure on `target` (a model or an
    oracle): 2 target queries per sample (clean and adversarial). Default attack: MI-FGSM, 10 steps,
    run to the end (no early stopping: more loss on the surrogate transfers better)."""
    res = _craft(source, x, y, threat, attack, diversity, seed)
    clean = _decide(target, x)
    adv = _decide(target, res.x_adv)
    if isinstance(clean, torch.Tensor):
        correct, fooled = clean == y, adv != y
    else:
        ys = y.tolist() if isinstance(y, torch.Tensor) else list(y)
        correct = torch.tensor([c == t for c, t in zip(clean, ys)])
        fooled = torch.tensor([a != t for a, t in zip(adv, ys)])
    return TransferResult(res.x_adv, res.success, fooled & correct, correct, lp_norm(res.x_adv - x, threat.norm))


@dataclass
class TransferMatrix:
    names: list[str]
    rates: torch.Tensor  # [source, target]: success on target among its clean-correct points

    def to_markdown(self) -> str:
        head = "| source \\ target | " + " | ".join(self.names) + " |"
        sep = "|---" * (len(self.names) + 1) + "|"
        rows = [f"| {s} | " + " | ".join(f"{float(v):.1%}" for v in self.rates[i]) + " |" for i, s in enumerate(self.names)]
        return "\n".join([head, sep, *rows])


def transfer_matrix(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                    attack_factory: Callable[[ThreatModel], Attack] | None = None, diversity: float = 0.0,
                    seed: int = 0) -> TransferMatrix:
    """Source x target success rates; the diagonal is the white-box success rate."""
    names = list(models)
    rates = torch.zeros(len(names), len(names))
    for i, s in enumerate(names):
        attack = attack_factory(threat) if attack_factory else None
        res = _craft(models[s], x, y, threat, attack, diversity, seed)
        for j, t in enumerate(names):
            with torch.no_grad():
                correct = models[t](x).argmax(1) == y
                fooled = models[t](res.x_adv).argmax(1) != y
            rates[i, j] = (fooled & correct).sum() / correct.sum().clamp_min(1)
    return TransferMatrix(names, rates)


__all__ = ["Ensemble", "InputDiversity", "TransferMatrix", "TransferResult", "transfer_attack", "transfer_matrix"]
