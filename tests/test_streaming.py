"""Streamed data (robustlab.data.streaming) on small image files the tests write: listing and labels,
the transforms, DataLoader workers, per-epoch and per-rank shuffling, training, resume and evaluation
through the CLI; and ``cifar10:PATH`` in memory."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import robustlab as rl
from robustlab.data import Dataset, in_memory, load_dataset
from robustlab.data.streaming import (NotInMemoryError, StreamingDataset, eval_transform, random_resized_crop,
                                      train_transform)
from robustlab.errors import InputError
from robustlab.runs.evaluations import default_evaluation
from robustlab.training import TrainConfig, train
from robustlab.training.loop import _epoch_slices
from tests.helpers import cli

CLASSES = ("ant", "bee", "cat")


def _write_folder(root, per_class=6, size=(40, 30), seed=0):
    """CLASSES x `per_class` RGB PNGs of `size` (w, h): class k is brightest in channel k."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
            a[..., k] += 120
            Image.fromarray(a).save(root / name / f"img{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("images") / "shapes3")


def test_listing_labels_and_splits(folder):
    splits = {s: load_dataset(f"imagefolder:{folder}?size=16", s, seed=3) for s in ("train", "val", "test", "all")}
    tr = splits["train"]
    assert isinstance(tr, StreamingDataset) and tr.classes == list(CLASSES) and tr.num_classes == 3
    assert [len(splits[s]) for s in ("train", "val", "test", "all")] == [14, 2, 2, 18]  # round(0.1 * 18) held out twice
    assert tr.input_shape == (3, 16, 16) and tr.name == "shapes3"
    assert sorted(np.concatenate([splits[s].index for s in ("train", "val", "test")]).tolist()) == list(range(18))
    files = tr.files
    paths = [files.path(i) for i in range(len(files))]
    assert paths == sorted(paths) and files.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert all(f"/{CLASSES[y]}/" in paths[i] for i, y in zip(tr.index, tr.labels.tolist()))
    x, y = next(splits["all"].batches(18))
    assert x.shape == (18, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y, splits["all"].labels)
    assert torch.equal(x.mean((2, 3)).argmax(1), y)  # the brightest channel is the class
    again = load_dataset(f"imagefolder:{folder}?size=16", "train", seed=3)
    assert np.array_equal(again.index, tr.index) and again.files is files  # listed once
    with pytest.raises(NotInMemoryError, match="streamed"):
        tr.x
    with pytest.raises(InputError, match="robustlab represent"):
        in_memory(tr, what="robustlab represent")
    with pytest.raises(InputError, match="workers"):
        load_dataset(f"imagefolder:{folder}?workers=-1", "train")
    with pytest.raises(InputError, match="sizes"):
        load_dataset(f"imagefolder:{folder}?sizes=3", "train")


def test_transforms_are_the_standard_ones_and_reproducible():
    im = Image.fromarray(np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3) % 251)  # w 80, h 60
    x = eval_transform(im, 32)  # short side 60 -> round(32 * 256 / 224) = 37, long side int(37 * 80 / 60) = 49
    ref = np.asarray(im.resize((49, 37), Image.BILINEAR), dtype=np.float32)[2:34, 8:40] / 255
    assert torch.allclose(x, torch.from_numpy(ref.transpose(2, 0, 1).copy()))
    a = train_transform(im, 24, np.random.default_rng([7, 3]))
    b = train_transform(im, 24, np.random.default_rng([7, 3]))
    c = train_transform(im, 24, np.random.default_rng([7, 4]))
    assert a.shape == (3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    rng = np.random.default_rng(0)
    for _ in range(20):  # the crop covers a fraction in [0.08, 1] of the image at a ratio in [3/4, 4/3]
        out = random_resized_crop(im, 24, rng)
        assert out.size == (24, 24)


def test_workers_give_the_same_batches_and_epochs_reshuffle_deterministically(folder):
    idx = [torch.tensor([3, 0, 7]), torch.tensor([1, 13]), torch.tensor([5, 2, 9, 4])]
    read = {w: load_dataset(f"imagefolder:{folder}?size=16&workers={w}", "train", seed=1) for w in (0, 2)}
    for seed in (None, 11):  # evaluation and (seeded) training transforms
        b0, b2 = (list(read[w].batches_at(idx, augment_seed=seed)) for w in (0, 2))
        assert [x.shape[0] for x, _ in b0] == [3, 2, 4]
        for (x0, y0), (x2, y2) in zip(b0, b2):
            assert torch.equal(x0, x2) and torch.equal(y0, y2)
        assert all(torch.equal(y, read[0].labels[i]) for (_, y), i in zip(b0, idx))
    aug = [x for x, _ in read[0].batches_at(idx, augment_seed=11)]
    assert not torch.equal(aug[0], list(read[0].batches_at(idx, augment_seed=12))[0][0])
    val = load_dataset(f"imagefolder:{folder}?size=16", "val", seed=1)  # held-out splits never augment
    assert torch.equal(next(val.batches_at([torch.arange(2)], augment_seed=11))[0], next(val.batches(2))[0])


def _slices(n, batch, world, rank, seed, epoch):
    from robustlab.training.loop import _seed

    order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(TrainConfig(seed=seed), epoch)))
    state = SimpleNamespace(steps_per_epoch=-(-n // (batch * world)), global_batch=batch * world, world=world, rank=rank)
    return [idx.tolist() for idx, _, _ in _epoch_slices(order, state)]


def test_epoch_slices_follow_distributed_sampler_semantics():
    one = _slices(14, 4, 1, 0, seed=0, epoch=0)
    assert one == _slices(14, 4, 1, 0, seed=0, epoch=0) and one != _slices(14, 4, 1, 0, seed=0, epoch=1)
    assert one != _slices(14, 4, 1, 0, seed=1, epoch=0)
    assert sorted(sum(one, [])) == list(range(14))
    ranks = [_slices(14, 2, 2, r, seed=0, epoch=0) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == one  # each rank its contiguous half of every global batch
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))


class _Killed(Exception):
    pass


def _train(data, val, cfg, ckpt, resume=False, kill_after=None):
    torch.manual_seed(0)
    model = rl.models.MLP(3 * 16 * 16, 3, hidden=(16,))

    def on_epoch(record):
        if record["epoch"] == kill_after:
            raise _Killed

    try:
        train(model, data, val, cfg, checkpoint_dir=ckpt, resume=resume, on_epoch=on_epoch, progress=False)
    except _Killed:
        pass
    return model


def test_streamed_training_resumes_to_the_same_weights(folder, tmp_path):
    spec = f"imagefolder:{folder}?size=16"
    tr, va = load_dataset(spec, "train"), load_dataset(spec, "val")
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, eval_n=4, eval_steps=2, method="pgd", eps=0.03)
    full = _train(tr, va, cfg, tmp_path / "full")
    _train(tr, va, cfg, tmp_path / "killed", kill_after=1)
    resumed = _train(tr, va, cfg, tmp_path / "killed", resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_train_and_evaluate_a_streamed_folder_through_the_cli(folder, tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--data", f"imagefolder:{folder}?size=16&workers=2", "--model", "mlp",
                         "--model-kwargs", '{"hidden": [16]}', "--epochs", "2", "--batch-size", "4", "--eval-n", "4",
                         "--eval-steps", "2", "--runs", tmp_path, "--name", "folder")
    assert code == 0, err
    metrics = [r for r in rl.runs.Run(tmp_path / "folder").read_metrics() if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in metrics] == [1, 2] and all(0 <= r["train_acc"] <= 1 for r in metrics)
    again = ["--model", "mlp", "--model-kwargs", '{"hidden": [16]}', "--epochs", "2", "--batch-size", "4", "--eval-n",
             "4", "--eval-steps", "2", "--runs", tmp_path, "--name", "folder", "--resume"]
    assert cli(capsys, "train", "--data", f"imagefolder:{folder}?workers=0&size=16", *again)[0] == 0  # same data
    code, out, err = cli(capsys, "train", "--data", f"imagefolder:{folder}?size=8", *again)
    assert code == 2 and "size=8" in err
    code, out, err = cli(capsys, "evaluate", tmp_path / "folder", "--eps", "0,0.03", "--attacks", "fgsm",
                         "--n", "2", "--batch-size", "1")
    assert code == 0, err
    record = default_evaluation(tmp_path / "folder").record
    assert record["n"] == 2 and record["eps"] == [0.0, 0.03]
    code, out, err = cli(capsys, "attack", tmp_path / "folder", "--attack", "fgsm", "--eps", "0.03", "--n", "2",
                         "--runs", tmp_path)
    assert code == 0, err
    assert torch.load(tmp_path / "attack-fgsm-folder" / "adversarial.pt")["x"].shape == (2, 3, 16, 16)
    code, out, err = cli(capsys, "represent", tmp_path / "folder", "--analyses", "cka")  # needs whole splits in memory
    assert code == 2 and "robustlab represent needs the whole" in err and "Traceback" not in err


def test_imagenet_tree_and_cifar10_spec(tmp_path):
    _write_folder(tmp_path / "inet" / "train", per_class=4)
    _write_folder(tmp_path / "inet" / "val", per_class=2, seed=1)
    test = load_dataset(f"imagenet:{tmp_path / 'inet'}?size=8", "test")
    assert len(test) == 6 and test.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.input_shape == (3, 8, 8)
    assert [len(load_dataset(f"imagenet:{tmp_path / 'inet'}", s)) for s in ("train", "val")] == [11, 1]
    with pytest.raises(InputError, match="train and val"):
        load_dataset(f"imagenet:{tmp_path / 'inet' / 'train'}", "test")
    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for i in range(1, 6):
        with open(cifar / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [i % 10] * 4}, f)
    with open(cifar / "test_batch", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [7, 8, 9]}, f)
    te = load_dataset(f"cifar10:{cifar}", "test")
    assert isinstance(te, Dataset) and te.x.shape == (3, 3, 32, 32) and te.y.tolist() == [7, 8, 9]
    assert torch.equal(te.x, load_dataset("cifar10", "test", data_dir=cifar).x)
    assert len(load_dataset(f"cifar10:{cifar}", "train")) == 18
    with pytest.raises(InputError, match="no such folder"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}", "test")


