"""torchvision's detectors as a model source (``torchvision:<name>``, e.g.
``torchvision:fasterrcnn_mobilenet_v3_large_320_fpn``, ``torchvision:retinanet_resnet50_fpn``,
``torchvision:fcos_resnet50_fpn``), wrapped to the task's dense raw output so that every objective,
metric and attack applies unchanged.

torchvision returns its post-NMS detections per image (boxes, scores, labels; scores differentiable in
the input); the wrapper lays them out as candidates: anchor = the box centre (detached), the box, and
the logit of the score at its label's column (every other class at -1e4). torchvision's label ids are COCO's
category ids (1 = person, 91 slots with gaps); ``use_classes`` maps them by category *name* onto a data set's
classes (``coco_folder`` renumbers its categories 0..K-1), refusing a data class the weights do not know.
Images are [B, 3, H, W] in [0, 1] (torchvision normalises them itself). Needs a torchvision that imports against the installed torch
(the CPU torch here has a CUDA torchvision wheel: the source then raises one InputError) and the
weights in torch's hub cache (no download at run time without internet).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ...errors import InputError
from .boxes import Detections, decode

#: far below any score: the classes a torchvision candidate does not carry
ABSENT = -1e4


def category_columns(categories: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """int64 [len(categories)]: per model label id (``categories``: torchvision weights' ``meta["categories"]``, the
    name of each id, "__background__" and "N/A" for unused COCO ids) the data's class index of the same name, -1
    where the data has no such class. InputError when a data class is not one of the model's categories."""
    known = {name: i for i, name in enumerate(categories) if name not in ("__background__", "N/A")}
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise InputError(f"the detector does not know the data's categories {unknown} (it knows {len(known)} "
                         f"categories, e.g. {', '.join(list(known)[:5])})")
    columns = torch.full((len(categories),), -1, dtype=torch.int64)
    for k, c in enumerate(classes):
        columns[known[c]] = k
    return columns


class TorchvisionDetector(nn.Module):
    """A torchvision detection model (eval mode) as a dense raw-output detector.

    ``categories``: the name of each label id the model predicts (its weights' ``meta["categories"]``; COCO's 91
    ids). The raw output has a column per id until ``use_classes(names)`` maps the ids by name onto a data set's
    classes (``coco_folder`` renumbers its categories 0..K-1): then column k is the data's class k, and a candidate
    whose category the data does not have is dropped (every logit ``ABSENT``)."""

    def __init__(self, net: nn.Module, num_classes: int, score_floor: float = 0.01,
                 categories: Sequence[str] | None = None):
        super().__init__()
        self.net, self.num_classes = net.eval(), int(num_classes)
        self.categories = tuple(categories) if categories is not None else None
        self.register_buffer("columns", torch.arange(self.num_classes), persistent=False)
        if hasattr(net, "roi_heads"):
            net.roi_heads.score_thresh = score_floor
        elif hasattr(net, "score_thresh"):
            net.score_thresh = score_floor

    def use_classes(self, classes: Sequence[str]) -> "TorchvisionDetector":
        """Lay the output out by the data's ``classes`` (names), matched to the model's categories by name."""
        if self.categories is None:
            raise InputError("this torchvision detector's category names are unknown (weights=None): its labels "
                             "cannot be matched to the data's classes")
        self.columns = category_columns(self.categories, classes).to(self.columns.device)
        self.num_classes = len(classes)
        return self

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
            column = self.columns[o["labels"]]   # a category the data lacks goes to a spare column, cut off
            logits = torch.full((n, self.num_classes + 1), ABSENT, device=x.device, dtype=x.dtype)
            logits = logits.index_put((torch.arange(n, device=x.device), column.where(column >= 0, self.num_classes)),
                                      torch.logit(o["scores"].clamp(1e-6, 1 - 1e-6)).to(x.dtype))
            raw[i, :n, 6:] = logits[:, :self.num_classes]
        return raw

    def decode(self, raw: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
        return decode(raw, score_threshold, iou_threshold)


def _categories(name: str, weights) -> list[str] | None:
    """The category names of ``torchvision:<name>``'s ``weights`` (its weights enum's ``meta["categories"]``)."""
    if weights is None:
        return None
    from torchvision.models import get_model_weights

    return list(get_model_weights(name).verify(weights).meta["categories"])


def torchvision_detector(name: str, weights: str | None = "DEFAULT", **kwargs) -> TorchvisionDetector:
    """``torchvision.models.detection.<name>(weights=weights, **kwargs)`` wrapped (COCO: 91 label ids, named by the
    weights' categories; ``use_classes`` maps them onto a data set's)."""
    try:
        from torchvision.models import detection
    except Exception as e:  # a CUDA torchvision wheel against a CPU torch fails at import with RuntimeError
        raise InputError(f"torchvision:{name} needs torchvision, which does not import here ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use the task's own detector") from None
    builder = getattr(detection, name, None)
    if builder is None or not callable(builder):
        raise InputError(f"torchvision has no detector {name!r}")
    net = builder(weights=weights, **kwargs)
    return TorchvisionDetector(net, int(getattr(net, "num_classes", 0) or 91), categories=_categories(name, weights))
