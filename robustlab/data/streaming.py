"""Data that does not fit in memory: image files listed once per split and decoded on the fly by a
``torch.utils.data.DataLoader`` (worker processes, prefetching), with the standard ImageNet transforms.

Data specs (names ``load_dataset`` accepts, so every verb's ``--data`` takes them)::

    imagefolder:PATH[?size=S&workers=W]  PATH/<class>/<image>; val and test held out of it by seeded fractions
    imagenet:PATH[?size=S&workers=W]     PATH/train/<class>/<image> (train, val held out by a seeded fraction)
                                         and PATH/val/<class>/<image> (the test split)

The query declares the ``StreamSettings``: ``size`` (default 224), the side of the square crops the model
sees, and ``workers`` (default 0: decode in this process), the DataLoader's worker processes. Class
indices follow the sorted class folder names (the train tree's, for ImageNet). Every image is
converted to the mode of the first one listed (grey ``L`` or ``RGB``) and returned as float32 CHW in
[0, 1]; normalisation stays inside the model.

Transforms (the torchvision recipe, written with PIL and numpy): training batches (``batches_at`` with
an ``augment_seed``, on the train split) take a random-resized crop and a horizontal flip drawn from a
generator seeded by (augment seed, file index), so every epoch's batches are reproducible in any
worker; every other read resizes the short side to ``round(size * 256 / 224)`` and crops the centre.
"""
from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
import torch
from pydantic import Field

from ..errors import InputError
from ..settings import StrictSettings
from .formats import IMAGE_SUFFIXES
from .splits import holdout_index

__all__ = ["StreamSettings", "StreamingDataset", "data_identity", "ImageList", "list_image_folder", "load_stream", "STREAM_SOURCES",
           "center_crop", "resize_short_side", "random_resized_crop", "eval_transform", "train_transform",
           "NotInMemoryError"]

STREAM_SOURCES = ("imagefolder", "imagenet")
EVAL_RESIZE_RATIO = 256 / 224  # ImageNet evaluation: resize the short side to 256, crop 224


class NotInMemoryError(InputError, AttributeError):
    """A streamed data set was asked for all its inputs at once (``.x``)."""


class StreamSettings(StrictSettings):
    """How a streamed image source is read: the query of ``imagefolder:PATH?size=224&workers=8``."""

    settings_name: ClassVar[str] = "the streaming data settings (the query after '?' in the data spec)"

    size: int = Field(224, ge=1, le=4096, description="side of the square crops the model sees")
    workers: int = Field(0, ge=0, le=256, description="DataLoader worker processes (0: decode in this process)")


def parse_stream_spec(rest: str) -> tuple[Path, StreamSettings]:
    """``PATH[?key=value&...]`` -> (PATH, its ``StreamSettings``); InputError for a bad query."""
    path, _, query = rest.partition("?")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InputError(f"bad data spec query {query!r}: write key=value pairs joined by '&', e.g. "
                         "imagefolder:DIR?size=224&workers=4") from None
    return Path(path), StreamSettings(**dict(pairs))


def data_identity(name: str) -> str:
    """`name` without the settings that do not change the data it gives (a streamed source's
    ``workers``): two runs whose names have the same identity read the same points (a resume check)."""
    source, colon, rest = str(name).partition(":")
    if not (colon and source.lower() in STREAM_SOURCES and "?" in rest):
        return name
    path, _, query = rest.partition("?")
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "workers"]
    return f"{source}:{path}" + (f"?{urllib.parse.urlencode(sorted(kept))}" if kept else "")


# ----- the two transforms ------------------------------------------------------------------------------

def resize_short_side(image, short: int):
    """`image` (PIL) resized so that its shorter side is `short` pixels, keeping the aspect ratio: the
    longer side becomes ``int(short * long / shorter)`` (bilinear, antialiased by PIL)."""
    from PIL import Image

    w, h = image.size
    if min(w, h) == short:
        return image
    size = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
    return image.resize(size, Image.BILINEAR)


