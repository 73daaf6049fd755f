"""BPDA: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018, "Obfuscated
gradients give a false sense of security").

A defence that runs a non-differentiable (or gradient-shattering) preprocessing g before the
classifier f (quantisation, JPEG, denoising by projection...) gives useless input gradients. BPDA
keeps the forward pass exact, f(g(x)), and replaces g by a differentiable approximation h on the
backward pass: d f(g(x)) / dx ~ f'(g(x)) h'(x). With h the identity (the default, right when
g(x) ~ x) the gradient is f's gradient at g(x). Any gradient attack runs on the wrapped model.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import InputError


class BPDA(nn.Module):
    """``BPDA(model, preprocess, approx=None)``: forward ``model(preprocess(x))``, backward through
    ``approx`` (identity by default).

    The straight-through form z = h(x) + (g(x) - h(x)).detach() has the value g(x) and the gradient
    of h(x). For a randomised g, combine with EOT (the attack's ``eot=k`` option).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], preprocess: Callable[[torch.Tensor], torch.Tensor],
                 approx: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if not callable(model) or not callable(preprocess) or (approx is not None and not callable(approx)):
            raise InputError("BPDA(model, preprocess, approx): all three must be callables (approx may be None)")
        self.model = model
        self.preprocess = preprocess
        self.approx = approx

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) in the forward pass, with the gradient of h(x)."""
        with torch.no_grad():
            g = self.preprocess(x)
        if g.shape != x.shape:
            raise InputError(f"BPDA: the preprocessing changed the input shape from {tuple(x.shape)} to "
                             f"{tuple(g.shape)}; pass an approx with the same output shape and wrap the rest in the model")
        h = x if self.approx is None else self.approx(x)
        return h + (g.to(h.dtype) - h).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))
