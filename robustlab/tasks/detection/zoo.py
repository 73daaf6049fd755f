"""torchvision's detectors as a model source (``torchvision:<name>``, e.g.
``torchvision:fasterrcnn_mobilenet_v3_large_320_fpn``, ``torchvision:retinanet_resnet50_fpn``,
``torchvision:fcos_resnet50_fpn``), wrapped to the task's dense raw output so that every objective,
metric and attack applies unchanged.

torchvision returns its post-NMS detections per image (boxes, scores, labels; scores differentiable in
the input); the wrapper lays them out as candidates: anchor = the box centre (detached), the box, and
the logit of the score at its label (every other class at -1e4). Images are [B, 3, H, W] in [0, 1]
(torchvision normalises them itself). Needs a torchvision that imports against the installed torch
(the CPU torch here has a CUDA torchvision wheel: the source then raises one InputError) and the
weights in torch's hub cache (no download at run time without internet).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...errors import InputError
from .boxes import Detections, decode

#: far below any score: the classes a torchvision candidate does not carry
ABSENT = -1e4


class TorchvisionDetector(nn.Module):
    """A torchvision detection model (eval mode) as a dense raw-output detector."""

    def __init__(self, net: nn.Module, num_classes: int, score_floor: float = 0.01):
        super().__init__()
        self.net, self.num_classes = net.eval(), int(num_classes)
        if hasattr(net, "roi_heads"):
            net.roi_heads.score_thresh = score_floor
        elif hasattr(net, "score_thresh"):
            net.score_thresh = score_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.net(list(x))
        m = max([len(o["scores"]) for o in outs] + [1])
        raw = torch.zeros(x.shape[0], m, 6 + self.num_classes, device=x.device, dtype=x.dtype)
        raw[..., 6:] = ABSENT
        for i, o in enumerate(outs):
            n = len(o["scores"])
            b = o["boxes"]
            raw[i, :n, 0:2] = ((b[:, :2] + b[:, 2:]) / 2).detach()
            raw[i, :n, 2:6] = b
            logit = torch.logit(o["scores"].clamp(1e-6, 1 - 1e-6))
            raw[i, torch.arange(n, device=x.device), 6 + o["labels"]] = logit
        return raw

    def decode(self, raw: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
        return decode(raw, score_threshold, iou_threshold)


def torchvision_detector(name: str, weights: str | None = "DEFAULT", **kwargs) -> TorchvisionDetector:
    """``torchvision.models.detection.<name>(weights=weights, **kwargs)`` wrapped (COCO: 91 class ids)."""
    try:
        from torchvision.models import detection
    except Exception as e:  # a CUDA torchvision wheel against a CPU torch fails at import with RuntimeError
        raise InputError(f"torchvision:{name} needs torchvision, which does not import here ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use the task's own detector") from None
    builder = getattr(detection, name, None)
    if builder is None or not callable(builder):
        raise InputError(f"torchvision has no detector {name!r}")
    net = builder(weights=weights, **kwargs)
    return TorchvisionDetector(net, num_classes=int(getattr(net, "num_classes", 0) or 91))
