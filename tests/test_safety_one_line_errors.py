"""Every failure path of issue 25 (item 7) is one line on stderr, with exit code 2 for bad input and 1 for a
failure: corrupt or foreign run files fed to ``report``, a pickle payload in ``examples.pt``, non-finite
settings, bad ``--model-kwargs``, weight-file metadata asking for a huge model, non-UTF-8 run names, and
``report -o <directory>``."""

import json
import shutil

import pytest
import torch

from helpers import Payload, cli
from robustlab.runs.evaluations import default_evaluation


def assert_one_line_error(code, err, expected_code, *words):
    """Exit `expected_code` and one line on stderr: an error that is no traceback and no 'unexpected ...' bug."""
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err and "unexpected" not in err and "may be a bug" not in err, err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    """``trained_run`` with an evaluation (``evaluation.json``, ``examples.pt``)."""
    from robustlab.cli import main as cli_main

    dst = tmp_path_factory.mktemp("evaluated") / "ev"
    shutil.copytree(trained_run, dst)
    assert cli_main(["--no-progress", "evaluate", str(dst), "--n", "8", "--attacks", "fgsm", "--eps", "0.1"]) == 0
    return dst


def _run_file(run, name):
    """Where `name` lies in a run: an evaluation's files in its folder (``runs.evaluations``), others at the top."""
    return default_evaluation(run).folder / name if name in ("evaluation.json", "examples.pt") else run / name


@pytest.fixture
def damaged_run(evaluated_run, tmp_path):
    dst = tmp_path / "runs" / "r"
    shutil.copytree(evaluated_run, dst)
    return dst


RUN_FILE_CASES = [
    ("summary.json", "{"),
    ("summary.json", "[1, 2]"),
    ("summary.json", '{"train_time_s": "soon"}'),
    ("summary.json", b"\xff\xfe"),
    ("evaluation.json", "{"),
    ("evaluation.json", '{"reports": 3}'),
    ("evaluation.json", '{"norm": "linf", "reports": [{"eps": "big"}]}'),
    ("config.yaml", "a: [\n"),
    ("config.yaml", "- 1\n"),
    ("config.yaml", "kind: model\ntrain: 5\n"),
    ("config.yaml", 'x: !!python/object/apply:os.system ["echo hi"]\n'),
    ("config.yaml", b"\xff\xfe"),
]


@pytest.mark.parametrize("name,content", RUN_FILE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RUN_FILE_CASES)])
def test_report_on_a_corrupt_or_foreign_run_file_is_one_line(damaged_run, capsys, name, content):
    f = _run_file(damaged_run, name)
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = cli(capsys, "report", damaged_run, "-o", damaged_run.parent / "out.html")
    assert_one_line_error(code, err, 2, name)


def test_report_on_a_pickle_payload_in_examples_is_one_line(damaged_run, tmp_path, capsys):
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker)}, _run_file(damaged_run, "examples.pt"))
    code, _, err = cli(capsys, "report", damaged_run, "-o", damaged_run.parent / "out.html")
    assert_one_line_error(code, err, 2, "examples.pt")
    assert not marker.exists()


def test_report_on_foreign_examples_is_one_line(damaged_run, capsys):
    torch.save(torch.zeros(3), _run_file(damaged_run, "examples.pt"))
    code, _, err = cli(capsys, "report", damaged_run, "-o", damaged_run.parent / "out.html")
    assert_one_line_error(code, err, 2, "examples.pt")


TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--eval-n", "20"]


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--momentum", "inf"),
                                        ("--weight-decay", "inf"), ("--eps", "inf"), ("--warmup-epochs", "nan")])
def test_non_finite_float_settings_are_one_line(tmp_path, capsys, flag, value):
    code, _, err = cli(capsys, *TRAIN, "--runs", tmp_path / "runs", flag, value)
    assert_one_line_error(code, err, 2, flag)
    assert not (tmp_path / "runs").exists()


def test_non_finite_settings_are_refused_in_python():
    from robustlab.errors import InputError
    from robustlab.training import TrainConfig

    for bad in (float("inf"), float("nan"), -float("inf")):
        with pytest.raises(InputError, match="lr"):
            TrainConfig(lr=bad)


@pytest.mark.parametrize("kwargs,words", [('{"bogus": 1}', ["'mlp'", "bogus"]), ('{"hidden": -1}', ["'mlp'", "hidden"]),
                                          ('{"hidden": [-1]}', ["'mlp'", "negative"])])
