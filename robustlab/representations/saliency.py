"""Input attributions and how well they align with the image.

Attributions come from Captum (``captum.attr``): plain gradients (``Saliency``), SmoothGrad
(``NoiseTunnel`` over ``Saliency``; Smilkov et al. 2017) and integrated gradients
(``IntegratedGradients``; Sundararajan et al. 2017, Gauss-Legendre quadrature). Captum is the
maintained reference implementation of these methods; robustlab only fixes the conventions: the
attributed score is the logit of class ``y`` and signs are kept.

Alignment (Etmann et al. 2019, "On the connection between adversarial robustness and saliency map
interpretability"): for the score Psi(x) = logit_c(x) of the *predicted* class c = argmax f(x),
``alignment(x) = |<x, grad Psi(x)>| / (||x|| ||grad Psi(x)||)``, the cosine between the image and its
saliency map (robust models score higher: their gradients look like the digit). ``label="true"``
uses the true class y instead (the two differ only on misclassified points). As a second,
shape-based number we report the Pearson correlation between |grad Psi(x)| and the Sobel edge map
of x. Both are per sample, summarised as a mean with a 95% t-interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..runtime import eval_mode

METHODS = ("gradient", "smoothgrad", "integrated")


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str = "gradient", *,
             nt_samples: int = 25, stdev: float = 0.15, n_steps: int = 50,
             baseline: torch.Tensor | float = 0.0, seed: int = 0) -> torch.Tensor:
    """Attribution of the class-y logit to each input element, shaped like x.

    - ``gradient``: d logit_y / dx.
    - ``smoothgrad``: the mean gradient over ``nt_samples`` copies x + N(0, stdev^2) (stdev in input
      units; 0.15 = 15% of a [0, 1] range, Smilkov et al.'s 10-20%).
    - ``integrated``: (x - baseline) * mean of the gradients along the straight path from
      ``baseline`` (default black) to x, ``n_steps`` quadrature points.
    """
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    if method not in METHODS:
        raise InputError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
    y = torch.as_tensor(y, dtype=torch.long, device=x.device)
    if y.shape != x.shape[:1]:
        raise InputError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    x = x.detach().clone().requires_grad_(True)  # Captum warns on inputs without requires_grad
    with eval_mode(model), torch.enable_grad():
        if method == "gradient":
            return Saliency(model).attribute(x, target=y, abs=False).detach()
        if method == "smoothgrad":
            # NoiseTunnel draws its noise from the global generator: seed it inside a fork, so the
            # caller's global RNG state is the same afterwards
            devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
                if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                nt = NoiseTunnel(Saliency(model))
                return nt.attribute(x, nt_type="smoothgrad", nt_samples=int(nt_samples), stdevs=float(stdev),
                                    target=y, abs=False).detach()
        base = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
        return IntegratedGradients(model).attribute(x, baselines=base, target=y, n_steps=int(n_steps)).detach()


def _check_images(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise InputError(f"{what} needs images [B, C, H, W], got shape {tuple(x.shape)}; reshape flat inputs "
                         "to [B, C, H, W] (e.g. x.reshape(-1, 1, 28, 28))")


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude per image, summed over channels, shape [B, H, W]."""
    _check_images(x, "sobel_edges")
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([k, k.t()])[:, None]                     # [2, 1, 3, 3]
    b, c, h, w = x.shape
    g = F.conv2d(F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1).sqrt().reshape(b, c, h, w).sum(1)


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean and a two-sided t-interval of the mean (NaNs dropped)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    m = float(v.mean())
    if n < 2:
        return {"mean": m, "ci95": [m, m], "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": m, "ci95": [m - half, m + half], "n": int(n)}


@dataclass
class AlignmentResult:
    """Per-sample alignment |<x, g>| / (||x|| ||g||) and edge correlation corr(|g|, sobel(x)); ``label``
    says whose logit was differentiated ("predicted" or "true" class)."""

    alignment: torch.Tensor
    edge_correlation: torch.Tensor
    method: str
    label: str = "predicted"

    def summary(self) -> dict:
        return {"method": self.method, "label": self.label, "alignment": mean_ci(self.alignment.numpy()),
                "edge_correlation": mean_ci(self.edge_correlation.numpy())}


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan"))).float()


LABELS = ("predicted", "true")


def alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, method: str = "gradient",
              batch_size: int = 250, label: str = "predicted", **saliency_kwargs) -> AlignmentResult:
    """Etmann et al. 2019 alignment and edge-map correlation of each sample's saliency map.

    ``label="predicted"`` (the paper's choice, default) differentiates the logit of the model's own
    class argmax f(x), so ``y`` is not needed; ``label="true"`` that of ``y``.
    Over a test set: ``alignment(model, test.x, test.y).summary()`` gives the means with 95% CIs.
    """
    _check_images(x, "alignment")
    if label not in LABELS:
        raise InputError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    if label == "true" and y is None:
        raise InputError("alignment(..., label='true') needs the true labels y")
    al, ec = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        if label == "true":
            yb = y[i:i + batch_size]
        else:
            with eval_mode(model), torch.no_grad():
                yb = model(xb).argmax(1)
        g = saliency(model, xb, yb, method, **saliency_kwargs)
        dot = (xb * g).flatten(1).sum(1).abs()
        den = xb.flatten(1).norm(dim=1) * g.flatten(1).norm(dim=1)
        al.append(torch.where(den > 0, dot / den.clamp_min(1e-30), torch.full_like(den, float("nan"))))
        ec.append(_pearson(g.abs().sum(1), sobel_edges(xb)))
    return AlignmentResult(torch.cat(al).cpu(), torch.cat(ec).cpu(), method, label)
