"""Named scalar measures (``f(model, data, **kw) -> float``) for reports and invariance checks."""
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


def _register():
    MEASURES.register("top_eigenvalue", lambda m, d, **kw: float(hessian_eigenvalues(m, d, k=1, **kw).values[0]),
                      invariant=False, doc="largest Hessian eigenvalue")
    MEASURES.register("trace", lambda m, d, **kw: hessian_trace(m, d, **kw).value, invariant=False,
                      doc="Hessian trace (Hutchinson)")
    MEASURES.register("keskar", lambda m, d, **kw: eps_sharpness(m, d, **kw).value, invariant=False,
                      doc="Keskar epsilon-sharpness")
    MEASURES.register("sam", lambda m, d, **kw: worst_case_sharpness(m, d, **kw).value, invariant=False,
                      doc="SAM worst-case sharpness (L2 ball)")
    MEASURES.register("asam", lambda m, d, **kw: adaptive_sharpness(m, d, **kw).value, invariant=True,
                      doc="ASAM adaptive worst-case sharpness")
    MEASURES.register("average", lambda m, d, **kw: average_sharpness(m, d, **kw).value, invariant=False,
                      doc="average-case sharpness, absolute Gaussian noise")
    MEASURES.register("average_relative",
                      lambda m, d, **kw: average_sharpness(m, d, relative=True, **kw).value, invariant=True,
                      doc="average-case sharpness, noise relative to |w|")
    MEASURES.register("pac_bayes", lambda m, d, **kw: pac_bayes_sigma(m, d, **kw).value, invariant=False,
                      doc="Jiang et al. 1/sigma^2")
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
