"""Readers for user data on disk: .npz, image folders, MNIST IDX files, CIFAR-10/100 python batches.

Every reader returns (x, y): float32 [N, C, H, W] in [0, 1] and int64 [N], checked at load: at least one
sample, finite pixels, and integer labels in [0, MAX_CLASSES) (a label of 1e9 would otherwise ask for a
model with a billion outputs). An .npz is read without unpickling (object arrays are refused).
"""
from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
_SAVE_HINT = "save the data with np.savez(path, x=images, y=labels)"
MAX_CLASSES = 100_000  # labels must lie in [0, MAX_CLASSES): the classifier's output layer has one unit per class


def check_finite_pixels(a: np.ndarray, source: str = "images") -> None:
    """InputError naming `source` and how many values are NaN or inf (they would pass a range check)."""
    if np.issubdtype(a.dtype, np.floating):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise InputError(f"{source}: {bad} NaN or inf pixel values; replace them (e.g. np.nan_to_num) "
                             "or drop those images")


def check_labels(labels, source: str = "labels") -> np.ndarray:
    """The labels as int64 class indices, or InputError: non-integer values, or any outside [0, MAX_CLASSES)."""
    y = np.asarray(labels)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise InputError(f"{source}: labels must be integer class indices, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise InputError(f"{source}: labels must be integer class indices, found non-integer values")
    outside = (y < 0) | (y >= MAX_CLASSES)
    if outside.any():
        raise InputError(
            f"{source}: {int(outside.sum())} of {y.size} labels lie outside [0, num_classes) "
            f"(e.g. {y[outside].flat[0]:g}); "
            f"labels are class indices 0..num_classes-1 with num_classes at most {MAX_CLASSES:,}")
    return y.astype(np.int64)


def checked_samples(x: np.ndarray, y, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a reader after the load checks: at least one sample and class-index labels (the pixels are
    checked by ``to_nchw_unit``)."""
    if len(x) == 0:
        raise InputError(f"{source}: no samples (images of shape {tuple(np.shape(x))}); the data set is empty")
    return x, check_labels(y, source)


def to_nchw_unit(images: np.ndarray, source: str = "images") -> np.ndarray:
    """Convert images (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 or float, to float32 NCHW in [0, 1];
    NaN or inf values are refused (``check_finite_pixels``), naming `source`."""
    a = np.asarray(images)
    check_finite_pixels(a, source)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim != 4:
        raise InputError(f"images must have 3 or 4 dimensions, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if a.size and (a.min() < 0 or a.max() > 1):
        if a.min() >= 0 and a.max() <= 255:
            return a / 255.0
        raise InputError(f"float images must lie in [0, 1] or [0, 255], got [{a.min()}, {a.max()}]")
    return a


def _open_npz(path):
    """np.load without unpickling; InputError in one line for a file that is not an .npz archive."""
    try:
        f = np.load(path, allow_pickle=False)
    except ValueError:  # not a zip: numpy would read it as a pickle, which is never loaded here
        raise InputError(f"{path}: not a readable .npz archive (not a zip of arrays; pickles are never loaded); "
                         f"{_SAVE_HINT}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        reason = (str(e).splitlines() or [""])[0]
        raise InputError(f"{path}: not a readable .npz archive ({type(e).__name__}: {reason}); {_SAVE_HINT}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not a readable .npz archive (a single .npy array); {_SAVE_HINT}")
    return f


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An .npz with images under x / images / X / data and labels under y / labels / Y / targets."""
    with _open_npz(path) as f:
        keys = set(f.files)
        xk = next((k for k in ("x", "images", "X", "data") if k in keys), None)
        yk = next((k for k in ("y", "labels", "Y", "targets") if k in keys), None)
        if xk is None or yk is None:
            raise InputError(f"{path}: expected arrays 'x' and 'y' (found {sorted(keys)})")
        try:
            x, y = f[xk], f[yk]
        except ValueError:  # numpy refuses object arrays without allow_pickle
            raise InputError(f"{path}: holds object arrays (pickled Python objects), which could run code when "
                             "loaded, so they are refused; save plain numeric arrays with np.savez") from None
    if len(x) != len(y):
        raise InputError(f"{path}: {len(x)} images but {len(y)} labels")
    x, y = checked_samples(x, y, str(path))
    return to_nchw_unit(x, str(path)), y


def load_image_folder(root: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``root/<class name>/<image>``; classes in sorted order. Returns (x, y, class_names)."""
    from PIL import Image

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{root}: no class sub-folders found (expected root/<class>/<image>.png)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))
                labels.append(label)
    if not images:
        raise InputError(f"{root}: no images found")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"{root}: images have different shapes {sorted(shapes)}; resize them first")
    return to_nchw_unit(np.stack(images), str(root)), np.asarray(labels, dtype=np.int64), classes


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), optionally gzipped."""
    path = Path(path)
    with _open_maybe_gz(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise InputError(f"{path}: unknown IDX data type 0x{dtype_code:02x}")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise InputError(f"{path}: truncated IDX file ({arr.size} values, header says {dims})")
    return arr.reshape(dims)


def load_mnist_idx(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST/Fashion-MNIST IDX files in `root` (train-images-idx3-ubyte[.gz], t10k-...)."""
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
            for cand in (root / name, root / name.replace("-idx", ".idx")):
                if cand.exists():
                    return cand
        raise InputError(f"{root}: no {prefix}-{kind} file found")
    x, y = checked_samples(read_idx(find("images-idx3-ubyte")), read_idx(find("labels-idx1-ubyte")), str(root))
    return to_nchw_unit(x, str(root)), y


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle that names any other callable (the
    way a payload runs code) is refused before anything is called."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("builtins", "bytearray"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickled_batch(path: str | Path) -> dict:
    """One CIFAR python batch: a dict of arrays, lists and bytes. Objects that could run code are refused."""
    with open(path, "rb") as f:
        try:
            d = _BatchUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as e:
            raise InputError(
                f"{path}: not a plain CIFAR python batch ({e}); a pickle naming other callables could run code "
                "when loaded, so it is refused. Re-export the data as .npz (x, y) or get the original CIFAR files"
            ) from None
        except Exception as e:
            raise InputError(f"{path}: cannot read this CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise InputError(f"{path}: a CIFAR python batch is a dict, got {type(d).__name__}")
    return d


def load_cifar_batches(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python pickles.

    Read with a restricted unpickler (``load_pickled_batch``): containers and numpy arrays only."""
    root = Path(root)
    if (root / "data_batch_1").exists() or (root / "test_batch").exists():
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        names = ["train"] if split == "train" else ["test"]
    xs, ys = [], []
    for name in names:
        path = root / name
        if not path.exists():
            raise InputError(f"{root}: missing CIFAR batch file {name!r}")
        d = load_pickled_batch(path)
        data = d.get(b"data", d.get("data"))
        labels = next((d[k] for k in (b"labels", "labels", b"fine_labels", "fine_labels") if k in d), None)
        if data is None or labels is None:
            raise InputError(f"{path}: not a CIFAR python batch (keys {list(d)[:6]})")
        xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(check_labels(labels, str(path)))
    return to_nchw_unit(np.concatenate(xs), str(root)), np.concatenate(ys)
