"""Loss-landscape geometry: Hessian spectra, loss surfaces, sharpness, robust flatness,
reparametrisation invariance and training trajectories.

Every measure takes ``(model, data)`` with ``data`` an ``(x, target)`` pair, a robustlab Dataset or
an iterable of batches; the loss is the mean of ``objective.loss`` (default cross-entropy) over all
of it, optionally at adversarial inputs (``attack=``, ``robust="recraft"|"fixed"``). Models are
never modified: parameters are copied and the model is run with ``torch.func.functional_call``.
"""
from .core import LossFunction, ParameterGeometry, model_state
from .flatness import average_robust_flatness, worst_robust_flatness
from .hessian import (EigenResult, SpectralDensity, TraceResult, hessian_eigenvalues, hessian_trace, lanczos,
                      spectral_density)
from .measures import MEASURES, get_measure, list_measures, measure_fn
from .rescale import InvarianceReport, invariance_report, rescalable_pairs, rescale
from .sharpness import (SharpnessResult, adaptive_sharpness, average_sharpness, eps_sharpness, pac_bayes_sigma,
                        worst_case_sharpness)
from .surface import Surface, interpolate, surface_1d, surface_2d
from .trajectory import Trajectory, load_snapshots, trajectory_pca, trajectory_surface

__all__ = [
    "EigenResult", "InvarianceReport", "LossFunction", "MEASURES", "ParameterGeometry", "SharpnessResult",
    "SpectralDensity", "Surface", "TraceResult", "Trajectory", "adaptive_sharpness",
    "average_robust_flatness", "average_sharpness", "eps_sharpness", "hessian_eigenvalues", "hessian_trace",
    "get_measure", "interpolate", "invariance_report", "lanczos", "list_measures", "load_snapshots", "measure_fn", "model_state",
    "pac_bayes_sigma", "rescalable_pairs", "rescale", "spectral_density", "surface_1d", "surface_2d",
    "trajectory_pca", "trajectory_surface", "worst_case_sharpness", "worst_robust_flatness",
]
