"""The task command line helper (robustlab.runs.taskcli): flags, checks and the run from one declaration."""
from __future__ import annotations

import argparse
from typing import Literal

import pytest
import yaml
from pydantic import Field

from robustlab.errors import InputError
from robustlab.runs.schema import DeviceSettings
from robustlab.runs.taskcli import TaskCommand, Verb
from robustlab.settings import StrictSettings


class ToyAttackSettings(StrictSettings):
    eps: float = Field(0.1, gt=0, description="radius")
    steps: int = Field(10, ge=1, description="attack steps")
    goal: Literal["vanish", "move"] = Field("vanish", description="what the attack wants")


seen = []


def _record(args) -> int:
    seen.append(args)
    if args.run is not None:
        (args.run.path / "out.txt").write_text(f"{args.eps} {args.steps}")
    return 0


TOY = TaskCommand("toy", "a toy task", "A toy task's verbs.", (
    Verb("attack", "attack it (95% of the points)", _record, (ToyAttackSettings, DeviceSettings), kind="toy-attack", defaults={"steps": 5}),
    Verb("reproduce", "the table", _record, (ToyAttackSettings,)),
))


def _parse(argv):
    parser = argparse.ArgumentParser()
    TOY.add_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_flags_defaults_and_run(tmp_path):
    seen.clear()
    args = _parse(["toy", "attack", "--runs", str(tmp_path), "--eps", "0.3", "--device", "cpu"])
    assert TOY.run_cli(args) == 0
    got = seen[-1]
    assert (got.eps, got.steps, got.goal, got.name, str(got.device)) == (0.3, 5, "vanish", "toy-attack", "cpu")
    config = yaml.safe_load((tmp_path / "toy-attack" / "config.yaml").read_text())
    assert config["kind"] == "toy-attack" and config["task"] == "toy" and config["eps"] == 0.3
    assert config["steps"] == 5 and config["device"] == "cpu" and config["seed"] == 0
    assert (tmp_path / "toy-attack" / "out.txt").read_text() == "0.3 5"


def test_a_percent_in_a_verb_help_is_text(capsys):
    with pytest.raises(SystemExit):
        _parse(["toy", "--help"])
    assert "attack it (95% of the points)" in capsys.readouterr().out


def test_verb_without_run_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen.clear()
    assert TOY.run_cli(_parse(["toy", "reproduce", "--goal", "move"])) == 0
    assert seen[-1].run is None and seen[-1].goal == "move" and seen[-1].steps == 10
    assert not hasattr(seen[-1], "name") and list(tmp_path.iterdir()) == []


def test_every_problem_in_one_error(tmp_path):
    args = _parse(["toy", "attack", "--runs", str(tmp_path), "--eps", "-1", "--steps", "0"])
    with pytest.raises(InputError) as e:
        TOY.run_cli(args)
    assert "--eps" in str(e.value) and "--steps" in str(e.value)
    assert not (tmp_path / "toy-attack").exists()


def test_refuses_a_run_of_another_kind(tmp_path):
    TOY.run_cli(_parse(["toy", "attack", "--runs", str(tmp_path), "--name", "r"]))
    other = TaskCommand("toy", "", "", (Verb("attack", "", _record, (ToyAttackSettings,), kind="toy-other"),))
    parser = argparse.ArgumentParser()
    other.add_cli(parser.add_subparsers(dest="command"))
    with pytest.raises(InputError):
        other.run_cli(parser.parse_args(["toy", "attack", "--runs", str(tmp_path), "--name", "r"]))


class RepeatSettings(StrictSettings):
    model: list[str] | None = Field(None, description="a model; repeat for several", json_schema_extra={"action": "append"})


def test_a_repeated_flag_collects_its_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen.clear()
    repeat = TaskCommand("rep", "", "", (Verb("show", "", _record, (RepeatSettings,)),))
    parser = argparse.ArgumentParser()
    repeat.add_cli(parser.add_subparsers(dest="command"))
    assert repeat.run_cli(parser.parse_args(["rep", "show", "--model", "a", "--model", "b"])) == 0
    assert seen[-1].model == ["a", "b"]
    assert repeat.run_cli(parser.parse_args(["rep", "show"])) == 0 and seen[-1].model is None


class RenamedSettings(StrictSettings):
    max_queries: int = Field(100, ge=1, description="queries per input", json_schema_extra={"aliases": ["--budget"]})


def test_an_older_flag_spelling_still_works_and_is_not_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen.clear()
    renamed = TaskCommand("ren", "", "", (Verb("show", "", _record, (RenamedSettings,)),))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    renamed.add_cli(sub)
    for argv, expected in ((["--budget", "7"], 7), (["--max-queries", "9"], 9), ([], 100)):
        assert renamed.run_cli(parser.parse_args(["ren", "show", *argv])) == 0 and seen[-1].max_queries == expected
    verb = next(a for a in sub.choices["ren"]._actions if isinstance(a, argparse._SubParsersAction)).choices["show"]
    assert "--max-queries" in verb.format_help() and "--budget" not in verb.format_help()
    with pytest.raises(InputError, match="--max-queries"):
        renamed.run_cli(parser.parse_args(["ren", "show", "--budget", "0"]))


def _fail(args) -> int:
    raise InputError("--model nope: no such file")


def test_a_failed_rerun_leaves_the_config_of_the_results_there(tmp_path):
    TOY.run_cli(_parse(["toy", "attack", "--runs", str(tmp_path), "--name", "r", "--eps", "0.3"]))
    before = (tmp_path / "r" / "config.yaml").read_bytes()
    failing = TaskCommand("toy", "", "", (Verb("attack", "", _fail, (ToyAttackSettings,), kind="toy-attack"),))
    parser = argparse.ArgumentParser()
    failing.add_cli(parser.add_subparsers(dest="command"))
    with pytest.raises(InputError):
        failing.run_cli(parser.parse_args(["toy", "attack", "--runs", str(tmp_path), "--name", "r", "--eps", "0.5"]))
    assert (tmp_path / "r" / "config.yaml").read_bytes() == before
    with pytest.raises(InputError):  # a new run that fails keeps no config.yaml (no settings without results)
        failing.run_cli(parser.parse_args(["toy", "attack", "--runs", str(tmp_path), "--name", "new"]))
    assert not (tmp_path / "new" / "config.yaml").exists()


@pytest.mark.parametrize("argv", [["stereo", "evaluate"], ["detection", "evaluate"], ["ocr", "reproduce"],
                                  ["rl", "evaluate"]])
def test_task_radius_lists_refuse_a_negative_item_before_any_run(tmp_path, monkeypatch, capsys, argv):
    from robustlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--eps=0.1,-1", *(["--runs", str(tmp_path / "runs")] if argv[1] != "reproduce" else [])]) == 2
    assert "eps values must be finite and >= 0" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
