"""`robustlab poison craft -> train --data <poisoned run> -> poison evaluate`, end to end on a tiny setting,
the resume check on the poisoned data, bad input in one line, and `poison reproduce --quick` (issue 22)."""
import json
import shutil
from pathlib import Path

import yaml

from robustlab.data import load_dataset

from helpers import TRAIN, assert_clear_error, cli


def _craft(capsys, tmp_path, name, *extra):
    code, out, err = cli(capsys, "poison", "craft", "--attack", "badnets", "--data", "digits", "--rate", "0.05",
                         "--runs", tmp_path, "--name", name, *extra)
    assert code == 0, err
    return tmp_path / name


def _train(capsys, tmp_path, data, name, *extra):
    flags = [x for k, v in TRAIN.items() for x in (f"--{k.replace('_', '-')}", v)]
    return cli(capsys, "train", "--model", "mlp", "--data", data, "--eps", "0", *flags, "--runs", tmp_path,
               "--name", name, *extra)


def test_craft_train_evaluate_end_to_end(capsys, tmp_path):
    poison = _craft(capsys, tmp_path, "bd", "--attack-kwargs", '{"position": [0, 0]}')
    summary = json.loads((poison / "summary.json").read_text())
    assert summary["n"] == 1257 and summary["n_poisoned"] == round(0.05 * 1257)
    code, out, err = _train(capsys, tmp_path, poison, "m")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert config["data"]["name"] == str(poison) and len(config["data"]["sha256"]) == 64
    code, out, err = cli(capsys, "poison", "evaluate", tmp_path / "m", "--poison", poison)
    assert code == 0 and "ASR" in out, err
    record = json.loads((tmp_path / "m" / "poison_evaluation.json").read_text())
    test_y = load_dataset("digits", "test").y
    assert record["n_clean"] == 360 and record["n_triggered"] == int((test_y != 0).sum())  # the target's images left out
    assert record["attack"]["position"] == [0, 0]
    lo, hi = record["asr_ci95"]
    assert lo <= record["asr"] <= hi
    assert (tmp_path / "m" / "poison_report.html").is_file() and (tmp_path / "m" / "figures" / "poison-triggered.png").is_file()
    # a poison crafted on a trained model (--model RUN): clean-label, from the target class only, labels kept
    code, out, err = cli(capsys, "poison", "craft", "--attack", "clean_label", "--data", "digits", "--rate", "0.1",
                         "--model", tmp_path / "m", "--attack-kwargs", '{"steps": 2}', "--runs", tmp_path, "--name", "cl")
    assert code == 0, err
    cl = json.loads((tmp_path / "cl" / "summary.json").read_text())
    assert cl["n_poisoned"] == round(0.1 * int((load_dataset("digits", "train").y == 0).sum()))
    for attack, needs in (("adversarial_poison", "--model RUN"), ("gradient_matching", "Python API")):
        code, _, err = cli(capsys, "poison", "craft", "--attack", attack, "--data", "digits", "--runs", tmp_path)
        assert_clear_error(code, err, 2, needs)


def test_resume_refuses_other_poisoned_data(capsys, tmp_path):
    poison = _craft(capsys, tmp_path, "bd")
    other = _craft(capsys, tmp_path, "bd2", "--seed", "1")
    code, _, err = _train(capsys, tmp_path, poison, "m")
    assert code == 0, err
    shutil.copyfile(other / "data.safetensors", poison / "data.safetensors")
    code, _, err = _train(capsys, tmp_path, poison, "m", "--resume")
    assert_clear_error(code, err, 2, "poisoned data sha256")


def test_bad_input_is_one_line(capsys, tmp_path):
    poison = _craft(capsys, tmp_path, "bd")
    for args, words in (
            (("poison", "craft", "--attack", "nope"), "nope"),
            (("poison", "craft", "--attack-kwargs", '{"alpha": 0.1}'), "takes no alpha"),
            (("poison", "craft", "--rate", "2"), "--rate"),
            (("poison", "craft", "--runs", tmp_path, "--name", "bd"), "never overwritten"),
            (("poison", "evaluate", tmp_path / "m"), "--poison"),
            (("poison", "evaluate", tmp_path / "nothing", "--poison", poison), "not a model run"),
            (("train", "--data", poison, "--data-seed", "2", "--runs", tmp_path), "--data-seed 0")):
        code, _, err = cli(capsys, *args)
        assert_clear_error(code, err, 2, words)
        assert len(err.strip().splitlines()) == 1, err


def test_reproduce_quick(capsys, tmp_path):
    code, out, err = cli(capsys, "poison", "reproduce", "--quick", "--sections", "backdoors", "--out", tmp_path / "r")
    assert code == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    rows = results["sections"]["backdoors"]["rows"]
    assert {r["attack"] for r in rows} == {"clean", "BadNets", "Blend", "WaNet", "WaNet-no-noise"}
    assert all(0 <= r["asr"] <= 1 for r in rows if r["attack"] != "clean")
    assert "## Backdoors" in (tmp_path / "r" / "results.md").read_text()
    for f in results["sections"]["backdoors"]["figures"]:
        assert Path(f).is_file() and Path(f).suffix == ".png"
    assert (tmp_path / "r" / "report.html").is_file()


def test_poison_verbs_have_help_and_evaluate_takes_device():
    from robustlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    verbs = next(a for a in sub["poison"]._actions if a.dest == "poison_verb").choices
    assert {"craft", "evaluate", "reproduce"} <= set(verbs)
    assert all(verbs[v].format_help().startswith("usage: robustlab poison") for v in verbs)
    assert any("--device" in a.option_strings for a in verbs["evaluate"]._actions)


def test_without_rate_the_attack_keeps_its_own_default(capsys, tmp_path):
    code, out, err = cli(capsys, "poison", "craft", "--attack", "blend", "--data", "digits", "--runs", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "poison-blend-digits" / "summary.json").read_text())
    assert summary["n_poisoned"] == round(0.1 * 1257)  # Blend's own rate
