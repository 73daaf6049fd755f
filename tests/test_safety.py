"""Issue 14: runs that cannot be hijacked, mixed up or silently wrong. One test per row of the issue's
table, plus a table over the CLI's numeric arguments (a clear error or a valid run, never a traceback)."""
import json
import os
import pickle
import shutil
import stat
import sys

import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import attacks as A
from robustlab.cli import main as cli_main
from robustlab.errors import CheckpointError, InputError
from robustlab.oracles import DecisionOracle, ScoreOracle
from robustlab.experiments.job import evaluate_model_run, load_model_from_run, run_config, train_model_run
from robustlab.runs.rundir import Run, RunLockedError

TRAIN = {"epochs": 1, "eval_n": 20, "lr": 0.01, "batch_size": 64}


class Payload:
    """Unpickling this creates a marker file: the harmless stand-in for code run from data."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_model_run(root / "base", {"name": "mlp"}, {"name": "digits", "seed": 0}, TRAIN, progress=False)
    return root / "base"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    dst = tmp_path / "runs" / "r"
    shutil.copytree(trained_run, dst)
    return dst


def cli(capsys, *args):
    """The CLI in-process: (exit code, stdout, stderr)."""
    code = cli_main(["--no-progress", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clear_error(code, err, expected_code=2, *words):
    assert code == expected_code, err
    assert "Traceback" not in err and "error:" in err
    for w in words:
        assert w in err, err


# ----- 1. nothing executes from data ------------------------------------------------------------
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


# ----- 2. runs are what they say -----------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../../x", "/tmp/abs", "a/b", "..", ".hidden", ""])
def test_job_model_names_cannot_escape_the_runs_folder(tmp_path, bad):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({"name": "j", "data": "digits", "train": TRAIN, "models": [{"name": bad, "model": "mlp"}]}))
    with pytest.raises(InputError, match="model name"):
        run_config(cfg, tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()
    with pytest.raises(InputError, match="invalid run name"):
        train_model_run(tmp_path / "runs" / "..", {"name": "mlp"}, "digits", TRAIN)


def test_train_name_with_separator_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--runs", tmp_path, "--name", "a/b")
    assert_clear_error(code, err, 2, "--name", "invalid run name")
    assert list(tmp_path.iterdir()) == []


def test_second_writer_gets_a_clear_error(run_copy):
    with Run(run_copy).lock():
        with pytest.raises(RunLockedError, match="another robustlab process"):
            train_model_run(run_copy, {"name": "mlp"}, "digits", {**TRAIN, "epochs": 2}, resume=True, progress=False)
        with pytest.raises(RunLockedError):
            evaluate_model_run(run_copy, [0.1], attacks="fgsm", n=5)
    metrics = [r for r in Run(run_copy).read_metrics() if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in metrics] == [1]  # nothing interleaved


def test_resume_with_another_split_model_or_method_is_refused(run_copy):
    for model, data, cfg, word in [
        ({"name": "mlp"}, {"name": "digits", "seed": 1}, TRAIN, "data seed"),
        ({"name": "mlp", "kwargs": {"hidden": [8]}}, "digits", TRAIN, "model"),
        ({"name": "mlp"}, "faces", TRAIN, "data"),
        ({"name": "mlp"}, "digits", {**TRAIN, "method": "fgsm_rs"}, "method"),
    ]:
        with pytest.raises(InputError, match=word):
            train_model_run(run_copy, model, data, {**cfg, "epochs": 2}, resume=True, progress=False)


def test_torn_metrics_line_is_repaired_before_an_append(tmp_path):
    run = Run(tmp_path / "r")
    run.log_metrics({"kind": "epoch", "epoch": 1})
    with open(run.metrics_path, "a") as f:
        f.write('{"kind": "epoch", "epo')  # killed mid-write
    run.log_metrics({"kind": "epoch", "epoch": 2})
    lines = run.metrics_path.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_missing_best_weights_is_an_error_not_a_silent_fallback(run_copy):
    (run_copy / "checkpoints" / "best.safetensors").unlink()
    with pytest.raises(CheckpointError, match="--weights last"):
        evaluate_model_run(run_copy, [0.1], attacks="fgsm", n=5, which="best")
    assert not (run_copy / "evaluation.json").exists()
    out = evaluate_model_run(run_copy, [0.1], attacks="fgsm", n=5, which="last")
    assert out["weights"] == "last"


def test_read_only_commands_on_a_missing_run_create_nothing(tmp_path, capsys):
    code, _, err = cli(capsys, "evaluate", tmp_path / "nothing", "--n", 5)
    assert_clear_error(code, err, 2, "not a model run")
    code, _, err = cli(capsys, "report", tmp_path / "nothing")
    assert_clear_error(code, err, 2, "no run directory")
    code, _, err = cli(capsys, "attack", tmp_path / "nothing", "--n", 5)
    assert_clear_error(code, err, 2)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_have_normal_permissions_and_leave_no_temporaries(tmp_path, monkeypatch):
    from robustlab.fileio import atomic_write_bytes, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o644
    finally:
        os.umask(old)

    def killed(fd):
        raise KeyboardInterrupt  # a kill (SIGTERM under the CLI) arrives while writing

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", killed)
        with pytest.raises(KeyboardInterrupt):
            atomic_write_bytes(tmp_path / "x.bin", b"abc")
    (tmp_path / f".x.bin.{2 ** 22 + 12345}.dead.tmp").write_bytes(b"left by a SIGKILLed writer")
    atomic_write_bytes(tmp_path / "x.bin", b"ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "x.bin"]


# ----- 3. configs validated before anything runs ---------------------------------------------------
def test_misspelled_and_mistyped_job_keys_fail_before_training(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("name: j\ndata: digits\ntrian: {epochs: 1}\nattcks: fast\n"
                   "train: {epochs: 'two', lr: 0.01}\nmodels:\n  - {name: a, model: mlp, train: {batch_sise: 8}}\n"
                   "evaluation: {eps: [], attacks: ','}\n")
    with pytest.raises(InputError) as e:
        run_config(cfg, tmp_path / "runs")
    msg = str(e.value)
    for part in ["did you mean 'train'", "unknown key 'attcks'", "train.epochs", "did you mean 'batch_size'",
                 "evaluation.eps", "attack list is empty"]:
        assert part in msg, msg
    assert not (tmp_path / "runs").exists()


def test_empty_attack_list_is_refused(digits_model, digits_test):
    from robustlab.evaluation.suite import build_suite

    for empty in ([], ",", " , "):
        with pytest.raises(InputError, match="attack list is empty"):
            build_suite(empty, rl.ThreatModel("linf", 0.1))


# ----- 4. budgets honest, work never thrown away --------------------------------------------------
@pytest.mark.parametrize("make,norm,eps", [
    (lambda t: A.HopSkipJump(t, max_queries=300), "linf", 0.05),
    (lambda t: A.HopSkipJump(t, max_queries=300), "l2", 0.5),
    (lambda t: A.RayS(t, max_queries=300), "linf", 0.05),
    (lambda t: A.BoundaryAttack(t, max_queries=300), "l2", 0.5),
])
def test_decision_attacks_never_exceed_max_queries(digits_model, digits_correct, make, norm, eps):
    x, y = digits_correct[0][:60], digits_correct[1][:60]
    oracle = DecisionOracle.from_model(digits_model, memoize=False)
    res = make(rl.ThreatModel(norm, eps))(oracle, x, y)
    assert int(res.queries.max()) <= 300 and max(oracle.per_sample.values()) <= 300
    assert int(res.queries.max()) == 300  # the budget is used, not given up early
    assert len(res.status) == len(x) and set(res.status) <= {"success", "max_queries", "done", "no_start"}
    assert [s == "success" for s in res.status] == res.success.tolist()


def test_oracle_budget_and_failing_black_box_keep_what_was_found(digits_model, digits_correct):
    x, y = digits_correct[0][:40], digits_correct[1][:40]
    threat = rl.ThreatModel("linf", 0.1)
    oracle = DecisionOracle.from_model(digits_model, budget=150)  # smaller than the attack's max_queries
    res = A.HopSkipJump(threat, max_queries=300)(oracle, x, y)
    assert max(oracle.per_sample.values()) <= 150
    assert set(res.status) <= {"success", "oracle_budget"} and "oracle_budget" in res.status

    calls = [0]

    def dies(batch):  # the black box goes down after a while
        calls[0] += 1
        if calls[0] > 200:
            raise ConnectionError("server down")
        return digits_model(batch).argmax(1)

    res = A.RayS(threat, max_queries=2000)(DecisionOracle(dies), x, y)
    found = res.success.sum()
    assert found > 0 and set(res.status) == {"success", "oracle_error"}
    with torch.no_grad():
        assert (digits_model(res.x_adv[res.success]).argmax(1) != y[res.success]).all()

    calls[0] = 0
    res = A.Square(threat, max_queries=500)(ScoreOracle(lambda b: (dies(b), digits_model(b))[1]), x, y)
    assert res.success.any() and "oracle_error" in res.status  # any attack: best points so far, not a raise


def test_flaky_black_box_is_retried(digits_model, digits_correct):
    x, y = digits_correct[0][:20], digits_correct[1][:20]
    n = [0]

    def flaky(batch):
        n[0] += 1
        if n[0] % 3 == 0:
            raise TimeoutError("timeout")
        return digits_model(batch).argmax(1)

    oracle = DecisionOracle(flaky, retries=2, backoff=0.0)
    res = A.RayS(rl.ThreatModel("linf", 0.1), max_queries=300)(oracle, x, y)
    assert oracle.failed_calls > 0 and "oracle_error" not in res.status


def test_decision_oracle_returning_strings_is_a_clear_error_or_works(digits_model, digits_correct):
    x, y = digits_correct[0][:8], digits_correct[1][:8]
    names = [f"class{i}" for i in range(10)]
    oracle = DecisionOracle(lambda b: [names[i] for i in digits_model(b).argmax(1).tolist()])
    with pytest.raises(InputError, match="labels in the oracle's own terms"):
        A.RayS(rl.ThreatModel("linf", 0.2), max_queries=50)(oracle, x, y)
    res = A.RayS(rl.ThreatModel("linf", 0.2), max_queries=200)(oracle, x, [names[i] for i in y.tolist()])
    assert res.success.any()


def test_rays_breaks_every_breakable_point_of_a_linear_model():
    """Linear 2-class toy: the exact minimal Linf distance t* (with the [0, 1] box) is known by
    bisection on t: the largest change of w.x within the box and radius t is sum |w_i| min(t, room_i)."""
    torch.manual_seed(0)
    d, n = 32, 120
    w = torch.randn(d)
    x = torch.rand(n, 1, 4, 8)
    b = -(x.flatten(1) @ w).median()

    def model(z):
        s = z.flatten(1) @ w + b
        return torch.stack([torch.zeros_like(s), s], 1)

    y = model(x).argmax(1)
    xf = x.flatten(1)
    room = torch.where((w > 0)[None] == (y == 1)[:, None], xf, 1 - xf)
    need = (xf @ w + b).abs()
    lo, hi = torch.zeros(n), torch.ones(n)
    for _ in range(50):
        mid = (lo + hi) / 2
        ok = (w.abs() * torch.minimum(room, mid[:, None])).sum(1) >= need
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    t_star = torch.where((w.abs() * room).sum(1) >= need, hi, torch.full_like(hi, float("inf")))
    eps = float(t_star.median())
    res = A.RayS(rl.ThreatModel("linf", eps), max_queries=1000)(DecisionOracle.from_model(model), x, y)
    breakable = t_star <= eps - 1e-3
    assert breakable.sum() >= 50
    assert (res.success | ~breakable).all(), f"missed {int((breakable & ~res.success).sum())} breakable points"
    assert not (res.success & (t_star > eps + 1e-4)).any()
    assert int(res.queries.max()) <= 1000


# ----- 5. attacks run the model in eval mode -----------------------------------------------------
@pytest.mark.parametrize("make", [lambda t: A.PGD(t, steps=5), lambda t: A.Square(t, max_queries=50)])
def test_attacks_leave_batchnorm_statistics_and_mode_alone(make):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 10))
    model.train()
    model[3].eval()  # a deliberately mixed mode must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    res = make(rl.ThreatModel("linf", 0.1))(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].training and not model[3].training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)  # flags are real, not dropout noise


# ----- 6. every CLI failure is a clear message ---------------------------------------------------
def test_cli_failures_are_clear_messages_not_tracebacks(trained_run, tmp_path, capsys):
    code, _, err = cli(capsys, "run", tmp_path / "missing.yaml")
    assert_clear_error(code, err, 2, "no job config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\n")
    code, _, err = cli(capsys, "run", bad)
    assert_clear_error(code, err, 2, "not valid YAML")
    (tmp_path / "afile").write_text("")
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 1, "--runs", tmp_path / "afile")
    assert_clear_error(code, err, 2, "--runs")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root ignores permissions)
            code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 1, "--runs", ro / "x")
            assert_clear_error(code, err, 2, "permission denied")
    finally:
        ro.chmod(0o700)
    with pytest.raises(NotADirectoryError):  # --debug shows the real exception
        cli_main(["--debug", "train", "--data", "digits", "--model", "mlp", "--runs", str(tmp_path / "afile")])


def test_float64_inputs_give_a_clear_error(digits_model, digits_correct):
    x, y = digits_correct
    with pytest.raises(InputError, match="float64"):
        A.PGD(rl.ThreatModel("linf", 0.1), steps=2)(digits_model, x[:4].double(), y[:4])


NUMERIC_CASES = [
    # (command args, valid?)
    (["evaluate", "{run}", "--n", "-5"], False),
    (["evaluate", "{run}", "--n", "0"], False),
    (["evaluate", "{run}", "--n", "1000000", "--attacks", "fgsm", "--eps", "0.1"], True),  # warns, all points
    (["evaluate", "{run}", "--n", "4", "--batch-size", "0"], False),
    (["evaluate", "{run}", "--n", "4", "--eps="], False),
    (["evaluate", "{run}", "--n", "4", "--eps", "-0.1"], False),
    (["evaluate", "{run}", "--n", "4", "--eps", "nan"], False),
    (["evaluate", "{run}", "--n", "4", "--eps", "abc"], False),
    (["evaluate", "{run}", "--n", "4", "--attacks", ","], False),
    (["evaluate", "{run}", "--n", "4", "--eps", "2", "--attacks", "fgsm"], True),  # warns: beyond [0, 1]
    (["attack", "{run}", "--n", "4", "--steps", "0"], False),
    (["attack", "{run}", "--n", "4", "--steps", "-1"], False),
    (["attack", "{run}", "--n", "4", "--step-size", "0"], False),
    (["attack", "{run}", "--n", "4", "--restarts", "0"], False),
    (["attack", "{run}", "--n", "4", "--attack", "square", "--queries", "0"], False),
    (["attack", "{run}", "--n", "4", "--eps", "-1"], False),
    (["attack", "{run}", "--n", "4", "--batch-size", "-3"], False),
    (["attack", "{run}", "--n", "4", "--steps", "1", "--eps", "0.1"], True),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--epochs", "0"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--batch-size", "0"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--eval-n", "0"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--lr", "-1"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--eps", "-0.3"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--attack-steps", "0"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--data-seed", "-1"], False),
    (["train", "--data", "digits", "--model", "mlp", "--runs", "{tmp}", "--epochs", "x"], False),
    (["sweep", "batch-size", "--batch-sizes", "0,32", "--runs", "{tmp}"], False),
    (["sweep", "batch-size", "--batch-sizes", "a", "--runs", "{tmp}"], False),
    (["launch", "--nproc", "0", "--", "list"], False),
]


@pytest.mark.parametrize("args,valid", NUMERIC_CASES, ids=[" ".join(a[:1] + a[2:]) for a, _ in NUMERIC_CASES])
def test_cli_numeric_arguments_give_a_clear_error_or_a_valid_run(trained_run, tmp_path, capsys, args, valid):
    argv = [a.replace("{run}", str(trained_run)).replace("{tmp}", str(tmp_path / "runs")) for a in args]
    try:
        code, _, err = cli(capsys, *argv)
    except SystemExit as e:  # argparse rejects a malformed value itself (exit 2 with its usage line)
        code, err = e.code, capsys.readouterr().err
    if valid:
        assert code == 0, err
    else:
        assert code == 2, err
        assert "Traceback" not in err and "error" in err
        assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_processes_writing_one_run_and_a_sigterm(tmp_path):
    """Two `train --name same` at once: the second gets a clear error and the first's record is intact;
    a SIGTERM then unwinds the first cleanly (exit 143, lock released, no temporaries left)."""
    import signal
    import time

    from helpers import popen_cli, run_cli

    args = ["train", "--data", "digits", "--model", "mlp", "--epochs", "200", "--eval-n", "20", "--lr", "0.01",
            "--runs", tmp_path, "--name", "same"]
    first = popen_cli(*args)
    try:
        metrics = tmp_path / "same" / "metrics.jsonl"
        deadline = time.time() + 120
        while not metrics.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.01)
        assert metrics.exists(), first.stderr.read()
        second = run_cli(*args, check=False)
        assert second.returncode == 2 and "being written by another robustlab process" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 128 + signal.SIGTERM
    epochs = [r["epoch"] for r in Run(tmp_path / "same").read_metrics() if r.get("kind") == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1))
    assert not list((tmp_path / "same").rglob("*.tmp"))
    with Run(tmp_path / "same").lock():  # released
        pass


def test_attacks_on_an_oracle_leave_the_wrapped_model_in_its_mode(digits_model):
    """An oracle made from a model (ScoreOracle/DecisionOracle.from_model) is queried in eval mode too:
    a train-mode BatchNorm model keeps its statistics and its mode."""
    import torch.nn as nn

    from robustlab.oracles import DecisionOracle, ScoreOracle

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).train()
    x = torch.rand(20, 1, 8, 8)
    y = torch.zeros(20, dtype=torch.long)
    before = net[2].running_mean.clone()
    A.Square(rl.ThreatModel("linf", 0.1), max_queries=30)(ScoreOracle.from_model(net), x, y)
    A.RayS(rl.ThreatModel("linf", 0.1), max_queries=30)(DecisionOracle.from_model(net), x, y)
    assert torch.equal(net[2].running_mean, before) and net.training
