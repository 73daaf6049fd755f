"""`robustlab poison <verb>`: craft a poisoned-data run, evaluate a model against it, detect poisons,
reproduce the papers' numbers. Each verb is a module of ``VERBS`` with ``add_parser(subparsers) -> parser``
and ``main(args) -> int``; a verb whose module is absent is left out."""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

__all__ = ["VERBS", "add_cli", "run_cli"]

VERBS = {"craft": "robustlab.experiments.poisoning.craft", "evaluate": "robustlab.experiments.poisoning.evaluate",
         "detect": "robustlab.experiments.poisoning.detect", "reproduce": "robustlab.experiments.poisoning.reproduce"}


def add_cli(subparsers) -> None:
    """Add ``robustlab poison`` and its verbs to the top-level subparsers."""
    p = subparsers.add_parser("poison", help="training-data poisoning: craft, evaluate, detect, reproduce",
                              description="Poisoning and backdoors (docs/poisoning.md).")
    verbs = p.add_subparsers(dest="poison_verb", required=True)
    for verb, module in VERBS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            if e.name != module:  # the module exists but something it needs does not: say so
                log.debug("robustlab poison %s unavailable: %s", verb, e)
            continue
        mod.add_parser(verbs).set_defaults(poison_main=mod.main)


def run_cli(args) -> int:
    """Run the chosen verb."""
    return args.poison_main(args)
