"""The run directory: every command leaves a record, written atomically.

``runs/<name>/``: ``config.yaml`` (resolved, with seed, versions and git hash), ``metrics.jsonl``
(appended and flushed), ``summary.json``, ``checkpoints/``, ``figures/``, ``report.html``.

Every command writes a run through one path, ``with Run.writing(runs, name, kind) as run: ...``: it checks
the name (a single path component, ``check_name``), refuses a run of another kind (an attack written
into a model run), holds the run's lock (a ``.lock`` file via ``filelock``; a second writer gets
``RunLockedError``) and makes every write inside the run refuse symbolic links (``fileio.confined``):
a linked ``metrics.jsonl`` or ``checkpoints/`` is an error naming the link, never followed.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Iterator

import yaml

from ..errors import InputError
from ..fileio import (atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text,
                      LinkRefusedError, check_no_links, confined, json_default, make_dirs)


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


def split_run_dir(run_dir: str | Path) -> tuple[Path, str]:
    """(the runs folder, the run name) of a run directory path."""
    run_dir = Path(run_dir)
    return run_dir.parent, run_dir.name


class RunLockedError(InputError):
    """Another process is writing this run directory."""


class Run:
    """A run directory. ``Run(path)`` creates it (and its subfolders) if needed; ``Run(path, create=False)``
    only reads (``InputError`` if there is no such directory). Commands write runs with ``Run.writing``."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if create:
            make_dirs(self.checkpoints, inside=self.path)
            make_dirs(self.figures, inside=self.path)
        elif not self.path.is_dir():
            raise InputError(f"no run directory at {self.path}; train one with `robustlab train` or check the path")

    @classmethod
    @contextlib.contextmanager
    def writing(cls, root: str | Path, name: str, kind: str | None, *, create: bool = True, lock: bool = True,
                what: str = "run name") -> Iterator["Run"]:
        """The one way a command writes the run ``root/name``: validate the name (``check_name``),
        refuse a run of another ``kind`` (None: any), hold its lock (``lock=False``: a DDP worker,
        whose rank 0 holds it) and refuse symbolic links for every write inside it. ``create=False``:
        the run must exist. A run directory path splits with ``Run.writing(*split_run_dir(path), kind)``."""
        path = Path(root) / check_name(name, what)
        if path.is_symlink():
            raise LinkRefusedError(f"refusing to write the run {path}: it is a symbolic link (to {os.readlink(path)}); "
                                   "robustlab never writes a run through a link: remove it or use another --name")
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file, not a run directory; use another --name")
        if not create and not path.is_dir():
            raise InputError(f"no run directory at {path}; train one with `robustlab train` or check the path")
        path.mkdir(parents=True, exist_ok=True)
        with _locked(path) if lock else contextlib.nullcontext(), confined(path):
            _refuse_links_in(path)
            _check_kind(path, kind)
            yield cls(path, create=create)

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's write lock; raises RunLockedError at once if another process holds it."""
        with _locked(self.path):
            yield self

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
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(_plain(full), sort_keys=False), inside=self.path)

    def read_config(self) -> dict:
        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.exists() else {}

    def log_metrics(self, record: dict) -> None:
        """Append one JSON line and flush it to disk (a torn last line left by a kill is cut off first)."""
        line = json.dumps(record, sort_keys=True, default=json_default) + "\n"
        make_dirs(self.path)
        check_no_links(self.metrics_path, self.path)
        try:  # O_NOFOLLOW: a link swapped in after the check is refused too
            fd = os.open(self.metrics_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        except OSError:
            check_no_links(self.metrics_path, self.path)  # names the link if that is why
            raise
        with os.fdopen(fd, "a+b") as f:
            _repair_torn_tail(f)
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in records)
        atomic_write_text(self.metrics_path, text, inside=self.path)

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
        atomic_write_json(self.path / "summary.json", summary, inside=self.path)

    def read_summary(self) -> dict:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock of the run at `path` (created if needed); RunLockedError at once if another process holds it."""
    from filelock import FileLock, Timeout

    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"{path} is being written by another robustlab process (lock {path / '.lock'} is held); "
            "wait for it to finish, or use another --name / --runs"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _refuse_links_in(path: Path) -> None:
    """Refuse a run directory holding a symbolic link (before any work; deeper links are refused
    when written to)."""
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink():
            check_no_links(entry.path, path)


def _check_kind(path: Path, kind: str | None) -> None:
    """InputError if the run at `path` records another kind (writing would overwrite its record)."""
    config = path / "config.yaml"
    if kind is None or not config.is_file():
        return
    try:
        stored = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("kind")
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return  # not a record this check can read; the command reading it reports that
    if stored is not None and stored != kind:
        raise InputError(f"{path} is a {stored} run, not a {kind} run: writing it would overwrite its record; "
                         "choose another --name (or --runs)")


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
