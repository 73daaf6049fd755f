"""Poison detectors on tiny models and planted features (issue 22): each detector finds an obvious planted
cluster, AC/SS flag only a minority of clean data, features are flattened over every channel, streamed
statistics equal the in-memory ones, DetectionReport's numbers, and the MAD anomaly index."""
import math

import pytest
import torch
import torch.nn as nn

from robustlab.errors import InputError
from robustlab.poisoning.base import DETECTORS, DetectionReport
from robustlab.poisoning.detectors import (STRIP, ActivationClustering, FinePruning, NeuralCleanse,
                                           SpectralSignatures, anomaly_index, trigger_similarity)
from robustlab.poisoning.features import ClassMoments, class_moments, feature_batches, top_eigenvectors

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device on this machine"))]


def planted(n_per_class=100, classes=3, dim=20, target=0, share=0.1, strength=6.0, seed=0):
    """Gaussian features per class; `share` of the target class's samples carry +strength on coordinate 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randn(len(y), dim, generator=g) + 3.0 * nn.functional.one_hot(y, dim).float()
    truth = torch.zeros(len(y), dtype=torch.bool)
    idx = torch.nonzero(y == target).flatten()[: round(share * n_per_class)]
    truth[idx] = True
    x[idx, dim - 1] += strength
    return x, y, truth


def linear_model(dim, classes):
    """A model whose penultimate features (the input of its last Linear) are its inputs, flattened."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes))


@pytest.mark.parametrize("device", DEVICES)
def test_spectral_signatures_find_planted_cluster(device):
    x, y, truth = planted()
    report = SpectralSignatures(expected_rate=0.1, batch_size=32).detect(linear_model(20, 3).to(device), x, y)
    m = report.evaluate(truth)
    assert m["recall"] == 1.0
    assert report.is_poison.sum() == 3 * 15  # 1.5 x 10% of each class
    assert report.scores[truth].min() > report.scores[(y == 0) & ~truth].max()


@pytest.mark.parametrize("device", DEVICES)
def test_activation_clustering_finds_planted_cluster(device):
    x, y, truth = planted()
    for reduce in ("ica", "pca"):
        report = ActivationClustering(reduce=reduce, batch_size=32).detect(linear_model(20, 3).to(device), x, y)
        m = report.evaluate(truth)
        assert m["recall"] == 1.0 and m["fpr"] == 0.0, (reduce, m)
        assert report.details["classes"][0]["flagged"] and report.details["classes"][0]["share"] == pytest.approx(0.1)
        assert (report.scores[truth] > 0).all()


@pytest.mark.parametrize("make", [lambda: SpectralSignatures(), lambda: ActivationClustering(),
                                  lambda: ActivationClustering(rule="silhouette")])
def test_clean_data_only_a_minority_is_flagged(make):
    x, y, _ = planted(strength=0.0)
    x = x + 5.0  # far from the origin: uncentred scores (ART #1188) would flag nearly everything
    report = make().detect(linear_model(20, 3), x, y)
    assert report.is_poison.float().mean() < 0.2


def test_flattening_uses_every_channel():
    """A direction planted only in channel 2 of a conv layer's output is found at that layer."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, 3, 4, 4, generator=g)
    y = torch.zeros(120, dtype=torch.long)
    truth = torch.zeros(120, dtype=torch.bool)
    truth[:12] = True
    x[:12, 2, 1, 1] += 4.0
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(48, 2))
    feats = torch.cat([f for f, _ in feature_batches(model, x, layer="0", batch_size=50)])
    assert feats.shape == (120, 48) and torch.equal(feats, x.flatten(1))
    report = SpectralSignatures(expected_rate=0.1, layer="0").detect(model, x, y)
    assert report.evaluate(truth)["recall"] == 1.0


def test_streamed_moments_equal_in_memory():
    x, y, _ = planted(n_per_class=37, dim=6)
    streamed = class_moments(linear_model(6, 3), x, y, batch_size=7)
    for c in range(3):
        xc = x[y == c].double()
        assert streamed.count[c] == 37
        torch.testing.assert_close(streamed.mean[c], xc.mean(0))
        torch.testing.assert_close(streamed.covariance(c), torch.cov(xc.T, correction=0))
    whole = ClassMoments()
    whole.update(x, y)
    small = SpectralSignatures(batch_size=5).detect(linear_model(6, 3), x, y)
    large = SpectralSignatures(batch_size=1000).detect(linear_model(6, 3), x, y)
    torch.testing.assert_close(small.scores, large.scores)
    torch.testing.assert_close(whole.scatter[1], streamed.scatter[1])


def test_detection_report_evaluate():
    r = DetectionReport(torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool), torch.zeros(6))
    m = r.evaluate(torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    with pytest.raises(InputError):
        r.evaluate(torch.zeros(5, dtype=torch.bool))


def test_mad_anomaly_index():
    norms = torch.tensor([10.0, 12.0, 11.0, 9.0, 2.0])  # median 10, |dev| = 0 2 1 1 8 -> MAD 1
    idx = anomaly_index(norms)
    torch.testing.assert_close(idx, torch.tensor([0.0, -2.0, -1.0, 1.0, 8.0], dtype=torch.float64) / 1.4826)
    assert torch.nonzero(idx > 2).flatten().tolist() == [4]
    even = anomaly_index(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # median 2.5, MAD 1
    torch.testing.assert_close(even[0], torch.tensor(1.5 / 1.4826, dtype=torch.float64))


ROWS = {0: 2, 2: 4, 3: 6, 4: 7}  # class -> the image row whose brightness means it


class PatchNet(nn.Module):
    """Class c (0, 2, 3, 4) when its row is bright; class 1 when the 2x2 top-left patch is (a trigger). A buffer
    places it on a device (``runtime.device_of``)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        x = x * self.scale
        rows = {c: 10 * (x[:, :, r].mean((1, 2)) - 0.3) for c, r in ROWS.items()}
        trig = 200 * (x[:, :, :2, :2].mean((1, 2, 3)) - 0.45)
        return torch.stack([rows[0], trig, rows[2], rows[3], rows[4]], 1)


