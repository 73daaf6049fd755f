"""Robust representations: saliency and its alignment with the image, class interpolation by
large-eps targeted attacks, representation inversion / feature visualisation / synthesis, linear
CKA, linear probes of frozen features, and on-manifold adversarial examples (VAE latent attacks).

Every measure returns numbers (with their settings) as well as images.
"""
from .interpolation import class_interpolation, save_grid, signed_map
from .inversion import (ClassGaussian, InversionResult, RepresentationDistance, UnitActivation, invert, noise_seed,
                        synthesize, visualize_feature)
from .layers import activations, features, last_linear, layer_names
from .manifold import on_manifold_attack, on_off_manifold
from .probe import ProbeResult, finetune_network, linear_probe, resize, split_classes
from .saliency import AlignmentResult, alignment, mean_ci, saliency, sobel_edges
from .similarity import cka_matrix, linear_cka, model_cka

__all__ = [
    "AlignmentResult", "ClassGaussian", "InversionResult", "ProbeResult", "RepresentationDistance",
    "UnitActivation", "activations", "alignment", "cka_matrix", "class_interpolation",
    "features", "finetune_network", "invert", "last_linear", "layer_names", "linear_cka", "linear_probe", "mean_ci",
    "model_cka", "noise_seed", "on_manifold_attack", "on_off_manifold", "resize", "saliency",
    "save_grid", "signed_map", "sobel_edges", "split_classes", "synthesize", 
    "visualize_feature",
]