def test_model_kwargs_the_model_rejects_are_one_line(tmp_path, capsys, kwargs, words):
    code, _, err = cli(capsys, *TRAIN, "--runs", tmp_path / "runs", "--model-kwargs", kwargs)
    assert_one_line_error(code, err, 2, *words)


@pytest.mark.parametrize("kwargs", ["[" * 100_000, '"x"', "{"])
def test_malformed_model_kwargs_are_argparse_errors(tmp_path, capsys, kwargs):
    """A value that is no JSON object is rejected by the parser itself, as every malformed flag value (e.g.
    ``--epochs x``): exit 2 and one line (no usage text), never a traceback."""
    with pytest.raises(SystemExit) as e:
        cli(capsys, *TRAIN, "--runs", tmp_path / "runs", "--model-kwargs", kwargs)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("robustlab train: error: argument --model-kwargs: expected")


def test_model_factory_rejecting_a_keyword_is_an_input_error():
    from robustlab.errors import InputError
    from robustlab.models import create_model

    with pytest.raises(InputError, match="'mlp'.*bogus"):
        create_model("mlp", bogus=1)


def _weights_with_setup(path, setup: dict):
    from robustlab.weights import save_weights

    save_weights(torch.nn.Linear(1, 1), path, {"setup": json.dumps(setup)})
    return path


@pytest.mark.parametrize("setup", [{"hidden": 10 ** 6}, {"channels": [16, 32, 64, 10 ** 7]}, {"hidden": -3},
                                   {"hidden": "big"}, {"hidden": 48, "bogus": 1}, {"channels": [1, 2]}])
def test_crnn_metadata_asking_for_a_huge_or_odd_model_is_refused_before_building(tmp_path, capsys, setup):
    from robustlab.errors import CheckpointError
    from robustlab.tasks.ocr import load_crnn

    f = _weights_with_setup(tmp_path / "crnn.safetensors", setup)
    with pytest.raises(CheckpointError, match="crnn.safetensors"):
        load_crnn(f)
    code, _, err = cli(capsys, "ocr", "attack", "--target", "crnn", "--model", f, "--n", 1, "--runs", tmp_path / "runs")
    assert_one_line_error(code, err, 2, "crnn.safetensors")


@pytest.mark.parametrize("setup", [{"features": 10 ** 6}, {"max_disp": 0}, {"h": 48, "bogus": 1}, "not a dict"])
def test_stereo_metadata_asking_for_a_huge_or_odd_model_is_refused_before_building(tmp_path, setup):
    from robustlab.errors import CheckpointError
    from robustlab.tasks.stereo.pretrained import load_stereo_model

    f = _weights_with_setup(tmp_path / "stereo.safetensors", setup)
    with pytest.raises(CheckpointError, match="stereo.safetensors"):
        load_stereo_model(f)


def test_a_non_utf8_run_name_is_one_line(tmp_path, capsys):
    name = b"\xff".decode("utf-8", "surrogateescape")
    code, _, err = cli(capsys, *TRAIN, "--runs", tmp_path / "runs", "--name", name)
    assert_one_line_error(code, err, 2, "UTF-8")


@pytest.mark.parametrize("verb", [["evaluate", "--n", "4", "--attacks", "fgsm", "--eps", "0.1"], ["attack", "--n", "4"],
                                  ["report"]])
def test_reading_a_run_with_a_non_utf8_name_is_one_line(evaluated_run, tmp_path, capsys, verb):
    run = tmp_path / b"\xff".decode("utf-8", "surrogateescape")
    shutil.copytree(evaluated_run, run)
    code, _, err = cli(capsys, verb[0], run, *verb[1:])
    assert_one_line_error(code, err, 2, "UTF-8")
    assert "corrupt" not in err


def test_report_out_an_existing_directory_writes_inside_it(evaluated_run, tmp_path, capsys):
    out = tmp_path / "site" / "out"
    out.mkdir(parents=True)
    code, stdout, err = cli(capsys, "report", evaluated_run, "-o", out)
    assert code == 0, err
    assert (out / "report.html").is_file() and (out / "figures" / "robustness_curve.png").is_file()
    assert not (out.parent / "figures").exists()
    assert str(out / "report.html") in stdout
