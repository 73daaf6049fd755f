"""Model zoos as model sources (robustbench:, timm:, torchvision:) and a job's leaderboard.

The glue tests always run: small fake ``robustbench`` / ``timm`` / ``torchvision`` modules are put into
``sys.modules`` (a tiny architecture, a ``pretrained_cfg``, a ``load_model`` that reads RobustBench's
file layout), so they test robustlab's code, not the packages. The real-package tests run where the
package imports and evaluate a checkpoint of a zoo architecture, placed on disk, through the CLI.
"""
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from helpers import assert_clear_error, cli, run_cli
from robustlab.errors import InputError
from robustlab.models import Normalize, create_model, is_code_reference
from robustlab.models.zoo import robustbench_defaults
from robustlab.runs.evaluations import default_evaluation
from robustlab.runs.leaderboard import leaderboard_table, rank_rows

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
EVAL = ["--eps", "0,0.03", "--attacks", "fgsm", "--n", "10"]


class TinyNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def tiny_weights(seed):
    torch.manual_seed(seed)
    return TinyNet().state_dict()


@pytest.fixture
def fake_zoos(monkeypatch):
    """Fake timm, robustbench and torchvision modules (what robustlab calls of them, nothing more)."""
    timm, timm_data = types.ModuleType("timm"), types.ModuleType("timm.data")
    timm.is_model = lambda name: name == "tinynet"

    def create_timm(name, pretrained=False, **kw):
        assert not pretrained  # robustlab never asks timm to download
        model = TinyNet(**kw)
        model.pretrained_cfg = {"mean": MEAN, "std": STD, "input_size": (3, 8, 8)}
        return model
    timm.create_model = create_timm
    timm_data.resolve_model_data_config = lambda model: dict(model.pretrained_cfg)
    timm.data = timm_data

    rb, rb_utils = types.ModuleType("robustbench"), types.ModuleType("robustbench.utils")

    def load_model(model_name, model_dir, dataset, threat_model):
        if model_name != "Tiny":
            raise KeyError(model_name)
        path = Path(model_dir) / dataset / threat_model / f"{model_name}.pt"
        if not path.exists():
            raise ConnectionError("no network")  # the package would download here
        model = TinyNet()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    rb_utils.load_model = load_model
    rb.utils = rb_utils

    tv, tv_models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")

    def get_model(name, weights=None, **kw):
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        assert weights is None
        return TinyNet(**kw)
    tv_models.get_model = get_model
    tv.models = tv_models
    for name, module in {"timm": timm, "timm.data": timm_data, "robustbench": rb, "robustbench.utils": rb_utils,
                         "torchvision": tv, "torchvision.models": tv_models}.items():
        monkeypatch.setitem(sys.modules, name, module)


def random_images(path, n, size):
    """`n` random 3 x size x size images in 10 classes as an .npz (the held-out test split: n / 10 of them)."""
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 3, size, size), dtype=np.float32), y=rng.integers(0, 10, n))
    return path


@pytest.fixture
def npz(tmp_path):
    return random_images(tmp_path / "tiny.npz", 100, 8)


def place_robustbench(model_dir, seed, dataset="cifar10", threat="Linf", name="Tiny"):
    path = Path(model_dir) / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_weights(seed), path)
    return path


def test_zoo_sources_name_a_registry_not_code(fake_zoos, tmp_path):
    assert not is_code_reference("timm:tinynet") and not is_code_reference("robustbench:Tiny")
    assert is_code_reference("mypkg.models:factory")
    model = create_model("timm:tinynet")  # no trust_code needed
    assert isinstance(model, Normalize) and not model.training
    assert torch.allclose(model.mean.flatten(), torch.tensor(MEAN)) and torch.allclose(model.std.flatten(), torch.tensor(STD))
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model(x), model.model((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)))
    tv = create_model("torchvision:tinynet", num_classes=5)
    assert torch.allclose(tv.mean.flatten(), torch.tensor((0.485, 0.456, 0.406))) and tv.model.fc.out_features == 5


def test_weights_file_safetensors_or_state_dict(fake_zoos, tmp_path):
    from safetensors.torch import save_file

    state = tiny_weights(3)
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")  # a DDP checkpoint
    for f in ("w.safetensors", "w.pt"):
        model = create_model("timm:tinynet", weights=str(tmp_path / f))
        assert torch.equal(model.model.conv.weight, state["conv.weight"])
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="bad.pt"):
        create_model("timm:tinynet", weights=str(tmp_path / "bad.pt"))
    with pytest.raises(InputError, match="no weights file"):
        create_model("torchvision:tinynet", weights=str(tmp_path / "absent.pt"))


