"""Attacks on the training data (poisons and backdoors), their detectors, and the metrics of both.

See ``base`` for the shared shapes (``PoisonedDataset``, ``Poison``, ``Backdoor``, ``Detector``,
``DetectionReport``) and DESIGN's Poisoning section for the papers each implementation follows."""
from .base import (DETECTORS, POISONS, Backdoor, DetectionReport, Detector, Poison, PoisonedDataset, as_xy,
                   draw_without_replacement)

__all__ = ["POISONS", "DETECTORS", "Poison", "Backdoor", "PoisonedDataset", "Detector", "DetectionReport", "as_xy",
           "draw_without_replacement"]
from .backdoors import BadNets, Blend, LabelFlip, WaNet  # noqa: E402
from .metrics import (backdoor_metrics, clean_accuracy, defence_effectiveness_rate, predict,  # noqa: E402
                      target_success)

__all__ += ["BadNets", "Blend", "WaNet", "LabelFlip", "backdoor_metrics", "clean_accuracy", "defence_effectiveness_rate",
            "predict", "target_success"]
from .clean_label import CleanLabel  # noqa: E402
from .delusive import AdversarialPoison, Unlearnable  # noqa: E402
from .gradient_matching import GradientMatching  # noqa: E402

__all__ += ["CleanLabel", "GradientMatching", "AdversarialPoison", "Unlearnable"]
from .detectors import STRIP, ActivationClustering, FinePruning, NeuralCleanse, SpectralSignatures, anomaly_index  # noqa: E402

__all__ += ["ActivationClustering", "SpectralSignatures", "STRIP", "NeuralCleanse", "FinePruning", "anomaly_index"]
