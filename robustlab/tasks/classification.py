"""Classification as a task plug-in: no special path in the engine, only its declarations."""
from __future__ import annotations

from ..data import DATASETS, load_dataset
from ..evaluation import classification_metrics
from ..models import MODELS
from ..objectives import DLR, CrossEntropy, Margin, TargetedCE, TargetedDLR, TargetedMargin
from ..taskspec import Task
from ..threat import BlurLightingThreat, ColorThreat, GeometricThreat, ThreatModel

TASK = Task(
    name="classification",
    description="image classification (mnist, digits, faces, shapes, user data): accuracy under attack",
    objectives={"ce": CrossEntropy, "margin": Margin, "dlr": DLR, "targeted_ce": TargetedCE,
                "targeted_margin": TargetedMargin, "targeted_dlr": TargetedDLR},
    train_objective="ce",
    metrics=classification_metrics,
    datasets={name: (lambda split="test", _n=name, **kw: load_dataset(_n, split, **kw)) for name in DATASETS},
    models={name: MODELS.get(name) for name in MODELS.names()},
    threats={"linf": lambda eps=8 / 255: ThreatModel("linf", eps), "l2": lambda eps=0.5: ThreatModel("l2", eps),
             "l1": lambda eps=10.0: ThreatModel("l1", eps), "color": ColorThreat, "geometric": GeometricThreat,
             "blur-lighting": BlurLightingThreat},
)