def test_robustbench_layout_offline_and_one_line_errors(fake_zoos, tmp_path):
    path = place_robustbench(tmp_path / "models", seed=1)
    model = create_model("robustbench:Tiny", model_dir=str(tmp_path / "models"), zoo_dataset="cifar10", zoo_threat="Linf")
    assert torch.equal(model.conv.weight, tiny_weights(1)["conv.weight"]) and not model.training
    cases = [
        ({"zoo_threat": "L2"}, f"no checkpoint at {path.parent.parent / 'L2' / 'Tiny.pt'}"),
        ({"zoo_dataset": None}, "--zoo-dataset"),
        ({"weights": str(path)}, "RobustBench's layout"),
        ({"zoo_threat": "Linfinity"}, "zoo_threat"),
    ]
    for change, words in cases:
        kwargs = {"model_dir": str(tmp_path / "models"), "zoo_dataset": "cifar10", "zoo_threat": "Linf", **change}
        with pytest.raises(InputError, match=None) as e:
            create_model("robustbench:Tiny", **kwargs)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="not in RobustBench's cifar10 Linf"):
        create_model("robustbench:Nope", model_dir=str(tmp_path / "models"), zoo_dataset="cifar10", zoo_threat="Linf")
    with pytest.raises(InputError, match="rejected its keyword arguments"):
        create_model("timm:tinynet", modeldir="typo")
    with pytest.raises(InputError, match="not a timm model"):
        create_model("timm:nonet")
    with pytest.raises(InputError, match="Unknown model"):
        create_model("torchvision:nonet")
    assert robustbench_defaults("cifar10:/data/c10", "l2") == {"zoo_dataset": "cifar10", "zoo_threat": "L2"}
    assert robustbench_defaults("mnist", "l1") == {}


def test_missing_package_is_one_line_naming_the_install(monkeypatch):
    for package, module in (("timm", "timm"), ("robustbench", "robustbench.utils"), ("torchvision", "torchvision.models")):
        monkeypatch.setitem(sys.modules, module, None)  # `import` of it fails
        with pytest.raises(InputError) as e:
            create_model(f"{package}:x", model_dir="m", zoo_dataset="cifar10", zoo_threat="Linf") \
                if package == "robustbench" else create_model(f"{package}:x")
        msg = str(e.value)
        assert "pip install" in msg and package in msg and "torchvision" in msg and "\n" not in msg


