"""Function-preserving reparametrisation of ReLU networks (Dinh et al. 2017) and the invariance
report: which measures change under it (and so cannot mean "flatness" by themselves)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..errors import InputError

log = logging.getLogger(__name__)

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
               nn.Dropout, nn.Identity)


def rescalable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(scaled, compensating) module names: the output of the first (a Linear/Conv, or the batch
    norm right after it) reaches the second (a Linear/Conv) through positively homogeneous ops only
    (ReLU, max/avg pooling, flatten), in module registration order (a sequential chain)."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    pairs = []
    for i, (name, mod) in enumerate(leaves):
        if not isinstance(mod, AFFINE):
            continue
        j = i + 1
        out_name = name
        if j < len(leaves) and isinstance(leaves[j][1], nn.modules.batchnorm._BatchNorm):
            out_name = leaves[j][0] if leaves[j][1].affine else None
            j += 1
        while j < len(leaves) and isinstance(leaves[j][1], HOMOGENEOUS):
            j += 1
        if out_name is not None and j < len(leaves) and isinstance(leaves[j][1], AFFINE) and j > i + 1:
            pairs.append((out_name, leaves[j][0]))
    return pairs


def rescale(model: nn.Module, alpha: float, pairs: str | Sequence[int] = "alternate",
            example: torch.Tensor | None = None) -> nn.Module:
    """A new model computing the same function with layers rescaled: ``(W1, b1, W2) -> (a W1, a b1,
    W2 / a)`` (Dinh et al. 2017, ReLU(a z) = a ReLU(z) for a > 0).

    Where a batch norm follows the first layer its affine (gamma, beta) is scaled instead, which is
    exact with batch or running statistics alike. ``pairs``: "alternate" (pairs 0, 2, 4, ... of
    :func:`rescalable_pairs`, so every second hidden layer changes), "all", "first", or indices.
    The model must be a sequential chain in registration order; pass ``example`` inputs to check
    that the function is preserved (raises InputError if not). The input model is not modified.
    """
    if not alpha > 0:
        raise InputError(f"alpha must be > 0 (ReLU is only positively homogeneous), got {alpha}")
    new = copy.deepcopy(model)
    found = rescalable_pairs(new)
    if not found:
        raise InputError("no rescalable layer pair found: rescale needs Linear/Conv layers joined by ReLU/pooling")
    if pairs == "alternate":
        chosen = found[::2]
    elif pairs == "all":
        chosen = found
    elif pairs == "first":
        chosen = found[:1]
    else:
        try:
            chosen = [found[i] for i in pairs]
        except (IndexError, TypeError):
            raise InputError(f"pairs must be 'alternate', 'all', 'first' or indices below {len(found)}") from None
    mods = dict(new.named_modules())
    with torch.no_grad():
        for a_name, b_name in chosen:
            a, b = mods[a_name], mods[b_name]
            a.weight.mul_(alpha)
            if a.bias is not None:
                a.bias.mul_(alpha)
            b.weight.div_(alpha)
    if example is not None:
        with torch.no_grad():
            modes = {m: m.training for m in model.modules()}  # per module: mixed modes come back as they were
            new_modes = {m: m.training for m in new.modules()}
            model.eval(), new.eval()
            try:
                ref = model(example)
                diff = float((ref - new(example)).abs().max())
            finally:
                for m, t in [*modes.items(), *new_modes.items()]:
                    m.training = t
        if diff > 1e-4 * max(1.0, float(ref.abs().max())):
            raise InputError(f"rescale changed the model's outputs by {diff:.3g}: it is not a ReLU chain in "
                             "registration order (skip connections?); choose `pairs` explicitly")
    return new


@dataclass
class InvarianceReport:
    """``values[measure][i]`` at ``alphas[i]``; ``relative_change[measure]`` = max |v/v(1) - 1|."""

    alphas: list[float]
    values: dict[str, list[float]]
    relative_change: dict[str, float]
    invariant: dict[str, bool]
    tolerance: float
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"alphas": self.alphas, "values": self.values, "relative_change": self.relative_change,
                "invariant": self.invariant, "tolerance": self.tolerance}

    def to_markdown(self) -> str:
        head = "| measure | " + " | ".join(f"alpha={a:g}" for a in self.alphas) + " | max rel. change | invariant |"
        sep = "|" + "---|" * (len(self.alphas) + 3)
        rows = [f"| {m} | " + " | ".join(f"{v:.4g}" for v in vals) +
                f" | {self.relative_change[m]:.3g} | {'yes' if self.invariant[m] else 'no'} |"
                for m, vals in self.values.items()]
        return "\n".join([head, sep, *rows])


def invariance_report(model: nn.Module, measures: dict[str, Callable[[nn.Module], float]] | Sequence[str],
                      alphas: Sequence[float] = (0.25, 1.0, 4.0), data: Any = None, tolerance: float = 0.05,
                      example: torch.Tensor | None = None, **kwargs) -> InvarianceReport:
    """Evaluate each measure on ``rescale(model, alpha)`` for every alpha (1.0 is always included).

    ``measures`` is ``{name: f(model) -> float}`` or names of built-in measures (see
    :data:`robustlab.geometry.MEASURES`), which then take ``data`` and ``kwargs``. A measure is
    reported invariant when its largest relative change from alpha = 1 is below ``tolerance``.
    """
    from .measures import measure_fn

    if not isinstance(measures, dict):
        measures = {name: measure_fn(name, data, **kwargs) for name in measures}
    alphas = sorted(set(float(a) for a in alphas) | {1.0})
    values: dict[str, list[float]] = {m: [] for m in measures}
    for a in alphas:
        net = model if a == 1.0 else rescale(model, a, example=example)
        for name, fn in measures.items():
            values[name].append(float(fn(net)))
    i1 = alphas.index(1.0)
    rel = {m: max(abs(v / vals[i1] - 1) if vals[i1] != 0 else abs(v) for v in vals) for m, vals in values.items()}
    return InvarianceReport(alphas, values, rel, {m: r < tolerance for m, r in rel.items()}, tolerance)
