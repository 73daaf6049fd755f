"""Runs are what they say: names cannot escape the runs folder, one writer at a time, resume only of the same
run, atomic writes."""

import json
import os
import stat

import pytest

from robustlab.errors import CheckpointError, InputError
from robustlab.experiments.job import evaluate_model_run, run_config, train_model_run
from robustlab.runs.evaluations import list_evaluations
from robustlab.runs.rundir import Run, RunLockedError

from helpers import TRAIN, assert_clear_error, cli


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
    assert not list_evaluations(run_copy)
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


# ----- issue 25: one path for writing a run (item 2), no symlinks followed (item 3), smaller items (item 8) ----------
def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_attack_name_of_a_model_run_is_refused_and_the_run_still_evaluates(run_copy, capsys):
    before = {f: (run_copy / f).read_bytes() for f in ("config.yaml", "summary.json")}
    code, _, err = cli(capsys, "attack", run_copy, "--attack", "fgsm", "--eps", 0.1, "--n", 5,
                       "--runs", run_copy.parent, "--name", run_copy.name)
    assert_clear_error(code, err, 2, "model run", "--name")
    _one_error_line(err)
    assert {f: (run_copy / f).read_bytes() for f in before} == before
    assert evaluate_model_run(run_copy, [0.1], attacks="fgsm", n=5)["reports"]


def test_every_run_writer_refuses_a_run_of_another_kind(run_copy, tmp_path, capsys):
    code, _, err = cli(capsys, "attack", run_copy, "--attack", "fgsm", "--eps", 0.1, "--n", 5, "--runs", tmp_path / "a",
                       "--name", "atk")
    assert code == 0, err
    atk = tmp_path / "a" / "atk"
    config = (atk / "config.yaml").read_bytes()
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 1, "--runs", tmp_path / "a",
                       "--name", "atk")
    assert_clear_error(code, err, 2, "attack run")
    _one_error_line(err)
    with pytest.raises(InputError, match="not a model run"):
        evaluate_model_run(atk, [0.1], attacks="fgsm", n=5)
    assert (atk / "config.yaml").read_bytes() == config and not (atk / "checkpoints" / "state.pt").exists()


def test_attack_takes_the_run_lock(run_copy, tmp_path, capsys):
    target = tmp_path / "a" / "atk"
    with Run(target).lock():
        code, _, err = cli(capsys, "attack", run_copy, "--attack", "fgsm", "--eps", 0.1, "--n", 5,
                           "--runs", target.parent, "--name", target.name)
    assert_clear_error(code, err, 2, "being written by another robustlab process")
    _one_error_line(err)
    assert not (target / "config.yaml").exists()


def test_a_linked_metrics_file_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("line one\nhalf a line")
    run = Run(tmp_path / "runs" / "r")
    (run.path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(InputError, match="metrics.jsonl"):
        run.log_metrics({"epoch": 1})
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 1, "--eval-n", 10,
                       "--runs", tmp_path / "runs", "--name", "r")
    assert_clear_error(code, err, 2, "metrics.jsonl", "link")
    _one_error_line(err)
    assert victim.read_text() == "line one\nhalf a line"


def test_a_linked_checkpoints_folder_is_refused(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", 1, "--eval-n", 10,
                       "--runs", tmp_path / "runs", "--name", "r")
    assert_clear_error(code, err, 2, "checkpoints", "link")
    _one_error_line(err)
    assert list(elsewhere.iterdir()) == []


