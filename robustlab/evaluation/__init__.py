"""Evaluation: cascade ensembles with per-sample worst case, and robustness curves."""
from .suite import EvaluationReport, RobustnessCurve, build_suite, evaluate, robustness_curve, wilson_interval

__all__ = ["EvaluationReport", "RobustnessCurve", "build_suite", "evaluate", "robustness_curve", "wilson_interval"]
