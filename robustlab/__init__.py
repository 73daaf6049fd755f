"""robustlab: attack, defend, evaluate and understand adversarial robustness in PyTorch.

    import robustlab as rl

    model = rl.create_model("mlp", in_features=64, num_classes=10)    # rl.list_models()
    data = rl.load_dataset("digits", "test")                           # rl.list_datasets()
    attack = rl.create_attack("pgd", rl.ThreatModel("linf", 0.1))       # rl.list_attacks(access="decision")
    report = rl.evaluate(model, (data.x, data.y), rl.ThreatModel("linf", 0.1))

The top-level API:

- registries (see ``robustlab.registry`` for the verbs' rule): ``create_attack``/``list_attacks``,
  ``create_model``/``list_models``, ``load_dataset``/``list_datasets``;
- ``train`` (``robustlab.training.train``), ``evaluate``, ``robustness_curve``, ``sanity_checks``,
  ``EvaluationReport``;
- ``ThreatModel``, ``Dataset``, ``Normalize``;
- the errors: ``RobustlabError`` and its kinds ``InputError``, ``ModelOutputError``,
  ``CheckpointError``, ``UnknownNameError``;
- the subpackages ``attacks``, ``training``, ``geometry``, ``representations``, ``evaluation``,
  ``objectives``, ``oracles``, ``threat``, ``tasks``.

Every name is resolved on first use (PEP 562 module ``__getattr__``), so ``import robustlab`` imports
neither torch nor any subpackage; ``rl.attacks`` imports the attacks when first touched. Any other
subpackage (``rl.models``, ``rl.runs``, ...) also resolves on first use but is not part of ``__all__``.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "create_attack": "attacks", "list_attacks": "attacks",
    "create_model": "models", "list_models": "models", "Normalize": "models",
    "load_dataset": "data", "list_datasets": "data", "Dataset": "data",
    "train": "training",
    "evaluate": "evaluation", "robustness_curve": "evaluation", "sanity_checks": "evaluation",
    "EvaluationReport": "evaluation",
    "ThreatModel": "threat",
    "RobustlabError": "errors", "InputError": "errors", "ModelOutputError": "errors", "CheckpointError": "errors",
    "UnknownNameError": "errors",
}
_SUBPACKAGES = ("attacks", "evaluation", "geometry", "objectives", "oracles", "representations", "tasks", "threat",
                "training")

__all__ = sorted([*_API, *_SUBPACKAGES])


def __getattr__(name: str) -> Any:
    """Resolve a public name or a subpackage on first use (and cache it in the module)."""
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    elif _is_submodule(name):
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _is_submodule(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
