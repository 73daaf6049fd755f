"""Executors (robustlab.experiments.executors): a job's cells on a local Ray of 2 CPUs write the same
run directories as the in-process loop, a resume runs only the cells not complete, and a failed
cell is reported by name after the others finish. Without Ray, ``--executor ray`` is one clear line."""
import json
import os
import sys
from pathlib import Path

import pytest

from robustlab.errors import InputError
from robustlab.experiments.executors import (Cell, CellFailedError, LocalExecutor, RayExecutor, gpus_for,
                                              make_executor)
from robustlab.experiments.job import read_job_config, run_config
from robustlab.runs.evaluations import default_evaluation

try:
    import ray
except ImportError:
    ray = None
NO_RAY = "ray is not installed (pip install 'robustlab[cluster]'): the Ray executor tests skip"

JOB = """name: tiny
data: digits
train: {epochs: 1, eval_n: 30, eval_steps: 2, lr: 0.01}
models:
  - {name: a, model: mlp, train: {method: standard}}
  - {name: b, model: mlp, train: {method: fgsm_rs, eps: 0.1}}
evaluation: {eps: [0.0, 0.1], attacks: fgsm, n: 40}
"""


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray of 2 CPUs for this module; its workers import this checkout of robustlab."""
    root = str(Path(__file__).resolve().parents[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # no token file in the home folder
        mp.setenv("PYTHONPATH", os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
                 logging_level="WARNING", log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def _results(model_run: Path) -> dict:
    """What a model run computed, without clocks: summary, evaluation, epoch metrics, weights."""
    def no_clock(obj):
        if isinstance(obj, dict):
            return {k: no_clock(v) for k, v in obj.items() if "time" not in k and "elapsed" not in k}
        return [no_clock(v) for v in obj] if isinstance(obj, list) else obj

    metrics = [json.loads(line) for line in (model_run / "metrics.jsonl").read_text().splitlines()]
    return {"summary": no_clock(json.loads((model_run / "summary.json").read_text())),
            "evaluation": no_clock(default_evaluation(model_run).record),
            "metrics": no_clock(metrics), "weights": (model_run / "checkpoints" / "best.safetensors").read_bytes()}


@pytest.mark.ray
@pytest.mark.skipif(ray is None, reason=NO_RAY)
def test_a_job_on_ray_matches_the_local_run_and_resumes_only_the_missing_cell(tmp_path, local_ray):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(JOB)
    local = run_config(cfg, tmp_path / "local", progress=False)
    on_ray = run_config(cfg, tmp_path / "ray", progress=False, overrides={"executor": {"executor": "ray"}})
    for name in ("a", "b"):
        assert _results(on_ray / "models" / name) == _results(local / "models" / name)
    assert json.loads((on_ray / "summary.json").read_text())["models"]["b"]["evaluated"]
    assert "Per-attack breakdown" in (on_ray / "report.html").read_text()
    # a killed job: model b never ran; the resume runs b alone and leaves a as it was
    import shutil

    shutil.rmtree(on_ray / "models" / "b")
    a_files = {p: p.stat().st_mtime_ns for p in (on_ray / "models" / "a").rglob("*") if p.is_file()}
    run_config(cfg, tmp_path / "ray", resume=True, progress=False, overrides={"executor": {"executor": "ray"}})
    assert {p: p.stat().st_mtime_ns for p in (on_ray / "models" / "a").rglob("*") if p.is_file()} == a_files
    assert _results(on_ray / "models" / "b") == _results(local / "models" / "b")


@pytest.mark.ray
@pytest.mark.skipif(ray is None, reason=NO_RAY)
def test_a_failed_cell_is_named_after_the_others_finish(tmp_path, local_ray):
    (tmp_path / "in.txt").write_text("done")
    cells = [Cell("runs/broken", json.loads, {"s": "{not json"}),
             Cell("runs/fine", __import__("shutil").copyfile, {"src": str(tmp_path / "in.txt"), "dst": str(tmp_path / "out.txt")})]
    with pytest.raises(CellFailedError) as err:
        RayExecutor().run(cells)
    message = str(err.value)
    assert "\n" not in message and "cell 'runs/broken' failed: JSONDecodeError" in message
    assert "the other 1 of 2 cells finished" in message and "--resume" in message
    assert (tmp_path / "out.txt").read_text() == "done"  # the other cell ran to its end
    with pytest.raises(InputError, match="'runs/gpu' runs on cuda but the Ray cluster has no GPU"):
        RayExecutor().run([Cell("runs/gpu", dict, {}, device="cuda")])  # would wait forever for a GPU


def test_executor_settings_choose_the_executor_and_a_missing_ray_is_one_line(tmp_path, monkeypatch):
    assert isinstance(make_executor(None), LocalExecutor) and isinstance(make_executor("local"), LocalExecutor)
    assert LocalExecutor().run([Cell("x", dict, {"a": 1})]) == {"x": {"a": 1}}
    # a Ray task reserves one GPU for a CUDA cell (auto: when the cluster has GPUs), none on the CPU
    assert [gpus_for(d, 0) for d in ("cuda", "cuda:1", "auto", "cpu")] == [1, 1, 0, 0]
    assert [gpus_for(d, 8) for d in ("cuda", "auto", "cpu")] == [1, 1, 0]
    with pytest.raises(InputError, match="local, ray or ray:ADDRESS"):
        make_executor("slurm")
    cfg = tmp_path / "job.yaml"
    cfg.write_text(JOB + "executor: ray\n")  # a flag given (here --executor-cpus) keeps the file's executor
    assert read_job_config(cfg, {"executor": {"executor_cpus": 2}})["executor"] == {"executor": "ray", "executor_cpus": 2}
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError) as err:
        make_executor({"executor": "ray:10.0.0.1:6379"})
    assert "\n" not in str(err.value) and "pip install 'robustlab[cluster]'" in str(err.value)