def test_atomic_writes_inside_a_run_refuse_links(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    run = Run(tmp_path / "r")
    (run.path / "summary.json").symlink_to(victim)
    with pytest.raises(InputError, match="summary.json"):
        run.write_summary({"a": 1})
    assert (run.path / "summary.json").is_symlink() and victim.read_text() == "{}"
    (run.path / "summary.json").unlink()
    (run.path / "figures" / "sub").symlink_to(tmp_path, target_is_directory=True)
    from robustlab.fileio import atomic_write_json

    with Run.writing(run.path.parent, run.path.name, None) as writer:  # every write inside a run being written refuses links
        writer.write_summary({"a": 1})
        with pytest.raises(InputError, match="figures/sub"):
            atomic_write_json(writer.figures / "sub" / "x.json", {})
    assert not (tmp_path / "x.json").exists()


def test_sweep_batch_size_without_a_name_uses_its_default(tmp_path, capsys):
    code, out, err = cli(capsys, "sweep", "batch-size", "--batch-sizes", 64, "--lr-rules", "constant", "--data", "digits",
                         "--model", "mlp", "--epochs", 1, "--eval-n", 10, "--runs", tmp_path)
    assert code == 0, err
    assert (tmp_path / "sweep-batch-size" / "sweep.json").exists()


def test_a_job_naming_an_unknown_attack_fails_before_anything_runs(tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({"name": "j", "data": "digits", "train": TRAIN, "models": [{"name": "m", "model": "mlp"}],
                               "evaluation": {"eps": [0.1], "attacks": "fgsm,not-an-attack", "n": 5}}))
    code, _, err = cli(capsys, "run", cfg, "--runs", tmp_path / "runs")
    assert_clear_error(code, err, 2, "not-an-attack", "evaluation.attacks")
    _one_error_line(err)
    assert not (tmp_path / "runs").exists()
    for attacks in ("standard", "rand-draw", ["fgsm", "pgd"], "FGSM, apgd-ce"):
        cfg.write_text(json.dumps({"models": [{"name": "m"}], "evaluation": {"attacks": attacks}}))
        from robustlab.runs.schema import validate_job
        validate_job(json.loads(cfg.read_text()))


@pytest.mark.parametrize("verb, other", [(("ocr", "train"), "ocr-attack"), (("stereo", "attack"), "stereo-model"),
                                         (("stereo", "evaluate"), "model")])
def test_task_verbs_write_runs_through_the_one_path(tmp_path, capsys, verb, other):
    run = Run(tmp_path / "x")
    run.write_config({"kind": other})
    config = (run.path / "config.yaml").read_bytes()
    code, _, err = cli(capsys, *verb, "--runs", tmp_path, "--name", "x")
    assert_clear_error(code, err, 2, f"is a {other} run")
    _one_error_line(err)
    with Run(tmp_path / "y").lock():
        code, _, err = cli(capsys, *verb, "--runs", tmp_path, "--name", "y")
    assert_clear_error(code, err, 2, "being written by another robustlab process")
    code, _, err = cli(capsys, *verb, "--runs", tmp_path, "--name", "../z")
    assert_clear_error(code, err, 2, "invalid run name")
    assert (run.path / "config.yaml").read_bytes() == config and not (tmp_path.parent / "z").exists()


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/robustlab-absolute-name", "a/b", ".."])
def test_attack_name_cannot_leave_the_runs_folder(trained_run, tmp_path, capsys, name):
    """`attack --name` used to be taken as a path: ../../x and /tmp/x wrote outside --runs."""
    runs = tmp_path / "deep" / "runs"
    code, _, err = cli(capsys, "attack", trained_run, "--n", "4", "--eps", "0.1", "--attack", "fgsm",
                       "--runs", runs, "--name", name)
    assert_clear_error(code, err, 2, "--name")
    _one_error_line(err)
    assert not runs.exists() and not (tmp_path / "escaped").exists()
    assert not os.path.exists("/tmp/robustlab-absolute-name")


def test_a_link_then_dotdot_inside_a_run_cannot_escape_it(tmp_path):
    """``run/link/../x`` with ``link`` -> elsewhere resolves through the link: refused, nothing written."""
    from robustlab.fileio import atomic_write_text

    run, outside = tmp_path / "runs" / "r", tmp_path / "outside" / "deep"
    run.mkdir(parents=True)
    outside.mkdir(parents=True)
    (run / "link").symlink_to(outside)
    with pytest.raises(InputError, match="link|outside"):
        atomic_write_text(str(run / "link" / ".." / "escaped.txt"), "x", inside=run)
    assert not (tmp_path / "outside" / "escaped.txt").exists()


def test_a_run_directory_that_is_a_link_is_refused(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "exp").symlink_to(victim)
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--runs",
                       tmp_path / "runs", "--name", "exp")
    assert_clear_error(code, err, 2, "symbolic link")
    _one_error_line(err)
    assert list(victim.iterdir()) == []
