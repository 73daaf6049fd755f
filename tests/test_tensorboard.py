"""--tensorboard (issue 26, "live curves where researchers look"): training writes every epoch's numbers and
`robustlab evaluate` its per-eps results as TensorBoard scalars into the run folder; off by default (and then
absent from the run's config), one clear line without the package."""
import importlib.util

import pytest

from helpers import assert_clear_error, cli
from robustlab.runs import Run
from robustlab.training import TrainConfig

TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--eval-n", "40", "--lr", "0.01"]


def _scalars(folder):
    """{tag: [(step, value)]} of the event files in `folder`, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_and_evaluation_write_their_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    code, _, err = cli(capsys, *TRAIN, "--runs", tmp_path, "--name", "m", "--tensorboard")
    assert code == 0, err
    epochs = [r for r in Run(tmp_path / "m").read_metrics() if r.get("kind") == "epoch"]
    scalars = _scalars(tmp_path / "m" / "tensorboard")
    for key in ("train_objective", "train_acc", "train_robust_acc", "val_acc", "val_robust_acc", "lr"):
        assert [s for s, _ in scalars[f"epoch/{key}"]] == [1, 2]
        assert [v for _, v in scalars[f"epoch/{key}"]] == pytest.approx([r[key] for r in epochs], rel=1e-6)
    assert "epoch/catastrophic_overfitting" not in scalars  # flags are left out

    code, out, err = cli(capsys, "evaluate", tmp_path / "m", "--eps", "0,0.1", "--attacks", "fast", "--n", "30",
                         "--tensorboard")
    assert code == 0, err
    folder = tmp_path / "m" / "tensorboard" / "evaluation-fast-n30"
    assert f"tensorboard: {folder}" in out
    ev = _scalars(folder)
    curve = [r for r in Run(tmp_path / "m").read_metrics() if r.get("kind") == "evaluation"][-1]
    assert [s for s, _ in ev["evaluation/robust_accuracy"]] == [0, 100]  # the step is eps x 1000
    assert [v for _, v in ev["evaluation/robust_accuracy"]] == pytest.approx(curve["robust_acc"], rel=1e-6)
    clean, robust = (dict(ev[f"evaluation/{k}_accuracy"])[100] for k in ("clean", "robust"))
    broken = [dict(ev[f"evaluation/broken_by/{a}"]) for a in ("apgd-ce", "apgd-t")]
    assert [b[0] for b in broken] == [0, 0] and sum(b[100] for b in broken) == round(30 * (clean - robust))


def test_off_by_default_and_recorded_only_when_on(tmp_path, capsys):
    code, _, err = cli(capsys, *TRAIN, "--epochs", "1", "--runs", tmp_path, "--name", "m")
    assert code == 0, err
    assert not (tmp_path / "m" / "tensorboard").exists()
    assert "tensorboard" not in Run(tmp_path / "m").read_config()["train"]  # older runs' fingerprints still match
    if importlib.util.find_spec("tensorboard") is not None:
        assert TrainConfig(tensorboard=True).fingerprint()["tensorboard"] is True


def test_without_the_package_it_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    code, _, err = cli(capsys, *TRAIN, "--runs", tmp_path, "--name", "m", "--tensorboard")
    assert_clear_error(code, err, 2, "tensorboard", "pip install")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    code, _, err = cli(capsys, "evaluate", tmp_path / "m", "--eps", "0.1", "--tensorboard")
    assert_clear_error(code, err, 2, "pip install")


def test_a_writer_without_torchs_tensorboard_module_is_an_input_error(tmp_path, monkeypatch):
    import sys

    from robustlab.errors import InputError
    from robustlab.progress import tensorboard_writer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(InputError, match="pip install"):
        tensorboard_writer(tmp_path / "tb")


def test_a_resume_may_turn_it_on(tmp_path, capsys):
    """--tensorboard changes only what is written beside the run, so a resume may add or drop it."""
    pytest.importorskip("tensorboard")
    code, _, err = cli(capsys, *TRAIN, "--epochs", "1", "--runs", tmp_path, "--name", "m")
    assert code == 0, err
    code, _, err = cli(capsys, *TRAIN, "--epochs", "1", "--runs", tmp_path, "--name", "m", "--resume", "--tensorboard")
    assert code == 0, err
