"""Resumable result cells: a reproduction or sweep stores each measured cell as a JSON file the
moment it is measured, so a killed run continues where it stopped (``Cells(folder).get(name, fn)``)."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Callable

from ..fileio import atomic_write_json

log = logging.getLogger(__name__)


class Cells:
    """A JSON file per measured cell; ``get(name, fn)`` measures once (``fn() -> dict``) and adds
    the seconds it took."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.=-]", "_", name.replace("+", "plus")) + ".json")

    def get(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.path(name)
        if path.exists():
            return json.loads(path.read_text())
        start = time.perf_counter()
        value = fn()
        value["seconds"] = round(time.perf_counter() - start, 2)
        atomic_write_json(path, value)
        log.info("%s: %s", name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in value.items()
                                  if k in ("epe", "bad3", "seconds", "robust_acc", "clean_acc")})
        return value