def center_crop(image, size: int):
    """The central ``size x size`` window of `image` (PIL), its corner at ``round((W - size) / 2)``,
    ``round((H - size) / 2)``; an image smaller than `size` is padded with zeros around it."""
    w, h = image.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def random_resized_crop(image, size: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The Inception crop (Szegedy et al. 2015, "Going deeper with convolutions"): a window covering a
    uniform fraction in `scale` of the image area, with an aspect ratio w/h log-uniform in `ratio`, at a
    uniform position, resized to ``size x size``. After 10 draws that do not fit, the largest central
    window whose ratio lies in `ratio`."""
    from PIL import Image

    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return image.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    cw, ch = w, h
    if w / h < ratio[0]:
        ch = int(round(w / ratio[0]))
    elif w / h > ratio[1]:
        cw = int(round(h * ratio[1]))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))


def to_chw(image) -> torch.Tensor:
    """A PIL image (``L`` or ``RGB``) as a float32 CHW tensor in [0, 1]."""
    a = np.asarray(image, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def eval_transform(image, size: int) -> torch.Tensor:
    """Evaluation: the short side resized to ``round(size * 256 / 224)``, then the central ``size`` crop."""
    return to_chw(center_crop(resize_short_side(image, int(round(size * EVAL_RESIZE_RATIO))), size))


def train_transform(image, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Training: ``random_resized_crop`` to `size`, then a horizontal flip with probability 1/2 (both
    drawn from `rng`)."""
    from PIL import Image

    image = random_resized_crop(image, size, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return to_chw(image)


def open_image(path: str, mode: str | None = None):
    """The image at `path` (PIL; decoded and converted to `mode` when given, else only its header
    read); InputError naming the file when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im if mode is None else im.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read this image ({type(e).__name__}: {e})") from None


# ----- listing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageList:
    """The image files of one split (sorted by class, then file name), their class indices, the
    class names, and the PIL mode every image is converted to. The paths are one numpy array of
    bytes, not a list of str: forked DataLoader workers then share it without copying (reading a
    Python object writes its reference count, which copies its memory page into every worker)."""

    paths: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    mode: str = "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])


def class_folders(root: Path) -> list[str]:
    """The sorted names of the sub-folders of `root` (the classes); InputError when there is none."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (expected {root}/<class>/<image>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{root}: no class sub-folders found (expected {root}/<class>/<image>.png)")
    return classes


_LISTINGS: dict[tuple, ImageList] = {}  # (root, classes, folder mtimes) -> listing: train and val of one tree list once


def list_image_folder(root: str | Path, classes: list[str] | None = None) -> ImageList:
    """The images of ``root/<class>/<image>`` in sorted order, without reading them (only the first
    image's header, for its mode). ``classes``: the class names that give the indices (a val tree
    labelled by its train tree's classes); a folder outside them is an InputError. A folder listed
    before in this process, none of whose class folders changed since (mtimes), is not listed again."""
    root = Path(root)
    folders = class_folders(root)
    stamp = tuple((root / name).stat().st_mtime_ns for name in folders)
    key = (str(root.resolve()), None if classes is None else tuple(classes), tuple(folders), stamp)
    if key not in _LISTINGS:
        if len(_LISTINGS) >= 8:
            _LISTINGS.pop(next(iter(_LISTINGS)))
        _LISTINGS[key] = _list_images(root, folders, classes)
    return _LISTINGS[key]


def _list_images(root: Path, folders: list[str], classes: list[str] | None) -> ImageList:
    """``list_image_folder`` of the class folders `folders` of `root`, uncached."""
    from PIL import Image

    classes = list(folders if classes is None else classes)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise InputError(f"{root}: class folders {unknown[:5]} are not among the {len(classes)} training classes")
    paths, labels = [], []
    for name in folders:
        files = sorted(f.name for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += [os.fsencode(root / name / f) for f in files]
        labels += [classes.index(name)] * len(files)
    if not paths:
        raise InputError(f"{root}: no images found (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    mode = "L" if open_image(os.fsdecode(paths[0])).mode in ("1", "L", "I", "I;16", "F") else "RGB"
    return ImageList(np.array(paths, dtype=bytes), np.asarray(labels, dtype=np.int64), tuple(classes), mode)


# ----- the data set ----------------------------------------------------------------------------------

class _DecodedImages(torch.utils.data.Dataset):
    """Map-style items for the DataLoader: file index -> (image tensor, label), decoded on the fly."""

    def __init__(self, files: ImageList, size: int, augment_seed: int | None):
        self.files, self.size, self.augment_seed = files, size, augment_seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        im = open_image(self.files.path(i), self.files.mode)
        if self.augment_seed is None:
            x = eval_transform(im, self.size)
        else:
            x = train_transform(im, self.size, np.random.default_rng([self.augment_seed, i]))
        return x, int(self.files.labels[i])


@dataclass(frozen=True, eq=False)
class StreamingDataset:
    """A split of image files (``files``; ``index``: the split's file indices, in its order), with the
    protocol of the in-memory ``Dataset``: ``len``, ``name``, ``classes``, ``num_classes``,
    ``input_shape``, ``subset``, ``take``, ``batches`` and ``batches_at``. ``augment``: whether
    training reads (``batches_at`` with an ``augment_seed``) augment (the train split)."""

    files: ImageList
    index: np.ndarray
    name: str
    settings: StreamSettings
    augment: bool = False

    def __len__(self) -> int:
        return int(len(self.index))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return _DecodedImages(self.files, self.settings.size, None)[int(self.index[i])]

    @property
    def x(self):
        raise NotInMemoryError(
            f"{self.name}: {len(self)} images are streamed from disk, never held in memory at once; this needs "
            "the inputs in memory: read them by batches (data.batches), or use an .npz / in-memory data set")

    @property
    def classes(self) -> list[str]:
        return list(self.files.classes)

    @property
    def num_classes(self) -> int:
        return len(self.files.classes)

    @property
    def labels(self) -> torch.Tensor:
        """The split's int64 labels, in order (read from the listing, not the images)."""
        return torch.from_numpy(self.files.labels[self.index])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1 if self.files.mode == "L" else 3, self.settings.size, self.settings.size)

    def subset(self, n: int | None) -> "StreamingDataset":
        if n is None or n >= len(self):
            return self
        return replace(self, index=self.index[:n])

    def take(self, idx) -> "StreamingDataset":
        """The samples `idx` (a shard of a rank, a shuffled subset)."""
        return replace(self, index=self.index[np.asarray(idx, dtype=np.int64)])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        return self.batches_at(order[i:i + batch_size] for i in range(0, len(self), batch_size))

    def batches_at(self, index_batches: Iterable, pin_memory: bool = False, augment_seed: int | None = None
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` for each index tensor of `index_batches`, in order, decoded by a DataLoader with
        ``settings.workers`` worker processes (prefetching). With ``augment_seed`` (the training loop's
        seed of the epoch) a train split takes the training transform, seeded per (augment_seed, file)."""
        batch_files = [self.index[np.asarray(b, dtype=np.int64)].tolist() for b in index_batches]
        seed = augment_seed if self.augment else None
        workers = self.settings.workers
        loader = torch.utils.data.DataLoader(
            _DecodedImages(self.files, self.settings.size, seed), batch_sampler=[b for b in batch_files if b],
            num_workers=workers, pin_memory=pin_memory and torch.cuda.is_available(),
            prefetch_factor=2 if workers else None)
        try:
            batches = iter(loader)
            pending = next(batches, None)
            while pending is not None:
                # one batch ahead: reading past the last one ends the workers now, not when this generator is collected
                following = next(batches, None)
                yield pending[0], pending[1]
                pending = following
        except InputError as e:  # from a worker: its message holds the worker's traceback; keep the error's line
            message = str(e).strip().splitlines()[-1].split("InputError: ", 1)[-1]
            e.__traceback__ = batches = None  # drop the loader: its workers end now, not when the error is collected
            raise InputError(message) from None


def load_stream(kind: str, rest: str, split: str, seed: int, val_fraction: float) -> StreamingDataset:
    """One split of the streamed source ``kind:rest`` (see the module docstring): train/val/test of an
    image folder held out as ``load_dataset`` holds out user folders; ImageNet's val tree is the test split."""
    root, settings = parse_stream_spec(rest)
    if kind == "imagenet":
        for sub in ("train", "val"):
            if not (root / sub).is_dir():
                raise InputError(f"{root}: an ImageNet-style tree needs {root / sub}/<class>/<image> (train and val)")
        if split == "test":
            files = list_image_folder(root / "val", class_folders(root / "train"))
            return StreamingDataset(files, np.arange(len(files)), root.name, settings)
        files = list_image_folder(root / "train")
    elif kind == "imagefolder":
        files = list_image_folder(root)
    else:
        raise InputError(f"unknown streamed source {kind!r}; known: {', '.join(STREAM_SOURCES)}")
    index = holdout_index(len(files), split, seed, val_fraction, str(root), has_test=kind == "imagenet")
    return StreamingDataset(files, index, root.name, settings, augment=split in ("train", "all"))
