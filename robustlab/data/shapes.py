"""`shapes`: a procedural RGB 32x32 10-class dataset, a CIFAR-sized stand-in that needs no download.

Each image is one coloured shape (random position, size, colour) on a textured background of
another colour, with pixel noise; the class is the shape.
"""
from __future__ import annotations

import numpy as np

SHAPE_CLASSES = (
    "disc", "square", "triangle", "cross", "ring",
    "diamond", "h-bars", "v-bars", "diagonal", "checker",
)


def _masks(kind: int, yy, xx, cy, cx, r):
    dy, dx = yy - cy, xx - cx
    if kind == 0:
        return dy ** 2 + dx ** 2 <= r ** 2
    if kind == 1:
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if kind == 2:
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == 3:
        return ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))
    if kind == 4:
        d = dy ** 2 + dx ** 2
        return (d <= r ** 2) & (d >= (0.55 * r) ** 2)
    if kind == 5:
        return np.abs(dy) + np.abs(dx) <= r
    box = (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if kind == 6:
        return box & ((np.floor(dy / 2.5).astype(int) % 2) == 0)
    if kind == 7:
        return box & ((np.floor(dx / 2.5).astype(int) % 2) == 0)
    if kind == 8:
        return box & (np.abs(dy - dx) <= r * 0.35)
    return box & (((np.floor(dy / 3).astype(int) + np.floor(dx / 3).astype(int)) % 2) == 0)


#: the public name of one shape's mask: ``shape_mask(kind, yy, xx, cy, cx, r) -> bool [H, W]`` (detection scenes)
shape_mask = _masks


def generate_shapes(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n images (float32 [n, 3, size, size] in [0, 1]) and balanced labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(y)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        bg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        fg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        while np.abs(fg - bg).sum() < 0.6:
            fg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        r = rng.uniform(size * 0.22, size * 0.36)
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _masks(int(y[i]), yy, xx, cy, cx, r)
        texture = 0.08 * np.sin(xx * rng.uniform(0.2, 0.8) + yy * rng.uniform(0.2, 0.8))
        img = bg[:, None, None] + texture[None]
        img = np.where(mask[None], fg[:, None, None], img)
        img = img + rng.normal(0, 0.03, img.shape)
        x[i] = np.clip(img, 0, 1)
    return x, y.astype(np.int64)
