"""The results table that the end of `robustlab train`, `evaluate` and `run` prints (issue 26): one formatter
(runs/summary_table.py), aligned columns, rounded numbers; and the progress of `robustlab attack`."""
import re

import pytest

from helpers import cli
from robustlab.runs.summary_table import evaluation_rows, results_table, training_table

LONG_FLOAT = re.compile(r"\d\.\d{4,}")

EVALUATION = {  # an evaluation's dict as evaluate_model_run returns it (the parts the table reads)
    "norm": "linf", "attacks": "fast",
    "reports": [
        {"eps": 0.0, "n": 100, "clean_accuracy": 0.97, "robust_accuracy": 0.97,
         "robust_accuracy_ci95": [0.9155, 0.9897], "per_attack": {"clean": 3, "apgd-ce": 0, "apgd-t": 0}, "sanity": None},
        {"eps": 0.1, "n": 100, "clean_accuracy": 0.97, "robust_accuracy": 0.8133333333,
         "robust_accuracy_ci95": [0.7244, 0.8757], "per_attack": {"clean": 3, "apgd-ce": 15, "apgd-t": 1},
         "sanity": [{"name": "one_step_vs_iterative", "verdict": "pass"}, {"name": "cascade_black_box", "verdict": "warn"}]},
    ],
}


def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_the_results_table_is_aligned_and_rounded():
    table = results_table(evaluation_rows("pgd", EVALUATION)).splitlines()
    assert _columns(table[0]) == ["model", "eps", "clean (95% CI)", "robust (95% CI)", "suite", "n", "broken by", "checks"]
    assert _columns(table[1]) == ["pgd", "linf 0", "97.0% [91.5, 99.0]", "97.0% [91.5, 99.0]", "fast", "100", "-", "-"]
    # broken by in cascade order ("clean" is not an attack); every check that did not pass is named
    assert _columns(table[2]) == ["pgd", "linf 0.1", "97.0% [91.5, 99.0]", "81.3% [72.4, 87.6]", "fast", "100",
                                  "apgd-ce 15, apgd-t 1; already wrong 3", "warn: cascade_black_box"]
    starts = [[m.start() for m in re.finditer(r"(?<=  )\S", line)] for line in table]
    assert starts[0] == starts[1] == starts[2]  # aligned columns


def test_the_training_table_names_the_split_and_the_epochs():
    summary = {"best_epoch": 2, "train_time_s": 12.345, "final": {"epoch": 3, "val_acc": 0.9, "val_robust_acc": 0.4567}}
    lines = training_table("pgd", summary, 3).splitlines()
    assert _columns(lines[0]) == ["model", "val clean", "val robust (PGD)", "epochs", "checkpoint epoch", "time"]
    assert _columns(lines[1]) == ["pgd", "90.0%", "45.7%", "3/3", "2", "12.3s"]
    no_val = training_table("std", {"final": {"epoch": 1, "train_acc": 1.0}}, 1)
    assert "train clean" in no_val and "100.0%" in no_val


def test_train_evaluate_and_run_end_with_the_results_table(tmp_path, capsys):
    common = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--eval-n", "40", "--lr", "0.01", "--runs", tmp_path]
    code, out, err = cli(capsys, "train", *common, "--name", "m")
    assert code == 0, err
    head, row = out.splitlines()[:2]
    assert _columns(head)[:3] == ["model", "val clean", "val robust (PGD)"] and _columns(row)[0] == "m"
    assert _columns(row)[3] == "1/1" and not LONG_FLOAT.search(out)

    code, out, err = cli(capsys, "evaluate", tmp_path / "m", "--eps", "0,0.1", "--attacks", "fast", "--n", "30")
    assert code == 0, err
    lines = out.splitlines()[1:]  # under the line naming the suite, n and norm
    assert out.startswith("fast suite, n=30, linf\n")
    assert "broken by" in lines[0] and [_columns(x)[1] for x in lines[1:3]] == ["linf 0", "linf 0.1"]
    assert all(_columns(x)[4:6] == ["fast", "30"] for x in lines[1:3]) and not LONG_FLOAT.search(out)

    job = tmp_path / "job.yaml"
    job.write_text("name: tiny\ndata: digits\ntrain: {epochs: 1, eval_n: 30, lr: 0.01}\n"
                   "models:\n  - {name: a, model: mlp}\n  - {name: b, model: mlp, train: {seed: 1}}\n"
                   "evaluation: {eps: [0.0, 0.1], attacks: fgsm, n: 30}\n")
    code, out, err = cli(capsys, "run", job, "--runs", tmp_path / "runs")
    assert code == 0, err
    table = [x for x in out.splitlines() if x.strip() and not x.startswith(("report:", "leaderboard:"))]
    assert _columns(table[0])[:3] == ["#", "model", "eps"]
    rows = [_columns(x) for x in table[1:]]
    assert len(rows) == 4 and {r[1] for r in rows} == {"a", "b"}  # each model at each eps, in rank order
    assert [r[0] for r in rows] == ["1", "1", "2", "2"] and {r[2] for r in rows} == {"linf 0", "linf 0.1"}


@pytest.mark.parametrize("progress", [True, False])
def test_robustlab_attack_shows_the_points_it_broke(tmp_path, capsys, monkeypatch, progress):
    from robustlab.experiments.attack import AttackSettings, attack_model_run
    from robustlab.progress import Heartbeat

    code, _, err = cli(capsys, "train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--eval-n", "20",
                       "--runs", tmp_path, "--name", "m")
    assert code == 0, err
    seen = []
    original = Heartbeat.set_postfix_str
    monkeypatch.setattr(Heartbeat, "set_postfix_str", lambda self, s="", refresh=True: (seen.append(s), original(self, s)))
    out, _ = attack_model_run(tmp_path / "m", AttackSettings(attack="fgsm", eps=0.1, n=30), runs=tmp_path,
                              device="cpu", progress=progress)
    if not progress:
        assert seen == []
        return
    broken = round(30 * (out["clean_accuracy"] - out["robust_accuracy"]))
    assert seen[0].startswith("fgsm on 30 points (") and seen[0].endswith("clean-correct), 0 broken so far")
    assert seen[-1] == f"{broken} broken"
