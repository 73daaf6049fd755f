"""Training: one loop, several methods (standard, PGD-AT, FGSM-RS, TRADES, LLR, on-manifold), checkpoints and resume."""
from .checkpoints import load_state, load_weights, save_weights
from .config import LoopSettings, TrainConfig
from .loop import TrainResult, is_catastrophic_overfitting, lr_at, measure, train
from .methods import METHODS, BatchContext, get_method, list_methods, make_on_manifold_method

__all__ = ["METHODS", "BatchContext", "LoopSettings", "TrainConfig", "TrainResult", "get_method", "is_catastrophic_overfitting", "list_methods", "load_state", "load_weights",
           "lr_at", "make_on_manifold_method", "measure", "save_weights", "train"]
