"""torchrun / DDP on CPU (gloo): 2 ranks with batch B == 1 process with batch 2B; a dead rank fails the job."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli
from robustlab.runs.evaluations import default_evaluation

COMMON = ["--data", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [64]}', "--epochs", "2",
          "--eval-n", "64", "--lr", "0.01", "--eps", "0.1", "--attack-steps", "3", "--optimizer", "sgd"]


def _weights(run):
    return load_file(str(Path(run) / "checkpoints" / "last.safetensors"))


def _launch(tmp_path, name, *extra, nproc=2, check=True):
    return run_cli("launch", "--nproc", str(nproc), "--", "train", *COMMON, "--batch-size", "32", "--runs", tmp_path,
                   "--name", name, *extra, check=check)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["standard", "pgd"])
def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path, method):
    run_cli("train", *COMMON, "--method", method, "--batch-size", "64", "--runs", tmp_path, "--name", "single")
    _launch(tmp_path, "ddp", "--method", method)
    single, ddp = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    assert single.keys() == ddp.keys()
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=2e-5, rtol=1e-4), (k, (single[k] - ddp[k]).abs().max())
    # and the run really did learn something (not two untrained copies)
    init = torch.nn.Linear(64, 64).weight
    assert (single["penultimate.1.weight"] - ddp["penultimate.1.weight"]).abs().max() < 1e-3
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text()
    assert '"world_size": 2' in metrics and init is not None


def _descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            children.setdefault(int(parts[1]), []).append((int(parts[0]), parts[2] if len(parts) > 2 else ""))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, args in children.get(p, []):
            found.append((c, args))
            todo.append(c)
    return found


@pytest.mark.slow
def test_a_dead_rank_fails_the_job_and_resume_continues(tmp_path):
    args = [sys.executable, "-m", "robustlab.cli", "--no-progress", "launch", "--nproc", "2", "--", "train", *COMMON,
            "--epochs", "6", "--method", "pgd", "--batch-size", "32", "--runs", str(tmp_path), "--name", "job",
            "--dist-timeout", "30"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    state = tmp_path / "job" / "checkpoints" / "state.pt"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), proc.communicate()[1][-2000:]
    workers = [p for p, a in _descendants(proc.pid) if "robustlab.cli" in a and "torch.distributed.run" not in a
               and "launch" not in a]
    assert len(workers) == 2, _descendants(proc.pid)
    os.kill(workers[1], signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job hung after a rank died")
    assert proc.returncode != 0
    assert "failed" in err.lower() or "error" in err.lower()
    assert not (tmp_path / "job" / "summary.json").exists()
    _launch(tmp_path, "job", "--epochs", "6", "--method", "pgd", "--resume")
    _launch(tmp_path, "full", "--epochs", "6", "--method", "pgd")
    a, b = _weights(tmp_path / "job"), _weights(tmp_path / "full")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.slow
def test_post_local_sgd_trains_and_llr_under_ddp_is_refused(tmp_path):
    _launch(tmp_path, "lsgd", "--method", "standard", "--local-sgd-period", "4", "--optimizer", "adam")
    final = [__import__("json").loads(l) for l in (tmp_path / "lsgd" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["val_acc"] > 0.7 and final["world_size"] == 2
    # local steps really happen: the same run without post-local SGD (every step all-reduced) ends elsewhere
    _launch(tmp_path, "plain", "--method", "standard", "--optimizer", "adam")
    a, b = _weights(tmp_path / "lsgd"), _weights(tmp_path / "plain")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-4
    refused = _launch(tmp_path, "llr", "--method", "llr", check=False)
    assert refused.returncode != 0 and "not supported under DDP" in refused.stderr


@pytest.mark.slow
def test_evaluation_sharded_over_two_ranks_equals_one_process(tmp_path):
    """`launch --nproc 2 -- evaluate`: points dealt out in whole batches, per-point results gathered
    into the record a single process writes (same robust accuracies, same attack that broke each)."""

    run_cli("train", *COMMON, "--batch-size", "64", "--runs", tmp_path, "--name", "model")
    args = ["--eps", "0.05,0.1", "--attacks", "fgsm,pgd", "--n", "90", "--batch-size", "20"]
    run_cli("evaluate", tmp_path / "model", *args)
    single = default_evaluation(tmp_path / "model").record
    run_cli("launch", "--nproc", "2", "--", "evaluate", tmp_path / "model", *args, "--overwrite")
    sharded = default_evaluation(tmp_path / "model").record
    assert sharded["world_size"] == 2 and single["world_size"] == 1
    for a, b in zip(single["reports"], sharded["reports"]):
        assert a["n"] == b["n"] == 90
        assert a["robust_accuracy"] == b["robust_accuracy"] and a["per_attack"] == b["per_attack"], (a, b)
        assert a["clean_accuracy"] == b["clean_accuracy"]
