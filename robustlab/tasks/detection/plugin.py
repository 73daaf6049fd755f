"""The detection task plug-in: what ``robustlab`` needs to know about object detection."""
from __future__ import annotations

from ...taskspec import Task
from ...threat import ThreatModel
from . import cli
from .metrics import per_image_metrics
from .objectives import OBJECTIVES
from .report import report_sections


def _pretrained(**kwargs):
    from .pretrained import pretrained_detector

    return pretrained_detector(**kwargs)


def _tiny(**kwargs):
    from .model import TinyDetector

    return TinyDetector(**kwargs)


def _torchvision(name: str = "fasterrcnn_mobilenet_v3_large_320_fpn", **kwargs):
    from .zoo import torchvision_detector

    return torchvision_detector(name, **kwargs)


def _scenes(**kwargs):
    from .data import synthetic_scenes

    return synthetic_scenes(**kwargs)


def _coco(folder, **kwargs):
    from .data import coco_folder

    return coco_folder(folder, **kwargs)


def _patch(**kwargs):
    from .patch import PatchOnObject

    return PatchOnObject(**kwargs)


TASK = Task(
    name="detection",
    description="object detection (procedural multi-shape scenes, COCO folders): objects vanish, appear, change label or move",
    objectives=dict(OBJECTIVES),
    train_objective="untargeted",  # its loss on the ground truth is the detector's training loss
    metrics=per_image_metrics,
    datasets={"synthetic": _scenes, "coco": _coco},
    models={"pretrained": _pretrained, "tiny": _tiny, "torchvision": _torchvision},
    threats={"linf": lambda eps=8 / 255: ThreatModel("linf", eps), "patch-on-object": _patch},
    report_sections=report_sections,
    add_cli=cli.COMMAND.add_cli,
    run_cli=cli.COMMAND.run_cli,
)
