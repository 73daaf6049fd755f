"""Argument parsers shared by the CLI and the tasks' CLI verbs (tasks never import the CLI)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, TypeVar

from .errors import InputError

T = TypeVar("T")


class ListArgumentError(argparse.ArgumentTypeError, InputError):
    """A malformed comma-separated list: argparse reports it as a bad flag value, and outside
    argparse it is an ``InputError`` (exit code 2 in the CLI)."""


def comma_list(text: str, convert: Callable[[str], T], what: str, example: str, allow_empty: bool = False) -> list[T]:
    """The comma-separated items of ``text`` (spaces around them and empty items dropped), each passed
    through ``convert``; ListArgumentError names ``what`` was expected when one does not
    convert, or when there is none and ``allow_empty`` is false."""
    try:
        values = [convert(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ListArgumentError(f"expected comma-separated {what}, got {text!r}") from None
    if not values and not allow_empty:
        raise ListArgumentError(f"expected at least one of the comma-separated {what}, e.g. {example}")
    return values


def float_list(text: str, allow_empty: bool = False) -> list[float]:
    """'0.1,0.2' -> [0.1, 0.2]; an empty list is an error unless ``allow_empty``."""
    return comma_list(text, float, "numbers", "0.1,0.3", allow_empty)


def int_list(text: str, allow_empty: bool = False) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; an empty list is an error unless ``allow_empty``."""
    return comma_list(text, int, "integers", "0,1,2", allow_empty)


def name_list(text: str, allow_empty: bool = False) -> list[str]:
    """'pgd, square' -> ['pgd', 'square']; an empty list is an error unless ``allow_empty``."""
    return comma_list(text, str, "names", "pgd,square", allow_empty)


def json_object(text: str | None) -> dict:
    """A JSON object flag (``--model-kwargs '{"width": 2}'``): ``{}`` when empty; anything that is not
    one JSON object (malformed, nested too deeply to parse, another JSON type) is an argparse error."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected JSON, e.g. '{{\"width\": 2}}': {e}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("expected a JSON object, got JSON nested too deeply to read") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"width\": 2}}', got a {type(value).__name__}")
    return value


def add_run_args(parser: argparse.ArgumentParser, default_name: str) -> None:
    """The arguments every run-writing verb shares: ``--runs`` (parent folder), ``--name``, ``--seed``."""
    parser.add_argument("--runs", default="runs", help="parent folder of run directories")
    parser.add_argument("--name", default=default_name, help="run directory name")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def check_model_specs(specs, what: str) -> None:
    """A task verb's ``--model`` values (one or a list): ``pretrained`` or a path that exists, checked
    before a run folder is made or a model loads; else one InputError naming `what` may be given."""
    missing = [str(s) for s in ([specs] if isinstance(specs, str) else specs or []) if str(s) != "pretrained"
               and not Path(s).exists()]
    if missing:
        raise InputError(f"--model {', '.join(missing)}: no such file or folder; pass {what}")
