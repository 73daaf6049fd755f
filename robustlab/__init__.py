"""robustlab: attack, defend, evaluate and understand adversarial robustness in PyTorch."""
from __future__ import annotations

from . import attacks, objectives, oracles, runs
from .data import Dataset, list_datasets, load_dataset
from .errors import CheckpointError, InputError, ModelOutputError, RobustlabError, UnknownNameError
from .evaluation import EvaluationReport, evaluate, robustness_curve, sanity_checks
from .models import Normalize, create_model, list_models
from .threat import ThreatModel

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Dataset", "EvaluationReport", "InputError", "ModelOutputError", "Normalize",
    "RobustlabError", "ThreatModel", "UnknownNameError", "attacks", "create_model", "evaluate",
    "list_datasets", "list_models", "load_dataset", "objectives", "oracles", "robustness_curve", "sanity_checks",
]
