"""Small reference architectures behind one registry: ``create_model("name", **kwargs)``.

The CLI also accepts ``package.module:callable`` for a user's own model factory.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch.nn as nn

from ..errors import InputError, unknown_name
from .mnist import FastMNISTNet, MadryMNISTCNN, MLP
from .normalize import Normalize
from .resnet import PreActResNet18

MODELS: dict[str, Callable[..., nn.Module]] = {
    "madry_cnn": MadryMNISTCNN,
    "fast_mnist": FastMNISTNet,
    "mlp": MLP,
    "preact_resnet18": PreActResNet18,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """A registered model (``list_models()``) or ``"package.module:callable"``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load model factory {name!r}: {e}") from None
        return factory(**kwargs)
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[key](**kwargs)


__all__ = ["FastMNISTNet", "MLP", "MadryMNISTCNN", "Normalize", "PreActResNet18", "create_model", "list_models", "MODELS"]
