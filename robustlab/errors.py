"""Exceptions and input checks shared by every layer.

Every check raises an error whose message says what is wrong and how to fix it.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence

import torch


class RobustlabError(Exception):
    """Base class of robustlab's own errors."""


class InputError(RobustlabError, ValueError):
    """An argument has the wrong shape, range or value."""


class ModelOutputError(RobustlabError, RuntimeError):
    """The model returned NaN/inf outputs or gradients."""


class CheckpointError(RobustlabError, RuntimeError):
    """A checkpoint is corrupt or does not match the model/config."""


class UnknownNameError(RobustlabError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def unknown_name(kind: str, name: str, known: Sequence[str]) -> UnknownNameError:
    return UnknownNameError(
        f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known))}"
    )


def check_eps(eps: float) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(
            f"eps must be finite and >= 0, got {eps!r}; use eps=0 for a clean evaluation"
        )
    return value


def check_positive_int(value, name: str) -> int:
    """`value` as an int >= 1 (a batch size, a count), or InputError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_batch(x: torch.Tensor, target=None, bounds: tuple[float, float] = (0.0, 1.0),
                extra: Sequence[torch.Tensor] = ()) -> list[float]:
    """Check an input batch lies in `bounds` and matches its targets in length. ``extra``: scalars on the
    inputs' device read on the host together with the inputs' extremes (one read); returns their values."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise InputError(
            f"inputs must have a batch dimension first, got shape {tuple(x.shape)}; "
            "use x.unsqueeze(0) for a single sample"
        )
    if x.shape[0] == 0:
        raise InputError(f"empty batch: the inputs have shape {tuple(x.shape)}; pass at least one sample")
    if not torch.is_floating_point(x):
        raise InputError(
            f"inputs must be floating point in [{bounds[0]}, {bounds[1]}], got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255"
        )
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    # one host read; NaN and +-inf propagate to the extremes
    lo, hi, *values = torch.stack([v.to(x.device, dtype) for v in (*torch.aminmax(x), *extra)]).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError("inputs contain NaN or inf")
    tol = 1e-6
    if lo < bounds[0] - tol or hi > bounds[1] + tol:
        raise InputError(
            f"inputs lie in [{lo:.4g}, {hi:.4g}], outside the bounds [{bounds[0]}, {bounds[1]}]; "
            "attacks work in un-normalised input space: pass raw inputs and wrap the model "
            "in robustlab.Normalize(mean, std), or set ThreatModel(bounds=...)"
        )
    if target is not None:
        n = target_length(target)
        if n is not None and n != x.shape[0]:
            raise InputError(
                f"batch size mismatch: {x.shape[0]} inputs but {n} targets"
            )
    return values


def target_length(target) -> int | None:
    if isinstance(target, torch.Tensor):
        return target.shape[0] if target.dim() > 0 else 1
    if isinstance(target, tuple) and target and all(isinstance(t, (torch.Tensor, list)) for t in target) and \
            not all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in target):
        lengths = {t.shape[0] if isinstance(t, torch.Tensor) else len(t) for t in target}
        if len(lengths) != 1:
            raise InputError(f"target tensors have different lengths: {sorted(lengths)}")
        return lengths.pop()
    if isinstance(target, (tuple, list)):
        return len(target)
    return None


def check_model_output(output: torch.Tensor, what: str = "model output") -> None:
    # one reduction: NaN and +-inf propagate through the sum; the detailed scan runs only on failure
    if not bool(torch.isfinite(output.sum())) and not torch.isfinite(output).all():
        bad = (~torch.isfinite(output)).reshape(output.shape[0], -1).any(1).nonzero().flatten()
        raise ModelOutputError(
            f"{what} contains NaN or inf for samples {bad[:10].tolist()}"
            f"{' ...' if bad.numel() > 10 else ''}; check the model (division by zero, log of 0, "
            "exploding weights) before attacking it"
        )


def check_logits(output, what: str = "the model's output") -> None:
    """A classifier's output must be logits [B, C]; ModelOutputError otherwise (e.g. one score per sample)."""
    if isinstance(output, torch.Tensor) and output.dim() != 2:
        raise ModelOutputError(
            f"{what} has shape {tuple(output.shape)}, but a classifier must return logits of shape [B, C] (one "
            "score per class); for a single-score binary model return torch.stack([-z, z], 1)"
        )


def looks_like_probabilities(output: torch.Tensor) -> torch.Tensor | None:
    """A bool tensor on the output's device (no host read): every output is non-negative and each row sums
    to 1; None for outputs that are not [B, C >= 2]."""
    if output.dim() != 2 or output.shape[1] < 2:
        return None
    with torch.no_grad():
        sums = output.sum(1)
        return (output >= 0).all() & torch.isclose(sums, torch.ones_like(sums), atol=1e-3).all()


def warn_if_probabilities(output: torch.Tensor, looks: bool | None = None) -> bool:
    """Warn when classifier outputs look like probabilities instead of logits (``looks``: already read)."""
    if looks is None:
        flag = looks_like_probabilities(output)
        looks = flag is not None and bool(flag)
    if looks:
        warnings.warn(
            "the model's outputs are non-negative and each row sums to 1: they look like "
            "probabilities, not logits. Cross-entropy and DLR losses expect logits; remove the "
            "final softmax (a saturated softmax also masks gradients).",
            UserWarning,
            stacklevel=3,
        )
    return looks
