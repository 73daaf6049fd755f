"""Nothing executes from data: pickled payloads, code references and CIFAR batches are refused."""

import pickle

import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab.errors import InputError
from robustlab.experiments.job import load_model_from_run
from robustlab.runs.rundir import Run

from helpers import Payload, assert_clear_error, cli


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch notes the planted payload
def test_pickle_payload_in_state_is_refused_on_resume(run_copy, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    state = torch.load(run_copy / "checkpoints" / "state.pt", weights_only=True)  # the real one is weights-only
    state["history"].append(Payload(marker))
    with open(run_copy / "checkpoints" / "state.pt", "wb") as f:
        pickle.dump(state, f)  # what an attacker would plant (torch.load reads plain pickles too)
    torch.save({**state, "evil": Payload(marker)}, run_copy / "checkpoints" / "state2.pt")
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 2, "--eval-n", 20,
                       "--lr", 0.01, "--batch-size", 64, "--runs", run_copy.parent, "--name", "r", "--resume")
    assert_clear_error(code, err, 2, "refusing to load", "could run code")
    assert not marker.exists()


def test_config_naming_code_is_refused_without_trust_code(run_copy, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_models.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import robustlab as rl\n"
        "def make(**kw):\n    return rl.models.MLP(**kw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = Run(run_copy).read_config()
    cfg["model"] = {"name": "evil_models:make", "kwargs": {"in_features": 64, "num_classes": 10}}
    (run_copy / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    code, _, err = cli(capsys, "evaluate", run_copy, "--n", 5, "--attacks", "fgsm", "--eps", 0.1)
    assert_clear_error(code, err, 2, "code reference", "--trust-code")
    assert not marker.exists()
    model, _ = load_model_from_run(run_copy, trust_code=True)  # the user says so: it is honoured
    assert marker.exists() and isinstance(model, nn.Module)


def test_cifar_batches_never_unpickle_objects(tmp_path):
    import numpy as np

    marker = tmp_path / "CIFAR_PWNED"
    d = tmp_path / "cifar"
    d.mkdir()
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": Payload(marker)}, f)
    with pytest.raises(InputError, match="could run code"):
        rl.load_dataset(str(d), "train")
    assert not marker.exists()
    with open(d / "data_batch_1", "wb") as f:  # a genuine batch still loads
        pickle.dump({b"data": np.full((4, 3072), 255, np.uint8), b"labels": [0, 1, 2, 3]}, f, protocol=2)
    from robustlab.data.formats import load_pickled_batch

    assert load_pickled_batch(d / "data_batch_1")[b"data"].shape == (4, 3072)
