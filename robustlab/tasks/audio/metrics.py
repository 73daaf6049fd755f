"""Metrics of keyword spotting under attack: accuracy clean and adversarial, and the perturbation's
size in dB relative to the clip (Carlini & Wagner 2018) and as an SNR."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ... import runtime
from .threats import db_relative, snr, within_bound


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes of clips [B, 1, T] (on the CPU)."""
    model.eval()
    device = runtime.device_of(model)
    return torch.cat([model(x[s:s + batch_size].to(device)).argmax(1).cpu() for s in range(0, x.shape[0], batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y.cpu()).float().mean()) if len(y) else float("nan")


def _finite_stats(v: torch.Tensor, prefix: str) -> dict:
    v = v[torch.isfinite(v)].double()
    if not v.numel():
        return {f"{prefix}_mean": math.nan, f"{prefix}_min": math.nan, f"{prefix}_max": math.nan}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_min": float(v.min()), f"{prefix}_max": float(v.max())}


def perturbation_metrics(x: torch.Tensor, x_adv: torch.Tensor) -> dict:
    """dB_x(delta) and SNR (dB) over the clips that changed (mean, min, max)."""
    delta = (x_adv - x).cpu()
    x = x.cpu()
    changed = delta.flatten(1).abs().amax(1) > 0
    return {"changed": int(changed.sum()), **_finite_stats(db_relative(x, delta)[changed], "db"),
            **_finite_stats(snr(x, delta)[changed], "snr")}


def audio_metrics(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                  bound_db: float | None = None, bound_snr: float | None = None) -> dict:
    """Clean and adversarial accuracy, success rate (of the clips right when clean: wrong after and within
    the bound), the perturbation's dB and SNR, and whether every clip stays within the bound."""
    y = y.cpu()
    clean, adv = predict(model, x), predict(model, x_adv)
    right = clean == y
    inside = within_bound(x.cpu(), x_adv.cpu(), bound_db, bound_snr) if (bound_db, bound_snr) != (None, None) else None
    fooled = (adv != y) & right if inside is None else (adv != y) & right & inside   # out of bound: no success
    out = {"n": int(len(y)), "clean_accuracy": float(right.float().mean()),
           "adversarial_accuracy": float(((adv == y) | (inside is not None and ~inside)).float().mean()),
           "success_rate": float(fooled.sum() / right.sum().clamp_min(1)),
           "bound_db": bound_db, "bound_snr": bound_snr, **perturbation_metrics(x, x_adv)}
    if inside is not None:
        out["within_bound"] = bool(inside.all())
    return out
