"""Detection data offline: procedural scenes of several shapes per image (the ``shapes`` generator's
masks), with occlusion, boxes and classes; and any COCO-format folder (an instances JSON and its
images) read with pycocotools.

A data set is images ``x`` [N, 3, H, W] in [0, 1] and one ``Detections`` (ground truth, score 1) per
image; ``(x, targets)`` is also what the engine's batch reader takes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.shapes import SHAPE_CLASSES, shape_mask
from ...errors import InputError
from ...targets import index_target
from .boxes import Detections, truth

#: the default classes of the procedural scenes: shapes that stay distinct when small
SCENE_CLASSES = ("disc", "square", "triangle", "cross")


@dataclass
class DetectionDataset:
    """Images x [N, C, H, W] in [0, 1], ground truth per image, class names."""

    x: torch.Tensor
    targets: list[Detections]
    classes: tuple[str, ...]
    name: str = "scenes"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx) -> "DetectionDataset":
        idx = torch.arange(len(self))[idx].reshape(-1)
        return DetectionDataset(self.x[idx], index_target(self.targets, idx), self.classes, self.name)

    def to(self, device) -> "DetectionDataset":
        return DetectionDataset(self.x.to(device), [t.to(device) for t in self.targets], self.classes, self.name)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], index_target(self.targets, idx)


def _draw_scene(rng: np.random.Generator, size: int, kinds: list[int], max_objects: int, min_visible: float):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    texture = 0.08 * np.sin(xx * rng.uniform(0.2, 0.8) + yy * rng.uniform(0.2, 0.8))
    img = bg[:, None, None] + texture[None]
    owner = np.full((size, size), -1)
    masks, labels = [], []
    for j in range(int(rng.integers(1, max_objects + 1))):
        k = int(rng.integers(len(kinds)))
        fg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        while np.abs(fg - bg).sum() < 0.6:
            fg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        r = rng.uniform(size * 0.09, size * 0.2)
        cy, cx = rng.uniform(r, size - r, 2)
        m = shape_mask(kinds[k], yy, xx, cy, cx, r)
        img = np.where(m[None], fg[:, None, None], img)
        owner[m] = j
        masks.append(m)
        labels.append(k)
    boxes, kept = [], []
    for j, m in enumerate(masks):  # later shapes occlude earlier ones; keep those still visible enough
        if m.sum() and (owner == j).sum() >= min_visible * m.sum():
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            kept.append(labels[j])
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)
    return img, boxes, kept


def synthetic_scenes(n: int = 512, seed: int = 0, size: int = 64, classes: tuple[str, ...] = SCENE_CLASSES,
                     max_objects: int = 3, min_visible: float = 0.5) -> DetectionDataset:
    """``n`` seeded scenes of ``size`` x ``size`` px: 1 to ``max_objects`` shapes (radius 9-20% of
    the image) drawn in turn on a textured background, later ones occluding earlier ones; an object
    is labelled (its full shape's tight box and class) when at least ``min_visible`` of it shows."""
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown or not classes:
        raise InputError(f"scene classes must be among {SHAPE_CLASSES}, got {unknown or classes}")
    if n < 0 or size < 16 or max_objects < 1:
        raise InputError(f"need n >= 0, size >= 16 and max_objects >= 1, got {n}, {size}, {max_objects}")
    rng = np.random.default_rng(seed)
    kinds = [SHAPE_CLASSES.index(c) for c in classes]
    x = np.empty((n, 3, size, size), dtype=np.float32)
    targets = []
    for i in range(n):
        x[i], boxes, labels = _draw_scene(rng, size, kinds, max_objects, min_visible)
        targets.append(truth(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels)))
    return DetectionDataset(torch.from_numpy(x), targets, tuple(classes), f"scenes-{seed}")


def _coco_file(folder: Path, annotations: str | None) -> Path:
    if annotations is not None:
        return folder / annotations
    found = sorted(folder.glob("*.json")) + sorted(folder.glob("annotations/*.json"))
    if len(found) != 1:
        raise InputError(f"{folder}: expected one instances JSON (or pass its name), found {len(found)}")
    return found[0]


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def coco_folder(folder: str | Path, annotations: str | None = None, size: int = 64, images: str = "images",
                limit: int | None = None) -> DetectionDataset:
    """A COCO-format folder: ``annotations`` (an instances JSON; default the one .json in the folder or
    in annotations/) with its images under ``images/`` (or the folder itself). Images are resized to
    ``size`` x ``size`` and boxes scaled with them; crowd annotations are left out; categories are
    renumbered 0..K-1 in id order (their names kept)."""
    from pycocotools.coco import COCO

    folder = Path(folder)
    path = _coco_file(folder, annotations)
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable COCO JSON ({e})") from None
    coco = COCO(str(path))
    cat_ids = sorted(coco.getCatIds())
    label_of = {c: i for i, c in enumerate(cat_ids)}
    img_dir = folder / images if (folder / images).is_dir() else folder
    xs, targets = [], []
    for img_id in sorted(coco.getImgIds())[:limit]:
        info = coco.loadImgs(img_id)[0]
        sx, sy = size / info["width"], size / info["height"]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)]
        boxes = [[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                  (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns]
        xs.append(_read_image(img_dir / info["file_name"], size))
        unknown = sorted({a["category_id"] for a in anns} - set(label_of))
        if unknown:
            raise InputError(f"{path}: image {img_id} has annotations of unlisted categories {unknown}")
        targets.append(truth(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                             torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)))
    if not xs:
        raise InputError(f"{path} lists no images")
    names = tuple(c["name"] for c in coco.loadCats(cat_ids))
    return DetectionDataset(torch.from_numpy(np.stack(xs)), targets, names, f"coco:{folder.name}")
