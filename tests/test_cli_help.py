"""What `robustlab <command> --help` tells a user: every flag with a default shows it, the names a flag
takes come from the registries when the parser is built, no internal words; `robustlab list KIND`."""
import argparse
import re

import pytest

from helpers import cli
from robustlab.cli import LISTS, build_parser


def _commands(parser: argparse.ArgumentParser, prog: str = "robustlab"):
    """(prog, parser) of every command and task verb, depth first."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prog} {name}")


COMMANDS = dict(_commands(build_parser()))


def _has_default(action) -> bool:
    d = action.default
    return not (d is None or d is argparse.SUPPRESS or isinstance(d, bool) or (isinstance(d, (list, tuple, dict)) and not d))


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_help_shows_every_default_and_no_internal_words(prog):
    parser = COMMANDS[prog]
    text = parser.format_help()
    for word in ("issue", " cell", "TrainConfig", "robustlab.training", "robustlab.geometry", "SETTINGS"):
        assert word not in text, f"{prog} --help says {word!r}"
    missing = [a.option_strings[0] for a in parser._actions if a.option_strings and _has_default(a)
               and "(default" not in (a.help or "")]
    assert not missing, f"{prog} --help shows no default for {missing}"
    assert all(a.help for a in parser._actions if a.option_strings), f"{prog}: a flag without help"


def test_list_defaults_read_as_typed_and_names_come_from_the_registries():
    from robustlab.attacks import ATTACKS
    from robustlab.training import METHODS

    evaluate = COMMANDS["robustlab evaluate"].format_help()
    assert "(default: 0.0,0.1,0.2,0.3)" in " ".join(evaluate.split())
    flat = {prog: " ".join(p.format_help().split()) for prog, p in COMMANDS.items()}
    assert all(m in flat["robustlab train"] for m in METHODS.names()) and len(METHODS.names()) >= 6
    assert "on_manifold" in flat["robustlab train"].split("--method METHOD")[1]
    assert all(a in flat["robustlab attack"] for a in ATTACKS.names())


def test_a_method_registered_later_shows_in_the_help():
    """The help lists the registry when the parser is built, not when the settings were declared."""
    from robustlab.training import METHODS

    METHODS.register("zz_test_method", lambda *a, **k: None, adversarial=False, objectives="any")
    try:
        assert "zz_test_method" in " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    finally:  # registries have no removal verb: undo the registration by hand
        key = "zz-test-method"
        for table in (METHODS._entries, METHODS._meta, METHODS._names):
            table.pop(key)


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_list_one_kind(capsys, kind):
    code, out, err = cli(capsys, "list", kind)
    assert code == 0, err
    assert re.search(kind[:-1].rstrip("e") if kind != "zoos" else "zoo", out), out
    everything = cli(capsys, "list")[1]
    if kind == "attacks":
        assert "pgd" in out and "square" in out and "suites" in out and "tasks:" not in out
    if kind == "methods":
        assert "trades" in out and "attacks:" not in out
    if kind == "measures":
        assert "hessian" in out and "landscape measures" not in everything
    assert len(out) < len(everything) or kind == "measures"


def test_list_an_unknown_kind_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["list", "atacks"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attacks" in err


def _command_lines(page):
    """The `robustlab ...` lines of a page's shell blocks (continued lines joined, comments dropped)."""
    import shlex

    text = page.read_text().replace("\\\n", " ")
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            if line.startswith("robustlab ") and "..." not in line and "|" not in line.split("#")[0]:  # not a template
                yield shlex.split(line, comments=True)[1:]


def test_docs_command_lines_parse_and_name_runs_that_exist_by_then():
    """Every `robustlab` line of the README and docs parses, and the runs it reads are the demo's
    (runs/quickstart/...) or made by an earlier line of the same page (`--name X`: runs/X)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    parser, problems = build_parser(), []
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        made = {"runs/quickstart"}
        for argv in _command_lines(page):
            if argv[0] == "launch":
                argv = argv[argv.index("--") + 1:]
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                problems.append(f"{page.name}: `robustlab {' '.join(argv)}` does not parse")
                continue
            read = [args.run] if isinstance(getattr(args, "run", None), str) else list(getattr(args, "runs", None) or [])
            for run in (r for r in read if r.startswith("runs/")):
                if not any(run == m or run.startswith(m + "/") for m in made):
                    problems.append(f"{page.name}: {run} is not made first")
            if getattr(args, "name", None):
                made.add(f"runs/{args.name}")
    assert not problems, "\n".join(problems)


def test_a_flag_the_command_does_not_take_points_at_that_commands_help(capsys):
    from robustlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["landscape", "runs/quickstart/models/pgd-at", "--runs", "elsewhere"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "unrecognized arguments: --runs elsewhere" in err and "`robustlab landscape --help`" in err


def test_ocr_and_stereo_verbs_take_the_shared_vocabulary_and_keep_their_flags():
    """The OCR and stereo verbs are declared through runs.taskcli: a query budget is --max-queries, the
    defaults stay, and `stereo evaluate --model` repeats."""
    flat = {prog: " ".join(p.format_help().split()) for prog, p in COMMANDS.items()}
    budget = "--max-queries MAX_QUERIES queries per line (black-box attacks) (default: 1000)"
    assert budget in flat["robustlab ocr attack"]
    assert "(default: 500)" in flat["robustlab ocr reproduce"] and "--budget" not in flat["robustlab ocr attack"]
    assert "(default: 0.005,0.01,0.02)" in flat["robustlab stereo evaluate"]
    assert "--no-adversarial" in flat["robustlab stereo defend"]
    args = build_parser().parse_args(["stereo", "evaluate", "--model", "a", "--model", "b", "--eps", "0.01"])
    assert args.model == ["a", "b"] and args.eps == [0.01] and args.n is None and args.name == "stereo-evaluate"
