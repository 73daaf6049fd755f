"""The run directory: every command leaves a record, written atomically.

``runs/<name>/``: ``config.yaml`` (resolved, with seed, versions and git hash), ``metrics.jsonl``
(appended and flushed), ``summary.json``, ``checkpoints/``, ``figures/``, ``report.html``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import yaml

from ..fileio import _json_default, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    import numpy
    import torch

    from .. import __version__

    return {
        "robustlab": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
        "python": platform.python_version(), "platform": platform.platform(), "git": git_hash(),
        "threads": torch.get_num_threads(),
    }


class Run:
    """A run directory. ``Run(path)`` creates it (and its subfolders) if needed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, config: dict) -> None:
        full = dict(config)
        full["environment"] = environment_info()
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(_plain(full), sort_keys=False))

    def read_config(self) -> dict:
        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.exists() else {}

    def log_metrics(self, record: dict) -> None:
        """Append one JSON line and flush it to disk."""
        line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records)
        atomic_write_text(self.metrics_path, text)

    def read_metrics(self) -> list[dict]:
        """All complete metric records (a line cut short by a kill is skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else {}


def _plain(obj):
    """Convert to YAML-safe builtin types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (int, float, bool)) or obj is None:
        return obj
    return json.loads(json.dumps(obj, default=_json_default))
