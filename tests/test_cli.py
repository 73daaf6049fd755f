import json

import pytest
import torch

from helpers import run_cli
from robustlab.runs.evaluations import default_evaluation

COMMANDS = ["train", "attack", "evaluate", "run", "report", "list", "launch", "sweep", "stereo", "stereo train",
            "stereo attack", "stereo defend", "stereo evaluate", "stereo reproduce", "landscape", "compare-geometry", "represent", "ocr", "ocr train", "ocr attack",
            "ocr reproduce"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = run_cli(*command.split(), "--help")
    assert "usage: robustlab" in out.stdout


def test_train_attack_evaluate_report_through_the_cli(tmp_path):
    common = ["--data", "digits", "--model", "mlp", "--epochs", "3", "--eval-n", "100", "--runs", tmp_path,
              "--lr", "0.01"]
    run_cli("train", *common, "--name", "std")
    run_cli("train", *common, "--name", "pgd", "--method", "pgd", "--eps", "0.1", "--attack-steps", "5")
    out = run_cli("attack", tmp_path / "std", "--attack", "pgd", "--eps", "0.1", "--steps", "10", "--n", "100",
                  "--save", tmp_path / "adv.pt", "--runs", tmp_path)
    summary = json.loads(out.stdout[out.stdout.index("{"):out.stdout.rindex("}") + 1])
    attack_run = tmp_path / "attack-pgd-std"  # the attack leaves a run record and report like every command
    assert json.loads((attack_run / "summary.json").read_text())["n"] == 100
    assert "robust_accuracy" in (attack_run / "report.html").read_text()
    assert summary["n"] == 100 and 0 <= summary["robust_accuracy"] <= summary["clean_accuracy"] <= 1
    bb = run_cli("attack", tmp_path / "std", "--attack", "square", "--eps", "0.1", "--queries", "200", "--n", "50",
                 "--black-box", "--runs", tmp_path)
    bb_summary = json.loads(bb.stdout[bb.stdout.index("{"):bb.stdout.rindex("}") + 1])
    assert bb_summary["attack"] == "square" and bb_summary["forward_calls"] <= 50 * 200
    wrong = run_cli("attack", tmp_path / "std", "--attack", "square", "--steps", "5", "--runs", tmp_path, check=False)
    assert wrong.returncode == 2 and "does not take --steps" in wrong.stderr
    saved = torch.load(tmp_path / "adv.pt")
    assert (saved["x_adv"] - saved["x"]).abs().max() <= 0.1 + 1e-6
    for name in ("std", "pgd"):
        out = run_cli("evaluate", tmp_path / name, "--eps", "0,0.05,0.1", "--attacks", "fast", "--n", "100")
        ev = default_evaluation(tmp_path / name).record
        accs = [r["robust_accuracy"] for r in ev["reports"]]
        assert accs == sorted(accs, reverse=True) and ev["n"] == 100
        assert "broken by" in out.stdout and "fast suite, n=100" in out.stdout
        assert "apgd-ce " in out.stdout and "{" not in out.stdout  # readable text in cascade order, not a dict
    # analyses a run holds (robustlab landscape / represent) show up in the shared report
    (tmp_path / "pgd" / "geometry.json").write_text(json.dumps({"loss": "clean", "n": 64, "scalars": {"top_eigenvalue": 12.5},
                                                                "gaps": {"acc_gap": 0.01}}))
    run_cli("report", tmp_path / "std", tmp_path / "pgd", "-o", tmp_path / "both.html")
    page = (tmp_path / "both.html").read_text()
    assert "std" in page and "pgd" in page and "robustness_curve.png" in page
    assert "Gradient-masking checks at eps=0.1" in page and "one_step_vs_iterative" in page
    assert "loss-landscape geometry" in page and "top_eigenvalue" in page and "12.5" in page
    assert (tmp_path / "both_files" / "robustness_curve.png").stat().st_size > 1000  # self-contained: page + page_files/
    assert not (tmp_path / "figures").exists()


def test_run_config_job_and_resume(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        "name: tiny\n"
        "data: digits\n"
        "train: {epochs: 2, eval_n: 50, lr: 0.01}\n"
        "models:\n"
        "  - {name: a, model: mlp, train: {method: standard}}\n"
        "  - {name: b, model: mlp, train: {method: fgsm_rs, eps: 0.1}}\n"
        "evaluation: {eps: [0.0, 0.1], attacks: fast, n: 60}\n"
    )
    run_cli("run", cfg, "--runs", tmp_path / "runs")
    job = tmp_path / "runs" / "tiny"
    page = (job / "report.html").read_text()
    assert "Per-attack breakdown" in page and ">a<" in page and ">b<" in page
    summary = json.loads((job / "summary.json").read_text())
    assert set(summary["models"]) == {"a", "b"} and summary["models"]["a"]["evaluated"]
    before = (job / "models" / "a" / "checkpoints" / "last.safetensors").read_bytes()
    run_cli("run", cfg, "--runs", tmp_path / "runs", "--resume")  # finished: nothing is retrained
    assert (job / "models" / "a" / "checkpoints" / "last.safetensors").read_bytes() == before


def test_cli_errors_are_one_clear_line(tmp_path):
    out = run_cli("train", "--data", "cifar1000", "--runs", tmp_path, check=False)
    assert out.returncode == 2 and "known datasets" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("evaluate", tmp_path / "nothing", check=False)
    assert out.returncode == 2 and "not a model run" in out.stderr


def test_batch_size_sweep_records_generalisation_gaps(tmp_path):
    out = run_cli("sweep", "batch-size", "--batch-sizes", "32,256", "--lr-rules", "constant,linear", "--data", "digits",
                  "--model", "mlp", "--epochs", "2", "--eval-n", "100", "--lr", "0.05", "--eps", "0.1",
                  "--attack-steps", "3", "--runs", tmp_path, "--name", "sw")
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]
    assert [(r["batch_size"], r["lr_rule"]) for r in rows] == [(32, "constant"), (32, "linear"), (256, "constant"), (256, "linear")]
    assert rows[3]["lr"] == pytest.approx(0.05 * 8)
    assert all(r["generalization_gap"] is not None and r["robust_generalization_gap"] is not None for r in rows)
    assert "rob gap" in out.stdout


