"""Short video sequences of moving, crossing shapes with ground-truth track identities.

Each sequence is a static textured background (as in ``robustlab.data.shapes`` and the detection scenes, whose
classes and colours it shares, so the task's detector sees them) over which ``n_objects`` shapes move at constant
velocity. Objects come in crossing pairs: both members of a pair pass through the same point
``c`` at the middle frame from directions at least 60 degrees apart, so the later-drawn one occludes the other
around the crossing; an odd object out moves alone. Everything is drawn from ``numpy.random.default_rng(seed)``,
so a sequence is a pure function of its arguments.

Ground truth per frame and object: the amodal box (xyxy pixels, the extent of the whole shape, occluded or not),
the visible fraction of the shape's pixels and the object's identity (1..K) and shape class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.shapes import SHAPE_CLASSES, shape_mask
from ...errors import InputError
from .data import SCENE_CLASSES


@dataclass(frozen=True)
class VideoSequence:
    """``frames`` float32 [T, 3, H, W] in [0, 1]; ``boxes`` float32 [T, K, 4] (xyxy pixels, amodal);
    ``visible`` float32 [T, K] (fraction of the shape's pixels not covered by shapes drawn later);
    ``ids`` int64 [K] (track identities, 1..K); ``labels`` int64 [K] (indices into ``classes``)."""

    frames: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    classes: tuple = SCENE_CLASSES

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def detections(self, min_visible: float = 0.3) -> list[np.ndarray]:
        """Perfect detections per frame: the boxes [M, 4] of the objects at least ``min_visible`` visible."""
        return [self.boxes[t][self.visible[t] >= min_visible] for t in range(len(self))]

    def truth(self, min_visible: float = 0.3) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids [M], boxes [M, 4]) per frame of the objects at least ``min_visible`` visible (the tracking truth)."""
        return [(self.ids[v], self.boxes[t][v]) for t in range(len(self)) for v in [self.visible[t] >= min_visible]]


def _paths(rng, n_objects: int, frames: int, size: int, radius: np.ndarray) -> np.ndarray:
    """Centres [T, K, 2] (y, x): pairs crossing at the middle frame, a lone object anywhere else."""
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2
    centres = np.empty((frames, n_objects, 2))
    for k in range(0, n_objects, 2):
        lone = k + 1 == n_objects
        c = rng.uniform(0.25 * size, 0.75 * size, 2) if lone else rng.uniform(0.4 * size, 0.6 * size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        turn = rng.uniform(np.pi / 3, np.pi - np.pi / 3) * rng.choice([-1, 1])
        for j, a in enumerate((angle, angle + turn)[: n_objects - k]):
            reach = max(min(c.min(), size - c.max()) - radius[k + j] - 1, 0)   # stays inside the frame
            speed = rng.uniform(0.5, 1.0) * reach / max((frames - 1) / 2, 1)
            centres[:, k + j] = c + t[:, None] * speed * np.array([np.sin(a), np.cos(a)])
    return centres


def _draw(frame_bg: np.ndarray, masks: list[np.ndarray], colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the masks in order on the background; the visible fraction of each (later ones occlude)."""
    img = frame_bg.copy()
    covered = np.zeros(masks[0].shape, dtype=bool)
    visible = np.empty(len(masks), dtype=np.float32)
    for k in range(len(masks) - 1, -1, -1):   # back to front: what is drawn later covers what is drawn earlier
        m = masks[k]
        visible[k] = (m & ~covered).sum() / max(int(m.sum()), 1)
        covered |= m
    for k, m in enumerate(masks):
        img = np.where(m[None], colours[k][:, None, None], img)
    return img, visible


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _colours(rng, n: int, bg: np.ndarray) -> np.ndarray:
    """One colour per object, each differing from the background by at least 0.6 (summed over channels)."""
    out = np.empty((n, 3), dtype=np.float32)
    for k in range(n):
        out[k] = rng.uniform(0.0, 1.0, 3)
        while np.abs(out[k] - bg).sum() < 0.6:
            out[k] = rng.uniform(0.0, 1.0, 3)
    return out


def make_sequence(seed: int = 0, frames: int = 16, n_objects: int = 3, size: int = 64,
                  classes: tuple[str, ...] = SCENE_CLASSES) -> VideoSequence:
    """One sequence of ``frames`` RGB ``size`` x ``size`` frames with ``n_objects`` moving shapes of ``classes``
    (names from ``SHAPE_CLASSES``; by default the detection scenes' classes), see the module."""
    if frames < 2 or n_objects < 1 or size < 32:
        raise InputError(f"a sequence needs frames >= 2, n_objects >= 1 and size >= 32, got {frames}, {n_objects}, {size}")
    if not classes or any(c not in SHAPE_CLASSES for c in classes):
        raise InputError(f"sequence classes must be among {SHAPE_CLASSES}, got {classes}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n_objects).astype(np.int64)
    kinds = [SHAPE_CLASSES.index(classes[i]) for i in labels]
    radius = rng.uniform(0.1 * size, 0.15 * size, n_objects)
    bg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    colours = _colours(rng, n_objects, bg)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = 0.08 * np.sin(xx * rng.uniform(0.2, 0.8) + yy * rng.uniform(0.2, 0.8))
    background = bg[:, None, None] + texture[None]
    centres = _paths(rng, n_objects, frames, size, radius)
    out = np.empty((frames, 3, size, size), dtype=np.float32)
    boxes = np.empty((frames, n_objects, 4), dtype=np.float32)
    visible = np.empty((frames, n_objects), dtype=np.float32)
    for t in range(frames):
        masks = [shape_mask(kinds[k], yy, xx, centres[t, k, 0], centres[t, k, 1], radius[k]) for k in range(n_objects)]
        img, visible[t] = _draw(background, masks, colours)
        boxes[t] = np.stack([_box(m) for m in masks])
        out[t] = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return VideoSequence(out, boxes, visible, np.arange(1, n_objects + 1, dtype=np.int64), labels, tuple(classes))
