"""Stereo disparity: data (procedural scenes, the Middlebury motorcycle pair), metrics, a small
network, attacks through the common engine (a pair travels as one [B, 6, H, W] tensor), the
defence, and the reproduction tables."""
from .attacks import region_target, scale_target, shift_target, stereo_attack
from .consistent import StereoConsistentThreat, consistent_pair_perturbation, warp_to_left
from .data import StereoDataset, motorcycle, render_scene, synthetic_stereo
from .defense import DefenseConfig, defend_stereo, evaluate_defense, lr_feature_consistency, stereo_checks
from .metrics import stereo_metrics, valid_mask
from .model import StereoNet
from .pretrained import StereoSetup, pretrained_stereo
from .sgbm import SGBM, sgbm_oracle
from .train import disparity_objective, evaluate_stereo, predict, stereo_threat, train_stereo, view_mask

__all__ = ["DefenseConfig", "SGBM", "StereoConsistentThreat", "StereoDataset", "StereoNet", "StereoSetup",
           "consistent_pair_perturbation", "defend_stereo", "disparity_objective", "evaluate_defense",
           "evaluate_stereo", "lr_feature_consistency", "motorcycle", "predict", "pretrained_stereo", "region_target",
           "render_scene", "scale_target", "sgbm_oracle", "shift_target", "stereo_attack", "stereo_metrics",
           "stereo_checks", "stereo_threat", "synthetic_stereo", "train_stereo", "valid_mask", "view_mask",
           "warp_to_left"]
