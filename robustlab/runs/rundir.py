"""The run directory: every command leaves a record, written atomically.

``runs/<name>/``: ``config.yaml`` (resolved, with seed, versions and git hash), ``metrics.jsonl``
(appended and flushed), ``summary.json``, ``checkpoints/``, ``figures/``, ``report.html``.

Run names are single path components (``check_name``). A process that writes a run holds its lock
(``with run.lock(): ...``, a ``.lock`` file via ``filelock``); a second writer gets ``RunLockedError``.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import yaml

from ..errors import InputError
from ..fileio import json_default, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text


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


_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]*")


def check_name(name, what: str = "run name") -> str:
    """A run or model name: one path component of letters, digits and ``_ . + = @ -``; no separators,
    no ``..``, not absolute, not hidden. Raises InputError otherwise."""
    if not isinstance(name, str) or not name:
        raise InputError(f"the {what} must be a non-empty string, got {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (from the command line or a folder name)
        raise InputError(f"the {what} {ascii(name)} is not valid UTF-8 text (bytes from another encoding); use "
                         "letters, digits and _ . + = @ -, e.g. 'mnist-pgd'") from None
    if len(name) > 200 or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InputError(
            f"invalid {what} {name!r}: use one folder name made of letters, digits and _ . + = @ - (no '/', "
            "'\\', '..', spaces or leading dot), e.g. 'mnist-pgd'; runs are always written under --runs"
        )
    return name


class RunLockedError(InputError):
    """Another process is writing this run directory."""


class Run:
    """A run directory. ``Run(path)`` creates it (and its subfolders) if needed; ``Run(path, create=False)``
    only reads (``InputError`` if there is no such directory)."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if create:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.figures.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise InputError(f"no run directory at {self.path}; train one with `robustlab train` or check the path")

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's write lock; raises RunLockedError at once if another process holds it."""
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunLockedError(
                f"{self.path} is being written by another robustlab process (lock {self.path / '.lock'} is held); "
                "wait for it to finish, or use another --name / --runs"
            ) from None
        try:
            yield self
        finally:
            lock.release()

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
        """Append one JSON line and flush it to disk (a torn last line left by a kill is cut off first)."""
        line = json.dumps(record, sort_keys=True, default=json_default) + "\n"
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a+b") as f:
            _repair_torn_tail(f)
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in records)
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


def _repair_torn_tail(f) -> None:
    """Truncate an append-mode binary file after its last newline (drops a half-written record)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos, chunk = size, 4096
    cut = 0
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        data = f.read(pos - start)
        i = data.rfind(b"\n")
        if i >= 0:
            cut = start + i + 1
            break
        pos = start
    f.truncate(cut)
    f.seek(0, os.SEEK_END)


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
    return json.loads(json.dumps(obj, default=json_default))
