"""Detection metrics: mAP@0.5 and mAP@[.5:.95] (COCO's 101-point interpolated average precision,
through torchmetrics' ``MeanAveragePrecision`` with the pycocotools backend), and recall at a fixed
score (the share of ground-truth boxes matched, IoU >= 0.5 and same label, by a detection scoring
above the threshold)."""
from __future__ import annotations

from typing import Sequence

import torch

from .boxes import Detections, detections_of, matched

#: the score above which a detection counts for recall (and the objectives' success)
SCORE_THRESHOLD = 0.5


def _as_dict(d: Detections, scores: bool) -> dict:
    out = {"boxes": d.boxes.detach().float().cpu(), "labels": d.labels.cpu()}
    if scores:
        out["scores"] = d.scores.detach().float().cpu()
    return out


def _coco_json(preds: Sequence[Detections], targets: Sequence[Detections]) -> tuple[dict, list[dict]]:
    """Ground truth as a COCO instances dict and detections as COCO results (xywh boxes, category = label + 1)."""
    images, anns, dets, labels = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1})
        for b, c in zip(t.boxes.tolist(), t.labels.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0})
            labels.add(c)
        for b, s, c in zip(p.boxes.tolist(), p.scores.tolist(), p.labels.tolist()):
            dets.append({"image_id": i + 1, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": s})
            labels.add(c)
    cats = [{"id": c + 1, "name": str(c)} for c in sorted(labels)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _pycocotools_map(preds: Sequence[Detections], targets: Sequence[Detections]) -> dict[str, float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json, dets = _coco_json(preds, targets)
    if not gt_json["annotations"]:
        return {"map_50": -1.0, "map": -1.0}
    if not dets:
        return {"map_50": 0.0, "map": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = gt_json
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map_50": float(ev.stats[1]), "map": float(ev.stats[0])}


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA torchvision wheel against a CPU torch fails with RuntimeError, not ImportError
        return False
    return True


def mean_average_precision(preds: Sequence[Detections], targets: Sequence[Detections]) -> dict[str, float]:
    """``map_50`` and ``map`` (IoU 0.5:0.95) over a data set. ``preds`` should keep low-scoring
    detections (decode with a small score threshold) so that the precision-recall curve is whole.
    A metric is -1 where it is undefined (no ground-truth box), as in pycocotools.

    Computed by torchmetrics' ``MeanAveragePrecision`` (pycocotools backend) where torchvision imports
    (torchmetrics needs it for boxes), else by pycocotools' ``COCOeval`` directly: the same evaluation."""
    if not _torchvision_imports():
        return _pycocotools_map(preds, targets)
    from torchmetrics.detection.mean_ap import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update([_as_dict(p, True) for p in preds], [_as_dict(t, False) for t in targets])
    res = metric.compute()
    return {"map_50": float(res["map_50"]), "map": float(res["map"])}


def recall_at(preds: Sequence[Detections], targets: Sequence[Detections], score_threshold: float = SCORE_THRESHOLD,
              iou: float = 0.5) -> float:
    """Matched ground-truth boxes / all ground-truth boxes, counting detections above ``score_threshold``."""
    hits = total = 0
    for p, t in zip(preds, targets):
        hits += int(matched(p.take(p.scores > score_threshold), t, iou).sum())
        total += len(t)
    return hits / total if total else float("nan")


def per_image_metrics(output, target) -> dict[str, torch.Tensor]:
    """The task's per-image metrics for the shared evaluation: recall at 0.5 (NaN-free: 1 for an image
    without boxes) and the number of false positives (detections matching no box of their label)."""
    dets = detections_of(output, SCORE_THRESHOLD)
    recall, fp = [], []
    for d, t in zip(dets, target):
        m = matched(d, t)
        recall.append(float(m.float().mean()) if len(t) else 1.0)
        fp.append(float((~matched(t, d)).sum()) if len(d) else 0.0)
    device = output.device if isinstance(output, torch.Tensor) else torch.device("cpu")
    return {"recall": torch.tensor(recall, device=device), "false_positives": torch.tensor(fp, device=device)}


def detection_metrics(preds_raw: torch.Tensor, targets: Sequence[Detections], score_threshold: float = SCORE_THRESHOLD,
                      iou_threshold: float = 0.5) -> dict[str, float]:
    """mAP@0.5, mAP@[.5:.95] (detections down to score 0.05) and recall at ``score_threshold`` of raw outputs."""
    low = detections_of(preds_raw, 0.05, iou_threshold)
    out = mean_average_precision(low, targets)
    out["recall"] = recall_at(low, targets, score_threshold)
    return out
