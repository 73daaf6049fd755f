"""Tracking metrics through ``motmetrics`` (the py-motmetrics implementation of the CLEAR-MOT and ID measures).

MOTA = 1 - (misses + false positives + id switches) / ground-truth objects (Bernardin & Stiefelhagen 2008);
IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN), the F1 of the best one-to-one matching of whole trajectories (Ristani et
al. 2016). A hypothesis matches a ground-truth box when their IoU is at least ``min_iou`` (distance 1 - IoU).

The distances are computed here (``tracking.iou_matrix``): motmetrics 1.4's own ``iou_matrix`` calls
``np.asfarray``, which NumPy 2 removed; everything else is motmetrics'.
"""
from __future__ import annotations

import numpy as np

from .tracking import iou_matrix

#: the motmetrics measures reported, in this order
METRICS = ("mota", "idf1", "num_switches", "num_misses", "num_false_positives", "num_objects", "mostly_tracked")


def _motmetrics():
    try:
        import motmetrics
    except ImportError as e:   # pragma: no cover - the `detection` extra installs it
        raise ImportError("tracking metrics need motmetrics: pip install 'robustlab[detection]'") from e
    return motmetrics


def accumulate(truth: list[tuple[np.ndarray, np.ndarray]], tracks: list[np.ndarray], min_iou: float = 0.5):
    """A ``motmetrics.MOTAccumulator`` over frames: ``truth`` (ids [M], boxes [M, 4]) and ``tracks`` [N, 5]
    (x1, y1, x2, y2, id) per frame."""
    mm = _motmetrics()
    acc = mm.MOTAccumulator(auto_id=True)
    for (gt_ids, gt_boxes), hyp in zip(truth, tracks, strict=True):
        hyp = np.asarray(hyp, dtype=np.float64).reshape(-1, 5)
        dist = 1.0 - iou_matrix(gt_boxes, hyp[:, :4])
        dist[dist > 1.0 - min_iou] = np.nan
        acc.update([int(i) for i in gt_ids], [int(i) for i in hyp[:, 4]], dist)
    return acc


def tracking_metrics(truth: list[tuple[np.ndarray, np.ndarray]], tracks: list[np.ndarray],
                     min_iou: float = 0.5) -> dict:
    """MOTA, IDF1, id switches, misses, false positives, ground-truth objects and mostly-tracked trajectories."""
    mm = _motmetrics()
    summary = mm.metrics.create().compute(accumulate(truth, tracks, min_iou), metrics=list(METRICS), name="seq")
    return {k: float(summary[k].iloc[0]) for k in METRICS}
