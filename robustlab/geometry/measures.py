"""Named scalar measures (``f(model, data, **kw) -> float``) for reports and invariance checks.

Metadata ``landscape`` names the measure of ``robustlab landscape`` that reports it (hessian, trace,
sharpness); the sharpness entries also carry their full-result function and landscape settings."""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from .hessian import hessian_eigenvalues, hessian_trace
from .sharpness import adaptive_sharpness, average_sharpness, eps_sharpness, pac_bayes_sigma, worst_case_sharpness
from .surface import surface_1d

MEASURES = Registry("geometry measure")


def _filter_1d(model, data, radius: float = 0.5, **kw) -> float:
    """Loss increase at +-radius along a filter-normalised random direction (mean of both ends)."""
    s = surface_1d(model, data, alphas=[-radius, 0.0, radius], **kw)
    return float((s.losses[0] + s.losses[2]) / 2 - s.losses[1])


def _sharpness(result: Callable, **settings) -> dict:
    """Metadata of a sharpness measure in ``robustlab landscape``: its group, the function that gives
    the full result (``.value`` and ``.to_dict()``) and the settings the landscape measures it with."""
    return {"landscape": "sharpness", "result": result, "landscape_kw": settings}


def _register():
    MEASURES.register("top_eigenvalue", lambda m, d, **kw: float(hessian_eigenvalues(m, d, k=1, **kw).values[0]),
                      invariant=False, doc="largest Hessian eigenvalue", landscape="hessian")
    MEASURES.register("trace", lambda m, d, **kw: hessian_trace(m, d, **kw).value, invariant=False,
                      doc="Hessian trace (Hutchinson)", landscape="trace")
    MEASURES.register("keskar", lambda m, d, **kw: eps_sharpness(m, d, **kw).value, invariant=False,
                      doc="Keskar epsilon-sharpness", **_sharpness(eps_sharpness, eps=1e-3, steps=5))
    MEASURES.register("sam", lambda m, d, **kw: worst_case_sharpness(m, d, **kw).value, invariant=False,
                      doc="SAM worst-case sharpness (L2 ball)", **_sharpness(worst_case_sharpness, rho=0.05, steps=1))
    MEASURES.register("asam", lambda m, d, **kw: adaptive_sharpness(m, d, **kw).value, invariant=True,
                      doc="ASAM adaptive worst-case sharpness", **_sharpness(adaptive_sharpness, rho=0.5, steps=1))
    MEASURES.register("average", lambda m, d, **kw: average_sharpness(m, d, **kw).value, invariant=False,
                      doc="average-case sharpness, absolute Gaussian noise",
                      **_sharpness(average_sharpness, sigma=0.01, samples=5))
    MEASURES.register("average_relative",
                      lambda m, d, **kw: average_sharpness(m, d, relative=True, **kw).value, invariant=True,
                      doc="average-case sharpness, noise relative to |w|",
                      **_sharpness(average_sharpness, sigma=0.1, samples=5, relative=True))
    MEASURES.register("pac_bayes", lambda m, d, **kw: pac_bayes_sigma(m, d, **kw).value, invariant=False,
                      doc="Jiang et al. 1/sigma^2", **_sharpness(pac_bayes_sigma, samples=3, iterations=8))
    MEASURES.register("pac_bayes_mag",
                      lambda m, d, **kw: pac_bayes_sigma(m, d, magnitude_aware=True, eps=0.0, **kw).value,
                      invariant=True, doc="magnitude-aware PAC-Bayes 1/sigma^2")
    MEASURES.register("filter_1d", _filter_1d, invariant=True,
                      doc="loss increase along a filter-normalised direction")


_register()


def list_measures(**where) -> list[str]:
    """Registered measure names, filtered by metadata: ``list_measures(invariant=True)``."""
    return MEASURES.names(**where)


def get_measure(name: str) -> Callable[..., float]:
    """The registered measure ``f(model, data, **kw) -> float`` (UnknownNameError lists the known names)."""
    return MEASURES.get(name)


def measure_fn(name: str, data: Any, **kwargs) -> Callable:
    """``model -> float`` for a registered measure on ``data``."""
    fn = get_measure(name)
    return lambda model: fn(model, data, **kwargs)
