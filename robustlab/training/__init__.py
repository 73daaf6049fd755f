"""Training: one loop, several methods (standard, PGD-AT, FGSM-RS), checkpoints and resume."""
from .checkpoints import load_state, load_weights, save_weights
from .loop import TrainConfig, TrainResult, is_catastrophic_overfitting, lr_at, measure, train
from .methods import METHODS, BatchContext, get_method, list_methods

__all__ = ["METHODS", "BatchContext", "TrainConfig", "TrainResult", "get_method", "is_catastrophic_overfitting", "list_methods", "load_state", "load_weights",
           "lr_at", "measure", "save_weights", "train"]