def test_a_job_folder_given_for_a_model_run_names_its_model_runs(tmp_path):
    """`robustlab evaluate runs/quickstart`, the obvious next step after the demo, names the job's model runs."""
    import yaml

    from robustlab.errors import InputError
    from robustlab.experiments.job import load_model_from_run

    job = tmp_path / "quickstart"
    for label in ("pgd-at", "standard"):
        (job / "models" / label).mkdir(parents=True)
        (job / "models" / label / "config.yaml").write_text(yaml.safe_dump({"kind": "model"}))
    (job / "config.yaml").write_text(yaml.safe_dump({"kind": "job"}))
    with pytest.raises(InputError) as e:
        load_model_from_run(job)
    assert "is a job run, not a model run" in str(e.value)
    assert str(job / "models" / "pgd-at") in str(e.value) and str(job / "models" / "standard") in str(e.value)


def test_attack_records_carry_query_statistics_only_for_attacks_that_count_queries(digits_model, digits_test):
    import robustlab as rl
    from robustlab.experiments.attack import _summary

    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.3)
    white = _summary(rl.attacks.PGD(threat, steps=5)(digits_model, x[:40], y[:40]), "pgd")
    black = _summary(rl.attacks.Square(threat, max_queries=50)(digits_model, x[:40], y[:40]), "square")
    assert white["success_rate"] > 0 and not any(k.startswith("queries_per_success") for k in white)
    assert black["success_rate"] > 0 and "queries_per_success_mean" in black
    assert "time_s" not in white  # the record's one time is the caller's
