"""Evaluation for every task: cascade ensembles with per-sample worst case, robustness curves,
gradient-masking checks, all driven by the task's objective and metrics."""
from ..data.batches import iterate_batches, materialize  # the one batch iterator, re-exported where evaluations read data
from .checks import Check, SanityReport
from .sanity import CHECKS, attack_strength, sanity_checks
from .sharded import sharded_robustness_curve
from .suite import (EvaluationReport, RobustnessCurve, build_suite, classification_metrics, evaluate, robustness_curve,
                    wilson_interval)

__all__ = ["CHECKS", "Check", "EvaluationReport", "RobustnessCurve", "SanityReport", "attack_strength", "build_suite",
           "classification_metrics", "evaluate", "iterate_batches", "materialize", "robustness_curve", "sanity_checks", "sharded_robustness_curve",
           "wilson_interval"]
