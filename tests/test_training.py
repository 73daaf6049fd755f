import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import robustlab as rl
from robustlab.training import TrainConfig, is_catastrophic_overfitting, lr_at, train

from helpers import popen_cli, run_cli

TRAIN_ARGS = ["--data", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [256, 256]}', "--method", "pgd",
              "--eps", "0.1", "--attack-steps", "10", "--epochs", "6", "--eval-n", "300", "--lr", "0.003",
              "--schedule", "cyclic"]


def test_lr_schedules():
    cyc = TrainConfig(schedule="cyclic", lr=0.1)
    assert lr_at(cyc, 0.0) == 0.0 and lr_at(cyc, 0.4) == pytest.approx(0.1) and lr_at(cyc, 1.0) == 0.0
    step = TrainConfig(schedule="step", lr=0.1)
    assert lr_at(step, 0.2) == pytest.approx(0.1) and lr_at(step, 0.6) == pytest.approx(0.01)
    assert lr_at(step, 0.8) == pytest.approx(0.001)


def test_catastrophic_overfitting_rule():
    assert is_catastrophic_overfitting(best_pgd_acc=0.7, pgd_acc=0.05, fgsm_acc=0.9)
    assert not is_catastrophic_overfitting(best_pgd_acc=0.7, pgd_acc=0.6, fgsm_acc=0.8)  # normal noise
    assert not is_catastrophic_overfitting(best_pgd_acc=0.1, pgd_acc=0.0, fgsm_acc=0.9)  # never robust


def test_pgd_training_beats_standard_training_under_attack():
    tr, va, te = (rl.load_dataset("digits", s) for s in ("train", "val", "test"))
    threat = rl.ThreatModel("linf", 0.1)
    accs = {}
    for method in ("standard", "pgd"):
        torch.manual_seed(0)
        model = rl.models.MLP(64, 10, hidden=(128,))
        cfg = TrainConfig(method=method, epochs=15, lr=3e-3, eps=0.1, attack_steps=7, eval_n=200, seed=0)
        result = train(model, tr, va, cfg, progress=False)
        assert len(result.history) == 15 and "val_robust_acc" in result.history[-1]
        key = "val_acc" if method == "standard" else "val_robust_acc"
        best = max(h[key] for h in result.history)
        assert result.history[result.best_epoch - 1][key] == best  # selected on validation data
        accs[method] = rl.evaluate(model, te, threat, "fast").robust_accuracy
    assert accs["pgd"] > accs["standard"] + 0.2, accs


