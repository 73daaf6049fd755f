"""Read a layer's activations by name with forward hooks.

``layer`` is a name from ``model.named_modules()`` (its output is read), ``"penultimate"`` (the
input of the model's last ``nn.Linear``: the representation R(x) of Engstrom et al. 2019), or
``"logits"`` (the model output). Activations keep their graph, so they can be differentiated.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import InputError
from ..runtime import eval_mode


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the model's last ``nn.Linear`` (in registration order)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise InputError(f"{type(model).__name__} has no nn.Linear, so it has no 'penultimate' layer; "
                         f"name a module instead, one of: {', '.join(layer_names(model)[:20])}")
    return found[-1]


def layer_names(model: nn.Module) -> list[str]:
    """Names accepted as ``layer`` (besides "penultimate" and "logits")."""
    return [n for n, _ in model.named_modules() if n]


def activations(model: Callable, x: torch.Tensor, layer: str = "penultimate", flatten: bool = True
                ) -> torch.Tensor:
    """Activations of `layer` on `x`, shape [B, D] (``flatten``) or the layer's own shape."""
    if layer == "logits":
        out = model(x)
        return out.flatten(1) if flatten else out
    if not isinstance(model, nn.Module):
        raise InputError("reading an inner layer needs an nn.Module; use layer='logits' for a plain callable")
    if layer == "penultimate":
        _, module = last_linear(model)
        take_input = True
    else:
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            raise InputError(f"unknown layer {layer!r}; known: penultimate, logits, {', '.join(layer_names(model))}")
        module, take_input = modules[layer], False
    store: list[torch.Tensor] = []

    def hook(_m, inputs, output):
        store.append(inputs[0] if take_input else output)

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    if not store:
        raise InputError(f"layer {layer!r} was not used by the model's forward pass")
    out = store[0]
    return out.flatten(1) if flatten else out


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, layer: str = "penultimate", batch_size: int = 500) -> torch.Tensor:
    """Activations of `layer` over a large batch, in chunks and without gradients, shape [N, D]."""
    with eval_mode(model):
        return torch.cat([activations(model, x[i:i + batch_size], layer) for i in range(0, x.shape[0], batch_size)])