def test_an_unreadable_image_is_one_clear_error_from_any_worker(tmp_path):
    root = _write_folder(tmp_path / "broken", per_class=2)
    (root / "bee" / "img01.png").write_bytes(b"not a png")
    for workers in (0, 2):
        data = load_dataset(f"imagefolder:{root}?size=8&workers={workers}", "all")
        with pytest.raises(InputError) as e:
            list(data.batches(6))
        assert str(e.value).startswith(f"{root / 'bee' / 'img01.png'}: cannot read this image") and "\n" not in str(e.value)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this machine"))])
def test_batches_at_pins_memory_for_a_gpu_and_keeps_the_values(folder, device):
    streamed = load_dataset(f"imagefolder:{folder}?size=8&workers=2", "all")
    memory = in_memory(streamed, len(streamed))
    idx = [torch.tensor([4, 1]), torch.tensor([0, 17, 9])]
    for data in (streamed, memory):
        plain = list(data.batches_at(idx))
        pinned = list(data.batches_at(idx, pin_memory=device == "cuda"))
        for (x0, y0), (x1, y1) in zip(plain, pinned):
            assert x1.is_pinned() == (device == "cuda")
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
            assert torch.equal(x1.to(device, non_blocking=True).cpu(), x0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(streamed.batches_at(idx), memory.batches_at(idx)))
