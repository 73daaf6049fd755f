"""Small reference architectures behind one registry: ``create_model("name", **kwargs)``.

The CLI also accepts ``package.module:callable`` for a user's own model factory.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch.nn as nn

from ..errors import InputError
from ..registry import Registry
from .mnist import FastMNISTNet, MadryMNISTCNN, MLP
from .normalize import Normalize
from .resnet import PreActResNet18

MODELS = Registry("model")
MODELS.register("madry_cnn", MadryMNISTCNN, task="classification", input="1x28x28")
MODELS.register("fast_mnist", FastMNISTNet, task="classification", input="1x28x28")
MODELS.register("mlp", MLP, task="classification", input="any (flattened)")
MODELS.register("preact_resnet18", PreActResNet18, task="classification", input="3xHxW")


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, **kwargs) -> nn.Module:
    """A registered model (``list_models()``) or ``"package.module:callable"``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load model factory {name!r}: {e}") from None
        return factory(**kwargs)
    return MODELS.create(name, **kwargs)


__all__ = ["FastMNISTNet", "MLP", "MadryMNISTCNN", "Normalize", "PreActResNet18", "create_model", "list_models", "MODELS"]
