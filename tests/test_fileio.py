"""Files written atomically (runs, weights, cells) get the permissions a plain open() gives: 0666 & ~umask."""
import os
import stat

import pytest
import torch.nn as nn

from robustlab.fileio import atomic_torch_save, atomic_write_bytes, atomic_write_json
from robustlab.runs.rundir import Run
from robustlab.training.checkpoints import save_weights


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o027, 0o002, 0o077])
def test_run_files_and_weights_get_the_mode_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain", "w"):
        pass
    expected = 0o666 & ~mask
    assert _mode(tmp_path / "plain") == expected
    run = Run(tmp_path / "run")
    with run.lock():
        run.write_config({"kind": "model"})
        run.write_summary({"robust_accuracy": 0.5})
        run.log_metrics({"epoch": 1})
        save_weights(nn.Linear(2, 2), run.checkpoints / "final.safetensors")
        atomic_torch_save({"epoch": 1}, run.checkpoints / "state.pt")
    written = [run.path / "config.yaml", run.path / "summary.json", run.metrics_path,
               run.checkpoints / "final.safetensors", run.checkpoints / "state.pt"]
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "report.json"
    atomic_write_json(path, {"a": 1})
    os.chmod(path, 0o640)  # the user narrowed it on purpose
    atomic_write_json(path, {"a": 2})
    assert _mode(path) == 0o640 and path.read_text().strip().endswith("}")


def test_links_are_refused_only_inside_a_confined_root(tmp_path):
    from robustlab.fileio import LinkRefusedError, confined

    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    atomic_write_json(tmp_path / "linked" / "a.json", {"a": 1})  # outside any run: a link is a path like any other
    assert (tmp_path / "real" / "a.json").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sub").symlink_to(tmp_path / "real", target_is_directory=True)
    with confined(tmp_path / "linked"):  # the root itself may be reached through a link
        atomic_write_json(tmp_path / "linked" / "b.json", {"b": 1})
    with confined(tmp_path / "run"), pytest.raises(LinkRefusedError, match="sub is a symbolic link"):
        atomic_torch_save({"x": 1}, tmp_path / "run" / "sub" / "state.pt")
    with pytest.raises(LinkRefusedError, match="sub is a symbolic link"):
        atomic_write_bytes(tmp_path / "run" / "sub" / "x.bin", b"x", inside=tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["a.json", "b.json"]
