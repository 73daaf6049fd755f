"""Small reference architectures behind one registry: ``create_model("name", **kwargs)``.

Models from the field's zoos are named ``robustbench:<name>``, ``timm:<name>`` or ``torchvision:<name>``
(``models.zoo``): they name a registry entry, not code, so they need no ``trust_code``.

The CLI also accepts ``package.module:callable`` for a user's own model factory. Importing one runs
its code, so it is honoured only when the caller says so (``trust_code=True``; the CLI does for a
``--model`` typed on its command line, and for a run's or job's config only with ``--trust-code``).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

import torch.nn as nn

from ..errors import InputError
from ..registry import Registry
from .mnist import FastMNISTNet, MadryMNISTCNN, MLP
from .normalize import Normalize
from .resnet import PreActResNet18
from .zoo import ZooSettings, create_zoo_model, is_zoo_source

MODELS = Registry("model")
MODELS.register("madry_cnn", MadryMNISTCNN, task="classification", input="1x28x28")
MODELS.register("fast_mnist", FastMNISTNet, task="classification", input="1x28x28")
MODELS.register("mlp", MLP, task="classification", input="any (flattened)")
MODELS.register("preact_resnet18", PreActResNet18, task="classification", input="3xHxW")


def list_models() -> list[str]:
    return MODELS.names()


def is_code_reference(name: str) -> bool:
    """True for ``package.module:callable`` (a factory that must be imported, i.e. code to run); a zoo
    source (``timm:resnet18``) names a registry entry, not code."""
    return ":" in str(name) and not is_zoo_source(name)


def create_model(name: str, *, trust_code: bool = False, **kwargs) -> nn.Module:
    """A registered model (``list_models()``), a zoo source (``robustbench:``, ``timm:``, ``torchvision:``;
    `kwargs` may hold ``ZooSettings``) or ``"package.module:callable"`` (needs ``trust_code=True``)."""
    if is_zoo_source(name):
        return create_zoo_model(name, **kwargs)
    if is_code_reference(name):
        if not trust_code:
            raise InputError(
                f"model {name!r} is a code reference (module:callable): building it imports and runs that code. "
                "Refused because it came from a file, not from you; if you trust its source, pass --trust-code "
                "(CLI) or trust_code=True (Python)"
            )
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load model factory {name!r}: {e}") from None
    else:
        factory = MODELS.get(name)
    return _build(name, factory, kwargs)


def _build(name: str, factory: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    """``factory(**kwargs)``; a keyword the factory does not take, or a value its constructor rejects
    (TypeError, ValueError or torch's RuntimeError, e.g. a negative size, while `kwargs` are given), is an
    InputError naming the model and the keyword."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the call itself decide
        params = None
    takes_any = params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if not takes_any and k not in params]
    if unknown:
        known = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise InputError(f"model {name!r} takes no keyword argument {unknown[0]!r} (its keywords: "
                         f"{', '.join(known) or 'none'}); fix --model-kwargs or the model's kwargs in the config")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        if not kwargs:
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"model {name!r} rejected its keyword arguments {kwargs}: {first}; fix --model-kwargs or "
                         "the model's kwargs in the config") from None


__all__ = ["FastMNISTNet", "MLP", "MadryMNISTCNN", "Normalize", "PreActResNet18", "ZooSettings", "create_model", "is_code_reference", "is_zoo_source", "list_models", "MODELS"]
