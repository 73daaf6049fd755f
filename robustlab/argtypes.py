"""Argument parsers shared by the CLI and the tasks' CLI verbs (tasks never import the CLI)."""
from __future__ import annotations

import argparse
import json


def float_list(text: str) -> list[float]:
    """'0.1,0.2' -> [0.1, 0.2]; an empty list is an error."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number, e.g. 0.1,0.3")
    return values


def json_object(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected JSON, e.g. '{{\"width\": 2}}': {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def add_run_args(parser: argparse.ArgumentParser, default_name: str) -> None:
    """The arguments every run-writing verb shares: ``--runs`` (parent folder), ``--name``, ``--seed``."""
    parser.add_argument("--runs", default="runs", help="parent folder of run directories")
    parser.add_argument("--name", default=default_name, help="run directory name")
    parser.add_argument("--seed", type=int, default=0)
