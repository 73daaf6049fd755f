"""Evaluation: cascade ensembles with per-sample worst case, robustness curves, gradient-masking checks."""
from .sanity import CHECKS, Check, SanityReport, sanity_checks
from .suite import EvaluationReport, RobustnessCurve, build_suite, evaluate, robustness_curve, wilson_interval

__all__ = ["CHECKS", "Check", "EvaluationReport", "RobustnessCurve", "SanityReport", "build_suite", "evaluate",
           "robustness_curve", "sanity_checks", "wilson_interval"]