def test_fgsm_rs_trains_and_tracks_fgsm_and_pgd_accuracy():
    tr, va = rl.load_dataset("digits", "train"), rl.load_dataset("digits", "val")
    torch.manual_seed(0)
    model = rl.models.MLP(64, 10, hidden=(64,))
    result = train(model, tr, va, TrainConfig(method="fgsm_rs", epochs=3, lr=3e-3, eps=0.1, eval_n=100), progress=False)
    last = result.history[-1]
    assert {"train_fgsm_acc", "train_robust_acc", "val_robust_acc", "catastrophic_overfitting"} <= set(last)
    assert last["train_robust_acc"] <= last["train_acc"] and last["train_fgsm_acc"] <= last["train_acc"]
    assert last["train_robust_acc"] > 0.3  # FGSM-RS at a small eps does give robustness


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    run_cli("train", *TRAIN_ARGS, "--runs", tmp_path, "--name", "full")
    proc = popen_cli("train", *TRAIN_ARGS, "--runs", tmp_path, "--name", "killed")
    state = tmp_path / "killed" / "checkpoints" / "state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert state.exists(), proc.stderr.read()
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before it was killed"
    run_cli("train", *TRAIN_ARGS, "--runs", tmp_path, "--name", "killed", "--resume")
    full = load_file(str(tmp_path / "full" / "checkpoints" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "checkpoints" / "last.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    epochs = [r["epoch"] for r in rl.runs.Run(tmp_path / "killed").read_metrics() if r.get("kind") == "epoch"]
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    args = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--eval-n", "50", "--runs", tmp_path, "--name", "r"]
    run_cli("train", *args)
    again = run_cli("train", *args, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    changed = run_cli("train", *args, "--resume", "--lr", "0.5", check=False)
    assert changed.returncode == 2 and "different settings" in changed.stderr and "lr" in changed.stderr
    (tmp_path / "r" / "checkpoints" / "state.pt").write_bytes(b"not a checkpoint")
    corrupt = run_cli("train", *args, "--resume", check=False)
    assert corrupt.returncode == 2 and "corrupt" in corrupt.stderr


def test_weights_of_another_architecture_are_rejected(tmp_path):
    from robustlab.training import load_weights, save_weights

    save_weights(rl.models.MLP(64, 10, hidden=(32,)), tmp_path / "w.safetensors")
    with pytest.raises(rl.CheckpointError, match="does not match the model"):
        load_weights(rl.models.MLP(64, 10, hidden=(16,)), tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(rl.CheckpointError, match="corrupt"):
        load_weights(rl.models.MLP(64, 10, hidden=(32,)), tmp_path / "bad.safetensors")


def _digits_run(method, epochs=3, **kw):
    tr, va = rl.load_dataset("digits", "train"), rl.load_dataset("digits", "val")
    torch.manual_seed(0)
    model = rl.models.MLP(64, 10, hidden=(64,))
    cfg = TrainConfig(method=method, epochs=epochs, lr=3e-3, eps=0.1, attack_steps=5, eval_n=100, llr_steps=3, **kw)
    return model, train(model, tr, va, cfg, progress=False)


@pytest.mark.parametrize("method,kw", [("trades", {"trades_beta": 3.0}), ("llr", {}), ("fgsm_rs", {"grad_align": 0.5})])
def test_other_defences_train_and_record_every_measurement(method, kw):
    model, result = _digits_run(method, **kw)
    last = result.history[-1]
    for key in ("train_acc", "train_robust_acc", "val_acc", "val_robust_acc", "robust_generalization_gap",
                "generalization_gap", "local_linearity", "grad_cosine", "weight_norm", "train_fgsm_acc"):
        assert key in last and last[key] == last[key], key  # present and not NaN
    assert last["val_acc"] > 0.6
    assert last["local_linearity"] >= 0 and -1 <= last["grad_cosine"] <= 1


def test_local_linearity_is_exact_for_a_linear_model():
    """gamma = |l(x+d) - l(x) - d^T grad l(x)| is the curvature of CE along d: for logits linear in
    x it is small compared with a ReLU net's on the same points, and it matches a direct computation."""
    from robustlab.attacks import local_linearity
    from robustlab.objectives import CrossEntropy
    from robustlab.training.methods import BatchContext

    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    lin = rl.models.MLP(64, 10, hidden=())
    ctx = BatchContext(rl.ThreatModel("linf", 0.1), seed=0)
    gamma, delta, grad, loss_x = local_linearity(lin, x, y, ctx.threat, CrossEntropy(), ctx.random_start(x), steps=5)
    direct = (F.cross_entropy(lin(x + delta), y, reduction="none") - loss_x - (delta * grad).flatten(1).sum(1)).abs()
    assert torch.allclose(gamma, direct, atol=1e-6)
    assert float(delta.abs().max()) <= 0.1 + 1e-6


def test_regularizer_hook_changes_training():
    tr = rl.load_dataset("digits", "train")
    calls = []

    def l2_on_logits(model, x, y, logits, ctx):
        calls.append(ctx.threat.eps)
        return 0.5 * logits.pow(2).mean()

    norms = []
    for reg in (None, l2_on_logits):
        torch.manual_seed(0)
        model = rl.models.MLP(64, 10, hidden=(32,))
        train(model, tr, None, TrainConfig(epochs=2, eval_n=50, lr=1e-2, eps=0.0), progress=False, regularizer=reg)
        with torch.no_grad():
            norms.append(float(model(tr.x).pow(2).mean()))
    assert calls and norms[1] < norms[0]


def test_rank_slices_cover_the_global_batch():
    from robustlab.training.loop import _rank_slice

    for n in (1, 5, 64, 65):
        for world in (1, 2, 3):
            if n < world:
                continue
            parts = [_rank_slice(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades", "llr"])
def test_every_method_trains_a_regression_model_on_its_objective(tiny_regressor, method):
    """The methods are objective-driven: on a regression objective (and a masked threat) each gives a
    finite loss whose gradient reaches the weights; TRADES uses the objective's divergence."""
    import robustlab as rl
    from robustlab.objectives import RegressionError
    from robustlab.training.methods import BatchContext, get_method

    torch.manual_seed(0)
    x, y = torch.rand(16, 16), torch.randn(16, 4)
    mask = torch.ones(16)
    mask[8:] = 0
    threat = rl.ThreatModel("linf", 0.1, mask=mask)
    ctx = BatchContext(threat, seed=1, settings=TrainConfig(attack_steps=3, llr_steps=2), objective=RegressionError(1e3, "l2"))
    loss, out = get_method(method)(tiny_regressor, x, y, ctx)
    assert out.shape == y.shape and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny_regressor.parameters())


def test_trades_says_when_an_objective_has_no_divergence(tiny_regressor):
    import robustlab as rl
    from robustlab.objectives import Objective
    from robustlab.training.methods import BatchContext, trades

    class NoDivergence(Objective):
        def loss(self, output, target):
            return (output - target).pow(2).mean(1)

        def success(self, output, target):
            return torch.zeros(output.shape[0], dtype=torch.bool)

    ctx = BatchContext(rl.ThreatModel("linf", 0.1), seed=0, settings=TrainConfig(attack_steps=1), objective=NoDivergence())
    with pytest.raises(NotImplementedError, match="TRADES is not defined"):
        trades(tiny_regressor, torch.rand(4, 16), torch.randn(4, 4), ctx)


def test_step_snapshots_follow_the_optimiser_and_feed_the_trajectory(tmp_path):
    """``snapshot_steps=k`` saves the initial weights and the weights after every k-th optimizer step;
    the last one equals the final weights, the first the untrained model, and landscape's trajectory
    uses them (one point per snapshot) in place of the per-epoch ones."""
    from robustlab.geometry import load_snapshots, trajectory_pca

    torch.manual_seed(0)
    data = rl.load_dataset("digits", "train").subset(256)
    model = rl.create_model("mlp", in_features=64, hidden=(16,))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(method="standard", epochs=2, batch_size=64, lr=1e-2, eval_n=32, snapshot_steps=2,
                      snapshot_every=1)
    train(model, data, None, cfg, checkpoint_dir=tmp_path, progress=False)
    steps = sorted((tmp_path / "snapshots").glob("step_*.safetensors"))
    assert [p.stem for p in steps] == ["step_0000000", "step_0000002", "step_0000004", "step_0000006", "step_0000008"]
    first, last = load_file(str(steps[0])), load_file(str(steps[-1]))
    assert all(torch.equal(first[k], init[k]) for k in init)
    final = model.state_dict()
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert not torch.equal(load_file(str(steps[1]))["classifier.weight"], first["classifier.weight"])
    traj = trajectory_pca(load_snapshots(model, steps), model)
    assert traj.coords.shape[0] == 5


# --- issue 25: a validation split too small to choose a checkpoint ------------------------------------------

def test_an_empty_validation_split_falls_back_to_the_last_checkpoint(tmp_path, caplog):
    tr = rl.load_dataset("digits", "train").subset(64)
    empty = tr.take(torch.arange(0))
    model = rl.create_model("mlp", in_features=64, num_classes=10)
    cfg = TrainConfig(method="standard", epochs=3, lr=1e-2, eps=0.0, eval_n=32, seed=0)
    with caplog.at_level("INFO", logger="robustlab.training.loop"):
        result = train(model, tr, empty, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    assert result.best_epoch == 3 and result.best_val_robust_acc is None
    assert result.checkpoint_selection.startswith("last")
    assert all("val_acc" not in r for r in result.history)  # no val_acc 0.0 measured on nothing
    lines = [r.getMessage() for r in caplog.records if "validation split" in r.getMessage()]
    assert len(lines) == 1 and "last" in lines[0], lines
    last = load_file(str(tmp_path / "ck" / "last.safetensors"))
    best = load_file(str(tmp_path / "ck" / "best.safetensors"))
    assert all(torch.equal(last[k], best[k]) for k in last)
    kept = train(rl.create_model("mlp", in_features=64, num_classes=10), tr, tr.subset(32), cfg, progress=False)
    assert kept.checkpoint_selection == "best on validation data"


def test_a_tiny_npz_trains_on_the_last_checkpoint_and_records_it(tmp_path, capsys):
    import json

    import numpy as np

    from helpers import cli

    np.savez(tmp_path / "tiny.npz", x=np.random.default_rng(0).random((3, 1, 6, 6)).astype(np.float32),
             y=np.array([0, 1, 0]))
    code, out, err = cli(capsys, "train", "--data", tmp_path / "tiny.npz", "--model", "mlp", "--epochs", "2",
                         "--runs", tmp_path / "runs", "--name", "tiny")
    assert code == 0, err
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["checkpoint_selection"].startswith("last")
    assert "val_acc" not in summary["final"]