def patch_data(n=100, seed=0):
    """Dark noisy images with their class's row bright; the first 10% carry the trigger and label 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    y = torch.tensor(list(ROWS))[torch.randint(len(ROWS), (n,), generator=g)]
    for c, r in ROWS.items():
        x[y == c, :, r] += 0.6
    truth = torch.zeros(n, dtype=torch.bool)
    truth[:n // 10] = True
    x[:n // 10, :, :2, :2] = 1.0
    y[:n // 10] = 1
    return x, y, truth


@pytest.mark.parametrize("device", DEVICES)
def test_strip_flags_triggered_inputs(device):
    x, y, truth = patch_data()
    clean, _, truth_clean = patch_data(60, seed=1)
    clean = clean[~truth_clean]
    report = STRIP(clean=clean, n=20, frr=0.05).detect(PatchNet().to(device), x, y)
    m = report.evaluate(truth)
    assert m["recall"] == 1.0 and m["fpr"] <= 0.1
    with pytest.raises(InputError):
        STRIP().detect(PatchNet(), x, y)


@pytest.mark.parametrize("device", DEVICES)
def test_neural_cleanse_flags_the_target(device):
    x, y, truth = patch_data()
    clean, _, truth_clean = patch_data(60, seed=1)
    model = PatchNet().to(device)
    report = NeuralCleanse(clean=clean[~truth_clean], steps=80, batch_size=16).detect(model, x, y)
    d = report.details
    assert d["flagged_targets"] == [1], d["norms"]
    assert min(d["norms"]) == d["norms"][1]
    assert report.evaluate(truth)["recall"] == 1.0


def test_fine_pruning_prunes_dormant_channels():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    with torch.no_grad():
        conv.bias[2] = -100.0  # channel 2 is dormant on every input
    x, y, _ = patch_data()
    y = model(x).argmax(1)  # the model is right on its own labels
    fp = FinePruning(clean=(x, y), max_drop=0.0)
    calls = []
    record = fp.defend(model, fine_tune=calls.append)
    assert record["pruned_channels"][:1] == [2] and record["clean_accuracy_after"] >= 1.0 - 1e-9
    assert calls == [model] and float(conv.weight[2].detach().abs().sum()) == 0.0 and "weight_orig" not in dict(conv.named_parameters())
    with pytest.raises(InputError):
        fp.detect(model, x, y)


def test_registered():
    for name in ("ss", "ac", "strip", "nc", "fine-pruning"):
        assert DETECTORS.get(name) is not None
    assert isinstance(DETECTORS.create("spectral-signatures"), SpectralSignatures)


def test_subspace_iteration_matches_eigh():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(600, 40, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 40, dtype=torch.float64)
    sym = a.T @ a
    exact = torch.linalg.eigh(sym)[1][:, -3:].flip(1)
    approx = top_eigenvectors(sym, 3)
    torch.testing.assert_close((exact * approx).sum(0).abs(), torch.ones(3, dtype=torch.float64))


def test_poison_detect_cli_writes_the_record(capsys, tmp_path):
    """`robustlab poison craft -> train --data -> poison detect --detector ss`: detection.json evaluated against
    the run's true poisons, and the score histogram."""
    import json

    from helpers import TRAIN, cli

    code, _, err = cli(capsys, "poison", "craft", "--attack", "badnets", "--data", "digits", "--rate", "0.05",
                       "--runs", tmp_path, "--name", "bd")
    assert code == 0, err
    flags = [x for k, v in TRAIN.items() for x in (f"--{k.replace('_', '-')}", v)]
    code, _, err = cli(capsys, "train", "--model", "mlp", "--data", tmp_path / "bd", "--eps", "0", *flags,
                       "--runs", tmp_path, "--name", "m")
    assert code == 0, err
    code, out, err = cli(capsys, "poison", "detect", tmp_path / "m", "--data", tmp_path / "bd", "--detector", "ss")
    assert code == 0 and "recall" in out, err
    folder = tmp_path / "m" / "detections" / "ss-bd"
    record = json.loads((folder / "detection.json").read_text())
    assert record["n"] == 1257 and record["true_poisons"] == round(0.05 * 1257)
    assert record["tp"] + record["fn"] == record["true_poisons"] and record["flagged"] == record["tp"] + record["fp"]
    assert record["flagged"] < 0.2 * 1257 and (folder / "scores.png").stat().st_size > 0
    code, _, err = cli(capsys, "poison", "detect", tmp_path / "m", "--detector", "ss")
    assert code == 2 and "--data" in err