def test_evaluate_a_zoo_model_writes_a_run(fake_zoos, npz, tmp_path, capsys):
    path = place_robustbench(tmp_path / "models", seed=1)
    args = ["evaluate", "--model", "robustbench:Tiny", "--data", npz, "--zoo-dataset", "cifar10",
            "--model-dir", tmp_path / "models", "--runs", tmp_path / "runs", *EVAL]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    run = tmp_path / "runs" / "robustbench-Tiny"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["kind"] == "model" and config["model"]["name"] == "robustbench:Tiny"
    assert config["model"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config["model"]["kwargs"]["zoo_threat"] == "Linf"  # from --norm linf
    first = default_evaluation(run).record
    assert first["n"] == 10 and [r["eps"] for r in first["reports"]] == [0.0, 0.03] and "broken by" in out
    code, _, err = cli(capsys, "evaluate", run, *EVAL)  # today's `evaluate RUN` on the zoo run
    again = default_evaluation(run).record
    assert code == 0 and [r["robust_accuracy"] for r in again["reports"]] == [r["robust_accuracy"] for r in first["reports"]]
    torch.save(tiny_weights(2), path)  # other weights: neither the run nor its cells are reused for them
    assert_clear_error(*cli(capsys, "evaluate", run, *EVAL)[::2], 2, "changed since the run was written")
    assert_clear_error(*cli(capsys, *args)[::2], 2, "already holds a run")
    assert_clear_error(*cli(capsys, "evaluate", *EVAL)[::2], 2, "--model SOURCE")
    assert_clear_error(*cli(capsys, "evaluate", "--model", "timm:tinynet", *EVAL)[::2], 2, "--data")
    assert_clear_error(*cli(capsys, "evaluate", run, "--weights", "w.pt", *EVAL)[::2], 2, "best or last")


def test_cell_fingerprints_follow_the_weights(fake_zoos):
    from robustlab.runtime import model_digest

    a, b = create_model("timm:tinynet"), create_model("timm:tinynet")
    b.load_state_dict(a.state_dict())
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        b.model.fc.bias.add_(1e-3)
    assert model_digest(a) != model_digest(b)


def test_leaderboard_ranks_robust_then_clean():
    rows = [{"model": m, "clean_accuracy": c, "robust_accuracy": r} for m, c, r in
            (("a", 0.9, 0.4), ("b", 0.8, 0.5), ("c", 0.95, 0.4), ("d", 0.7, 0.1))]
    assert [r["model"] for r in rank_rows(rows)] == ["b", "c", "a", "d"]
    assert [r["rank"] for r in rank_rows(rows)] == [1, 2, 3, 4]


def test_job_of_zoo_models_and_runs_ends_in_a_leaderboard(fake_zoos, npz, tmp_path, capsys):
    from safetensors.torch import save_file

    place_robustbench(tmp_path / "models", seed=1)
    save_file(tiny_weights(5), str(tmp_path / "timm.safetensors"))
    code, _, err = cli(capsys, "evaluate", "--model", "timm:tinynet", "--weights", tmp_path / "timm.safetensors",
                       "--data", npz, "--runs", tmp_path / "runs", "--name", "earlier", *EVAL)
    assert code == 0, err
    job = {"name": "board", "data": str(npz), "evaluation": {"eps": [0.0, 0.03], "attacks": "fgsm", "n": 10},
           "models": [{"name": "rb", "model": {"name": "robustbench:Tiny",
                                               "kwargs": {"model_dir": str(tmp_path / "models"), "zoo_dataset": "cifar10"}}},
                      {"name": "tv", "model": "torchvision:tinynet"},
                      {"name": "earlier", "run": str(tmp_path / "runs" / "earlier")}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    code, out, err = cli(capsys, "run", tmp_path / "job.yaml", "--runs", tmp_path / "runs")  # no --trust-code needed
    assert code == 0, err
    board = json.loads((tmp_path / "runs" / "board" / "leaderboard.json").read_text())["rows"]
    assert {r["model"] for r in board} == {"rb", "tv", "earlier"} and [r["rank"] for r in board] == [1, 2, 3]
    keys = [(-r["robust_accuracy"], -r["clean_accuracy"]) for r in board]
    assert keys == sorted(keys) and all(r["n"] == 10 and r["eps"] == 0.03 and r["suite"] == "fgsm" for r in board)
    for r in board:
        lo, hi = r["clean_accuracy_ci95"]
        assert lo <= r["clean_accuracy"] <= hi
    assert leaderboard_table(board) in out
    page = (tmp_path / "runs" / "board" / "leaderboard.html").read_text()
    assert all(f"<td>{r['model']}</td>" in page for r in board)
    code, _, err = cli(capsys, "run", tmp_path / "job.yaml", "--runs", tmp_path / "runs", "--resume")
    assert code == 0, err
    only_runs = {"name": "runs-only", "models": [job["models"][2]], "evaluation": job["evaluation"]}
    (tmp_path / "runs-only.yaml").write_text(yaml.safe_dump(only_runs))
    code, out, err = cli(capsys, "run", tmp_path / "runs-only.yaml", "--runs", tmp_path / "runs")
    assert code == 0 and "earlier" in out and (tmp_path / "runs" / "runs-only" / "leaderboard.json").exists(), err


# ----- the real packages, where they import ------------------------------------------------------
def _package_or_skip(name):
    try:
        return __import__(name)
    except Exception as e:  # torchvision built for another torch raises RuntimeError, not ImportError
        first = (str(e).splitlines() or [type(e).__name__])[0]
        why = ("not installed" if isinstance(e, ModuleNotFoundError) else
               "the registry's torchvision wheel is a CUDA build that fails against this CPU-only torch")
        pytest.skip(f"{name} does not import here ({type(e).__name__}: {first}): {why}")


@pytest.fixture
def cifar_npz(tmp_path):
    return random_images(tmp_path / "cifar.npz", 40, 32)


def _evaluate_cli(tmp_path, *args):
    run_cli("evaluate", *args, "--runs", tmp_path / "runs", "--name", "zoo", "--eps", "0,0.03", "--attacks", "fgsm",
            "--n", "4", "--batch-size", "4")
    ev = default_evaluation(tmp_path / "runs" / "zoo").record
    assert ev["n"] == 4 and 0 <= ev["reports"][1]["robust_accuracy"] <= ev["reports"][0]["clean_accuracy"] <= 1
    return yaml.safe_load((tmp_path / "runs" / "zoo" / "config.yaml").read_text())


def test_real_robustbench_checkpoint_evaluates_offline(tmp_path, cifar_npz):
    _package_or_skip("robustbench")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    model = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Standard"]["model"]()
    path = tmp_path / "models" / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    config = _evaluate_cli(tmp_path, "--model", "robustbench:Standard", "--data", cifar_npz, "--zoo-dataset", "cifar10",
                           "--model-dir", tmp_path / "models")
    assert config["model"]["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_timm_model_with_weights_file(tmp_path, cifar_npz):
    timm = _package_or_skip("timm")
    model = timm.create_model("resnet18", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "r18.pt")
    config = _evaluate_cli(tmp_path, "--model", "timm:resnet18", "--weights", tmp_path / "r18.pt", "--data", cifar_npz)
    assert config["model"]["weights_sha256"] == hashlib.sha256((tmp_path / "r18.pt").read_bytes()).hexdigest()
    mean = timm.data.resolve_model_data_config(model)["mean"]
    assert torch.allclose(create_model("timm:resnet18").mean.flatten(), torch.tensor(mean))


def test_real_torchvision_model_with_weights_file(tmp_path, cifar_npz):
    tv = _package_or_skip("torchvision")
    torch.save(tv.models.get_model("resnet18", weights=None).state_dict(), tmp_path / "tv.pt")
    config = _evaluate_cli(tmp_path, "--model", "torchvision:resnet18", "--weights", tmp_path / "tv.pt",
                           "--data", cifar_npz)
    assert config["model"]["name"] == "torchvision:resnet18"
