"""Bad input is one clear line before anything runs: job configs, attack lists, CLI arguments (exit code 2, never
a traceback)."""

import os

import pytest

import robustlab as rl
from robustlab import attacks as A
from robustlab.cli import main as cli_main
from robustlab.errors import InputError
from robustlab.experiments.job import run_config

from helpers import assert_clear_error, cli


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
    (["attack", "{run}", "--n", "4", "--steps", "1", "--eps", "0.1", "--runs", "{tmp}"], True),  # writes under tmp
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
    except SystemExit as e:  # the parser rejects a malformed value itself (exit 2, one line)
        code, err = e.code, capsys.readouterr().err
    if valid:
        assert code == 0, err
    else:
        assert code == 2, err
        assert "Traceback" not in err and "error" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "runs").exists()


# --- issue 25: bad data files are refused at load, in one line (exit 2) -------------------------------------

def _bad_npz(kind, path):
    import numpy as np

    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    y = (np.arange(20) % 2).astype(np.int64)
    if kind == "nan":
        x[0, 0, 0, :3] = np.nan
    elif kind == "inf":
        x[1, 0, 0, 0] = -np.inf
    elif kind == "label 1e9":
        y = y.astype(np.float64)
        y[:10] = 1e9
    elif kind == "label -1":
        y[4] = -1
    elif kind == "empty":
        x, y = x[:0], y[:0]
    elif kind == "object array":
        x = np.array([object()] * 20, dtype=object)
    elif kind == "not a zip":
        path.write_bytes(b"not an npz")
        return
    np.savez(path, x=x, y=y)


DATA_CASES = [("nan", "3 NaN or inf"), ("inf", "1 NaN or inf"), ("label 1e9", "100,000"), ("label -1", "100,000"),
              ("empty", "no samples"), ("object array", "object"), ("not a zip", "not a readable .npz")]


@pytest.mark.parametrize("kind,words", DATA_CASES, ids=[k for k, _ in DATA_CASES])
def test_cli_bad_npz_is_one_line_exit_2(tmp_path, capsys, kind, words):
    path = tmp_path / "bad.npz"
    _bad_npz(kind, path)
    code, _, err = cli(capsys, "train", "--data", path, "--model", "mlp", "--epochs", 1, "--runs", tmp_path / "runs")
    assert_clear_error(code, err, 2, "bad.npz", words)
    assert len(err.strip().splitlines()) == 1, err
