"""Nothing a user computed is overwritten (issue 26): each evaluation of a model run is stored under its
settings (``robustlab.runs.evaluations``), the same settings reuse it, a clash needs ``--overwrite``."""
import json
import shutil

import pytest

from helpers import assert_clear_error, cli
from robustlab.experiments import job
from robustlab.runs import evaluations
from robustlab.runs.leaderboard import leaderboard_row

A = ("--eps", "0,0.1,0.2", "--attacks", "fgsm,pgd", "--n", "80")  # the demo's evaluation (a curve)
B = ("--eps", "0.25", "--attacks", "fast", "--n", "100")  # the newcomer's


def _files(ev):
    return ev.record_path.read_bytes(), ev.examples_path.read_bytes()


@pytest.fixture
def evaluated(run_copy, capsys):
    """``run_copy`` evaluated with settings A (as a job or the demo leaves it)."""
    code, _, err = cli(capsys, "evaluate", run_copy, *A)
    assert code == 0, err
    return run_copy


def test_the_newcomers_sequence_keeps_the_demo_result(evaluated, capsys, caplog, monkeypatch, tmp_path):
    (a,) = evaluations.list_evaluations(evaluated)
    before = _files(a)
    code, out, err = cli(capsys, "evaluate", evaluated, *B)
    assert code == 0, err
    stored = evaluations.list_evaluations(evaluated)
    assert len(stored) == 2 and _files(a) == before  # A byte-identical
    b = next(ev for ev in stored if ev.folder != a.folder)
    assert f"stored in {b.folder}" in out and b.folder.name.startswith("fast-linf-eps0.25-n100-best-")
    assert evaluations.default_evaluation(evaluated).folder == a.folder  # the most thorough is shown
    code, _, err = cli(capsys, "report", evaluated, "-o", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert code == 0 and "attacks fgsm, pgd, n=80" in page and "Other evaluations" in page and "fast suite, n=100" in page, err
    assert b.folder.name in page

    def recompute(*args, **kwargs):
        raise AssertionError("a complete evaluation was recomputed")

    monkeypatch.setattr(job, "sharded_robustness_curve", recompute)
    b_before = _files(b)
    with caplog.at_level("INFO"):
        code, _, err = cli(capsys, "evaluate", evaluated, *B)  # same settings: reused
    assert code == 0 and _files(b) == b_before and "reusing it, nothing recomputed" in caplog.text, err


def test_other_settings_and_weights_are_stored_beside(evaluated, capsys):
    (a,) = evaluations.list_evaluations(evaluated)
    before = _files(a)
    for extra in (("--n", "50"), ("--weights", "last"), ("--seed", "1")):
        code, _, err = cli(capsys, "evaluate", evaluated, *A, *extra)
        assert code == 0, err
    assert len(evaluations.list_evaluations(evaluated)) == 4 and _files(a) == before


def test_a_clash_needs_overwrite(evaluated, capsys):
    (a,) = evaluations.list_evaluations(evaluated)
    key = json.loads((a.folder / "key.json").read_text())
    # a half-written evaluation of other weights sits in A's folder (e.g. copied there from another run)
    a.record_path.unlink()
    (a.folder / "key.json").write_text(json.dumps({**key, "weights_sha256": "0" * 64}))
    assert_clear_error(*cli(capsys, "evaluate", evaluated, *A)[::2], 2, str(a.folder), "--overwrite")
    assert not a.record_path.exists()
    code, _, err = cli(capsys, "evaluate", evaluated, *A, "--overwrite")
    assert code == 0 and json.loads(a.record_path.read_text())["key"] == key, err
    before = a.record_path.read_bytes()
    code, _, err = cli(capsys, "evaluate", evaluated, *A, "--overwrite")  # recomputed, same numbers
    after = json.loads(a.record_path.read_text())
    assert code == 0 and [r["robust_accuracy"] for r in after["reports"]] == \
        [r["robust_accuracy"] for r in json.loads(before)["reports"]]


def test_a_legacy_run_is_read_and_kept(evaluated, capsys, tmp_path):
    """A run from before the layout (RUN/evaluation.json, RUN/examples.pt) is read, never written."""
    (a,) = evaluations.list_evaluations(evaluated)
    shutil.copy(a.record_path, evaluated / "evaluation.json")
    shutil.copy(a.examples_path, evaluated / "examples.pt")
    shutil.rmtree(evaluated / "evaluations")
    legacy = evaluations.default_evaluation(evaluated)
    assert legacy.legacy and legacy.folder == evaluated
    before = (evaluated / "evaluation.json").read_bytes()
    code, _, err = cli(capsys, "evaluate", evaluated, *B)
    assert code == 0 and (evaluated / "evaluation.json").read_bytes() == before, err
    assert len(evaluations.list_evaluations(evaluated)) == 2
    # a job's leaderboard ranks by the job's settings, else the run's default
    fast = leaderboard_row("m", evaluated, {"eps": [0.25], "attacks": "fast", "n": 100})
    assert (fast["suite"], fast["n"], fast["eps"]) == ("fast", 100, 0.25)
    assert leaderboard_row("m", evaluated)["suite"] == "fgsm,pgd"
    code, _, err = cli(capsys, "report", evaluated, "-o", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert code == 0 and "attacks fgsm, pgd, n=80" in page and "fast suite, n=100" in page, err
