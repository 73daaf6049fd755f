"""Resumable result cells: each measured cell is written as a file the moment it is measured, so a
killed run continues where it stopped.

Two payloads, one class: JSON dicts (reproductions and sweeps: ``Cells(folder).get(name, fn)``
measures once and records the seconds it took) and torch state dicts (a resumable evaluation's
per-(eps, batch) state: ``Cells(folder, fingerprint, payload="torch")`` with ``load``/``save``;
read back with ``weights_only=True``). With a ``fingerprint`` (what a cell depends on: the folder's,
or one per cell given to ``load``/``save``) a cell written for another fingerprint reads as missing and
is measured again, with one log line naming what differs (a dict fingerprint names its keys: e.g.
"computed for other weights")."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .fileio import atomic_torch_save, atomic_write_json

log = logging.getLogger(__name__)

_SUFFIX = {"json": ".json", "torch": ".pt"}


class Cells:
    """A file per measured cell in ``folder``: ``payload`` "json" (``name.json``) or "torch"
    (``name.pt``). ``fingerprint``: stored in every cell and compared on load (None: not checked)."""

    def __init__(self, folder: str | Path, fingerprint: Any = None, *, payload: str = "json"):
        if payload not in _SUFFIX:
            raise ValueError(f"payload must be one of {sorted(_SUFFIX)}, got {payload!r}")
        self.folder, self.fingerprint, self.payload = Path(folder), fingerprint, payload
        self.folder.mkdir(parents=True, exist_ok=True)
        self._said: set[str] = set()  # the kinds of mismatch already logged (each one line, once)

    def path(self, name: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.=-]", "_", name.replace("+", "plus")) + _SUFFIX[self.payload])

    def load(self, name: str, fingerprint: Any = None) -> dict | None:
        """The cell's payload, or None when it is missing, unreadable or written for another fingerprint
        (``fingerprint``: this cell's, default the folder's)."""
        fingerprint = self.fingerprint if fingerprint is None else fingerprint
        path = self.path(name)
        if not path.exists():
            return None
        try:
            value = (json.loads(path.read_text()) if self.payload == "json"
                     else torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # a cell cut short by a kill before the atomic rename cannot exist; be safe anyway
            log.warning("ignoring unreadable cell %s (%s)", path, e)
            return None
        if fingerprint is not None and value.get("fingerprint") != fingerprint:
            self._say_mismatch(path, value.get("fingerprint"), fingerprint)
            return None
        return value

    def _say_mismatch(self, path: Path, stored: Any, expected: Any) -> None:
        """One log line: what the cell was computed for instead; later cells of the same kind say it at debug level."""
        if isinstance(expected, dict) and isinstance(stored, dict) and stored.keys() == expected.keys():
            why = "computed for other " + " and ".join(k for k in expected if stored[k] != expected[k])
        elif isinstance(expected, dict):
            why = "written by an older version (its fingerprint names no " + "/".join(expected) + ")"
        else:
            why = "computed for other settings"
        level = logging.DEBUG if why in self._said else logging.WARNING
        self._said.add(why)
        log.log(level, "cell %s in %s: %s; recomputing it%s", path.name, path.parent, why,
                "" if level == logging.DEBUG else " (and any further such cell)")

    def save(self, name: str, value: dict, fingerprint: Any = None) -> None:
        """Write the cell atomically, with its fingerprint (``fingerprint``, default the folder's) if any."""
        fingerprint = self.fingerprint if fingerprint is None else fingerprint
        if fingerprint is not None:
            value = {"fingerprint": fingerprint, **value}
        if self.payload == "json":
            atomic_write_json(self.path(name), value)
        else:
            atomic_torch_save(value, self.path(name))

    def get(self, name: str, fn: Callable[[], dict]) -> dict:
        """The cell's payload; measured by ``fn() -> dict`` (plus the seconds it took) when missing."""
        value = self.load(name)
        if value is not None:
            return value
        start = time.perf_counter()
        value = fn()
        value["seconds"] = round(time.perf_counter() - start, 2)
        self.save(name, value)
        log.info("%s: %s", name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in value.items()
                                  if k in ("epe", "bad3", "seconds", "robust_acc", "clean_acc")})
        return value
