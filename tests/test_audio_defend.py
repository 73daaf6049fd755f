"""`robustlab audio defend` on tiny settings: adversarial training on the waveform with a shared method, from
scratch and fine-tuning, evaluated in the same run by the shared robustness curve and sanity checks."""
import json

import pytest
import yaml

pytest.importorskip("soundfile", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")
pytest.importorskip("librosa", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")

from robustlab.tasks.audio import espeak_status  # noqa: E402

ESPEAK, WHY = espeak_status()


@pytest.mark.skipif(not ESPEAK, reason=WHY)
def test_defend_from_scratch_then_fine_tune(tmp_path, monkeypatch, capsys):
    from helpers import cli

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    tiny = ["--voices", "3", "--words", "yes,no", "--takes", "1", "--epochs", "1", "--n", "2", "--db=-40",
            "--attacks", "apgd-ce", "--runs", tmp_path]
    code, _, err = cli(capsys, "audio", "defend", "--name", "d", "--method", "fgsm_rs", *tiny)
    assert code == 0, err
    run = tmp_path / "d"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["setup"]["method"] == "fgsm_rs" and summary["setup"]["at_db"] == -50.0
    assert summary["fine_tuned"] is None and 0 <= summary["test_accuracy"] <= 1
    assert [r["db"] for r in summary["rows"]] == ["-40"] and summary["n"] == 2
    assert {c["name"] for c in summary["sanity"]["-40"]} >= {"gradients", "one_step_vs_iterative"}
    assert (run / "checkpoints" / "kws.safetensors").exists() and "sanity checks" in (run / "report.html").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["kind"] == "audio-model"
    code, _, err = cli(capsys, "audio", "defend", "--name", "f", "--model", run, "--method", "trades",
                       "--at-db", "-40", "--sanity", "none", *tiny)
    assert code == 0, err
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["fine_tuned"] == str(run) and summary["setup"]["method"] == "trades" and "sanity" not in summary
    code, _, err = cli(capsys, "audio", "defend", "--name", "g", "--model", run, *tiny[:-4], "--words", "yes,go",
                       "--runs", tmp_path)
    assert code == 2 and "classifies" in err


def test_defend_refuses_no_defence_and_a_missing_model_before_any_run(tmp_path, capsys):
    from helpers import cli

    code, _, err = cli(capsys, "audio", "defend", "--method", "standard", "--runs", tmp_path)
    assert code == 2 and "--method standard is no defence" in err
    code, _, err = cli(capsys, "audio", "defend", "--model", tmp_path / "missing.safetensors", "--runs", tmp_path)
    assert code == 2 and "no such file or folder" in err
    assert not any(tmp_path.rglob("config.yaml"))
