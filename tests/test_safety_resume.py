"""A resume never mixes results: evaluation cells are valid only for the same model weights and
architecture, the same data points and the same settings; a training resume needs the run's config."""

import copy
import logging

import pytest
import torch

import robustlab as rl
from robustlab.errors import InputError
from robustlab.experiments import job
from robustlab.experiments.job import load_model_from_run, train_model_run
from robustlab.runs.evaluations import default_evaluation
from robustlab.weights import save_weights

from helpers import TRAIN, assert_clear_error, cli

THREAT = rl.ThreatModel("linf", 0.06)
ATTACKS = ["fgsm", "pgd"]


def _eval(model, x, y, cells_dir=None):
    return rl.evaluate(model, (x, y), THREAT, ATTACKS, batch_size=50, sanity=None, progress=False, cells_dir=cells_dir)


def _other_weights(model):
    """A copy of `model` with one parameter changed (the last layer's sign flipped)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        list(other.parameters())[-2].neg_()
    return other


def test_cells_of_other_weights_are_recomputed_not_reused(digits_model, digits_test, tmp_path, caplog):
    x, y = digits_test
    _eval(digits_model, x, y, tmp_path)  # the cells of the old weights stay behind, as after a kill
    other = _other_weights(digits_model)
    fresh = _eval(other, x, y)
    assert fresh.robust_accuracy != _eval(digits_model, x, y).robust_accuracy  # the test can tell them apart
    with caplog.at_level(logging.INFO, logger="robustlab"):
        resumed = _eval(other, x, y, tmp_path)
    assert torch.equal(resumed.robust_correct, fresh.robust_correct)
    assert resumed.broken_by == fresh.broken_by
    said = [r.getMessage() for r in caplog.records if "other weights" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said


def test_cells_of_other_data_points_are_recomputed(digits_model, digits_test, tmp_path):
    x, y = digits_test
    _eval(digits_model, x[:100], y[:100], tmp_path)
    fresh = _eval(digits_model, x[100:], y[100:])
    resumed = _eval(digits_model, x[100:], y[100:], tmp_path)
    assert torch.equal(resumed.robust_correct, fresh.robust_correct)
    assert resumed.broken_by == fresh.broken_by


def test_cells_without_the_model_and_data_identity_are_recomputed(digits_model, digits_test, tmp_path):
    """Cells written before the fingerprint named the model (``[threat, attacks, seed, batch_size]``)."""
    x, y = digits_test
    _eval(digits_model, x, y, tmp_path)
    cells = list(tmp_path.glob("*.pt"))
    assert cells
    for path in cells:
        cell = torch.load(path, weights_only=True)
        cell["fingerprint"] = [THREAT.describe(), ATTACKS, 0, 50]
        torch.save(cell, path)
    other = _other_weights(digits_model)
    fresh = _eval(other, x, y)
    resumed = _eval(other, x, y, tmp_path)
    assert torch.equal(resumed.robust_correct, fresh.robust_correct)


def test_cells_of_the_same_weights_are_still_reused(digits_model, digits_test, tmp_path):
    x, y = digits_test
    _eval(digits_model, x, y, tmp_path)
    calls = {"n": 0}
    model = copy.deepcopy(digits_model)  # another object with the same weights
    model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    _eval(model, x, y, tmp_path)
    assert calls["n"] <= 2 * len(range(0, len(x), 50)) + 2  # clean and worst-case outputs only: no attack ran


def test_model_digest_sees_weights_architecture_and_nothing_else(digits_model):
    from robustlab.runtime import model_digest

    same = copy.deepcopy(digits_model).train()
    assert model_digest(same) == model_digest(digits_model)
    assert model_digest(_other_weights(digits_model)) != model_digest(digits_model)
    relu, tanh = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    tanh.load_state_dict(relu.state_dict())
    assert model_digest(relu) != model_digest(tanh)  # same weights, another architecture
    assert model_digest(lambda inp: digits_model(inp)) == model_digest(digits_model)


def _evaluate_args(run, *more):
    return ("evaluate", run, "--eps", "0.1", "--attacks", "fgsm", "--n", "100", "--batch-size", "50", *more)


def test_cli_resume_with_other_weights_gives_their_number(run_copy, capsys, monkeypatch):
    """`evaluate --weights best` killed before its record, then `--resume --weights last`."""
    model, _ = load_model_from_run(run_copy, "last")
    save_weights(_other_weights(model), run_copy / "checkpoints" / "last.safetensors", {"epoch": "1"})

    class Killed(Exception):
        pass

    def killed(*a, **k):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(job, "atomic_write_json", killed)  # dies after every cell was written
        code, _, err = cli(capsys, *_evaluate_args(run_copy, "--weights", "best"))
    assert code == 1, err
    assert list((run_copy / "evaluations").rglob("cells/**/*.pt"))
    code, _, err = cli(capsys, *_evaluate_args(run_copy, "--weights", "last", "--resume"))
    assert code == 0, err
    resumed = default_evaluation(run_copy).record["reports"][-1]["robust_accuracy"]
    code, _, err = cli(capsys, *_evaluate_args(run_copy, "--weights", "last"))
    assert code == 0, err
    fresh = default_evaluation(run_copy).record["reports"][-1]["robust_accuracy"]
    code, _, err = cli(capsys, *_evaluate_args(run_copy, "--weights", "best"))
    best = default_evaluation(run_copy).record["reports"][-1]["robust_accuracy"]
    assert best != fresh  # the two weights give different numbers
    assert resumed == fresh


def test_train_resume_without_config_yaml_is_refused(run_copy, capsys):
    """A run killed while training (no summary yet) whose config.yaml was then deleted."""
    (run_copy / "config.yaml").unlink()
    (run_copy / "summary.json").unlink(missing_ok=True)
    with pytest.raises(InputError, match="config.yaml"):
        train_model_run(run_copy, {"name": "mlp"}, {"name": "digits", "seed": 1}, TRAIN, resume=True, progress=False)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN.items()]
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--runs", run_copy.parent, "--name",
                       run_copy.name, "--data-seed", "1", *flags, "--resume")
    assert_clear_error(code, err, 2, "config.yaml")
    assert len(err.strip().splitlines()) == 1, err
    assert not (run_copy / "config.yaml").exists()


def test_model_digest_sees_models_behind_containers_and_objects():
    """A wrapper reaching its models through a list or an object's attribute is told apart by their
    weights; one reaching none gets a digest no other call shares (its cells are never reused)."""
    import numpy as np

    from robustlab.runtime import content_digest, model_digest

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        b.weight.add_(1.0)
    ensemble = lambda models: (lambda x: sum(m(x) for m in models))  # noqa: E731
    assert model_digest(ensemble([a])) != model_digest(ensemble([b]))

    class Holder:
        def __init__(self, net):
            self.net = net

    holder_a, holder_b = Holder(a), Holder(b)
    assert model_digest(lambda x: holder_a.net(x)) != model_digest(lambda x: holder_b.net(x))
    opaque = lambda x: x  # noqa: E731
    assert model_digest(opaque) != model_digest(opaque)
    big = np.arange(1e5)
    other = big.copy()
    other[5000] = -1
    assert content_digest(big) != content_digest(other)  # not by repr, which elides the middle
    assert content_digest({1: 2}) != content_digest({"1": 2})
    content_digest(torch.eye(3).to_sparse(), torch.ones(2, dtype=torch.complex64).conj())  # no error


def test_cells_of_other_attack_settings_or_eps_digits_are_recomputed(tmp_path):
    """The cell fingerprint holds every attack's settings and the exact eps, not only names."""
    import robustlab as rl

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 10
    cells = tmp_path / "cells"
    few = rl.evaluate(model, (x, y), rl.ThreatModel("linf", 0.03137254),
                      [rl.attacks.Square(rl.ThreatModel("linf", 0.03137254), max_queries=2, seed=0)], cells_dir=cells)
    many_attack = rl.attacks.Square(rl.ThreatModel("linf", 0.03137254), max_queries=400, seed=0)
    resumed = rl.evaluate(model, (x, y), rl.ThreatModel("linf", 0.03137254), [many_attack], cells_dir=cells)
    fresh = rl.evaluate(model, (x, y), rl.ThreatModel("linf", 0.03137254),
                        [rl.attacks.Square(rl.ThreatModel("linf", 0.03137254), max_queries=400, seed=0)])
    assert torch.equal(resumed.robust_correct, fresh.robust_correct)
    assert few.robust_accuracy >= fresh.robust_accuracy
