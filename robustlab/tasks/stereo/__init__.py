"""Stereo disparity: data (procedural scenes, the Middlebury motorcycle pair), metrics, a small
network, and attacks through the common engine (a pair travels as one [B, 6, H, W] tensor)."""
from .consistent import StereoConsistentPGD, consistent_pair_perturbation, warp_to_left
from .data import StereoDataset, motorcycle, render_scene, synthetic_stereo
from .metrics import stereo_metrics, valid_mask
from .defense import DefenseConfig, defend_stereo, evaluate_defense, lr_feature_consistency
from .model import StereoNet
from .sgbm import SGBM, sgbm_oracle
from .train import disparity_objective, evaluate_stereo, stereo_threat, train_stereo, view_mask

__all__ = ["DefenseConfig", "defend_stereo", "evaluate_defense", "lr_feature_consistency", "SGBM", "sgbm_oracle", "StereoConsistentPGD", "consistent_pair_perturbation", "warp_to_left", "StereoDataset", "StereoNet", "disparity_objective", "evaluate_stereo", "motorcycle", "render_scene",
           "stereo_metrics", "stereo_threat", "synthetic_stereo", "train_stereo", "valid_mask", "view_mask"]
