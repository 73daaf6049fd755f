"""A SORT-style multi-object tracker (Bewley et al. 2016, "Simple online and realtime tracking").

Each track is a constant-velocity Kalman filter on the box state ``(cx, cy, s, r)`` (centre, area ``s = w h`` and
aspect ratio ``r = w / h``, the ratio held constant): the state is ``[cx, cy, s, r, vx, vy, vs]``, the measurement
the first four. Per frame: every track predicts, the detections are assigned to the predictions by the Hungarian
method (``scipy.optimize.linear_sum_assignment``) on the cost ``-IoU``, pairs under ``iou_threshold`` are
rejected, matched tracks update, unmatched detections start tracks and tracks unmatched for more than ``max_age``
frames end. A track is reported once it has been matched ``min_hits`` frames in a row (or during the first
``min_hits`` frames of the sequence), and only on the frames it is matched. The frame that starts a track counts
as its first match; Bewley et al.'s SORT counts from the match after it, so it reports a new track one frame later.

The tracker works on the host in numpy (a few boxes per frame); detections come from any detector as
``[M, 4]`` xyxy boxes in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
import torch

from ...errors import InputError
from .boxes import box_iou


def box_to_z(box: np.ndarray) -> np.ndarray:
    """xyxy -> the measurement (cx, cy, s, r): centre, area w*h, aspect w/h."""
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / max(h, 1e-9)], dtype=np.float64)


def z_to_box(z: np.ndarray) -> np.ndarray:
    """(cx, cy, s, r) -> xyxy, with w = sqrt(s r), h = s / w."""
    w = np.sqrt(max(z[2] * z[3], 0.0))
    h = z[2] / w if w > 0 else 0.0
    return np.array([z[0] - w / 2, z[1] - h / 2, z[0] + w / 2, z[1] + h / 2], dtype=np.float64)


class KalmanBoxFilter:
    """Kalman filter x' = F x + w (w ~ N(0, Q)), z = H x + v (v ~ N(0, R)) on x = [cx, cy, s, r, vx, vy, vs].

    predict: x <- F x, P <- F P F^T + Q. update(z): y = z - H x, S = H P H^T + R, K = P H^T S^-1,
    x <- x + K y, P <- (I - K H) P. The velocities start unknown (variance 1e3 x ``p0``, 1e4 at the default ``p0`` = 10); a predicted negative area
    stops the area's velocity first (as SORT does).
    """

    F = np.eye(7) + np.eye(7, k=4)
    H = np.eye(4, 7)

    def __init__(self, box: np.ndarray, r_scale: tuple = (1.0, 1.0, 10.0, 10.0),
                 q_scale: tuple = (1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4), p0: float = 10.0):
        self.x = np.zeros(7)
        self.x[:4] = box_to_z(np.asarray(box, dtype=np.float64))
        self.P = np.diag([p0] * 4 + [p0 * 1e3] * 3)
        self.R = np.diag(r_scale)
        self.Q = np.diag(q_scale)

    def predict(self) -> np.ndarray:
        """Advance one frame; the predicted box (xyxy)."""
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q
        return self.box()

    def update(self, box: np.ndarray) -> None:
        """Correct the state with a measured box (xyxy)."""
        y = box_to_z(np.asarray(box, dtype=np.float64)) - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(7) - K @ self.H) @ self.P

    def box(self) -> np.ndarray:
        return z_to_box(self.x[:4])

    @property
    def velocity(self) -> np.ndarray:
        """The centre's velocity (vx, vy) in pixels per frame."""
        return self.x[4:6].copy()


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] (numpy, float64) of xyxy boxes a [N, 4] and b [M, 4]: ``boxes.box_iou`` on the host."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return box_iou(a, b).numpy()


def assign(iou: np.ndarray, iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian assignment maximising the total IoU of ``iou`` [detections, tracks]; pairs under the threshold
    are rejected. Returns (matches [P, 2] (detection, track), unmatched detections, unmatched tracks)."""
    n_det, n_trk = iou.shape
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.empty(0, int), np.empty(0, int))
    keep = iou[rows, cols] >= iou_threshold
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64).reshape(-1, 2)
    return (matches, np.setdiff1d(np.arange(n_det), matches[:, 0]), np.setdiff1d(np.arange(n_trk), matches[:, 1]))


@dataclass
class Track:
    """One track: its id, Kalman filter and counters (frames since its last match, consecutive matches)."""

    id: int
    kf: KalmanBoxFilter
    since_update: int = 0
    hit_streak: int = 0
    hits: int = 0
    history: list = field(default_factory=list)   # (frame, box) of the frames it was reported


class SortTracker:
    """SORT: ``update(boxes [M, 4])`` per frame returns the reported tracks as an array [N, 5] (x1, y1, x2, y2, id).

    ``max_age``: frames a track survives unmatched (coasting on its prediction); ``min_hits``: consecutive
    matches before a track is reported; ``iou_threshold``: the least IoU of an assignment. Ids start at 1.
    """

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3):
        if max_age < 0 or min_hits < 0 or not 0 <= iou_threshold <= 1:
            raise InputError(f"SORT needs max_age >= 0, min_hits >= 0 and iou_threshold in [0, 1], got "
                             f"{max_age}, {min_hits}, {iou_threshold}")
        self.max_age, self.min_hits, self.iou_threshold = int(max_age), int(min_hits), float(iou_threshold)
        self.tracks: list[Track] = []
        self.frame = 0
        self._next_id = 1

    def predict(self) -> np.ndarray:
        """Advance every track one frame; their predicted boxes [N, 4] (in ``self.tracks`` order)."""
        return np.array([t.kf.predict() for t in self.tracks]).reshape(-1, 4)

    def update(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.frame += 1
        predicted = self.predict()
        matches, new, _ = assign(iou_matrix(boxes, predicted), self.iou_threshold)
        for t in self.tracks:
            t.since_update += 1
        for d, k in matches:
            track = self.tracks[k]
            track.kf.update(boxes[d])
            track.since_update, track.hits = 0, track.hits + 1
        for t in self.tracks:
            t.hit_streak = t.hit_streak + 1 if t.since_update == 0 else 0
        for d in new:
            self.tracks.append(Track(self._next_id, KalmanBoxFilter(boxes[d]), hit_streak=1, hits=1))
            self._next_id += 1
        self.tracks = [t for t in self.tracks if t.since_update <= self.max_age]
        return self._report()

    def matched(self) -> np.ndarray:
        """The tracks matched on the last frame, reported or not yet (min_hits), as [N, 5] (x1, y1, x2, y2, id)."""
        return np.array([[*t.kf.box(), t.id] for t in self.tracks if t.since_update == 0]).reshape(-1, 5)

    def track(self, track_id: int) -> Track | None:
        """The live track with this id (None once it has ended)."""
        return next((t for t in self.tracks if t.id == track_id), None)

    def _report(self) -> np.ndarray:
        rows = []
        for t in self.tracks:
            if t.since_update == 0 and (t.hit_streak >= self.min_hits or self.frame <= self.min_hits):
                box = t.kf.box()
                t.history.append((self.frame - 1, box))
                rows.append([*box, t.id])
        return np.array(rows, dtype=np.float64).reshape(-1, 5)


def track_sequence(detections: list[np.ndarray], **sort_options) -> list[np.ndarray]:
    """Run a fresh ``SortTracker`` over per-frame detections ([M, 4] each); the reported [N, 5] per frame."""
    tracker = SortTracker(**sort_options)
    return [tracker.update(d) for d in detections]
