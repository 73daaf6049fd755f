"""Atomic file writes: write to a temporary file in the same directory, fsync, rename.

A reader (or a resumed run) never sees half a file. The file gets the permissions a plain ``open``
would give it (0666 minus the umask, typically 0644), or keeps those of the file it replaces. The
temporary file is removed on any exception (and on SIGTERM under the CLI, which turns it into
SystemExit); temporaries left by a process killed outright (SIGKILL) are removed by the next write
to the same path once their writer's process is gone.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask: read from /proc where it can be (setting it to read it back is not
    thread-safe: another thread's file created in between would get the placeholder mask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode a new file would get from open() (0666 & ~umask), or the mode of the file replaced."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> int:
    """Remove temporaries of `path` left by writers that were killed (their process is gone)."""
    path = Path(path)
    removed = 0
    try:
        entries = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return 0
    for tmp in entries:
        m = _TMP_RE.fullmatch(tmp.name[len(path.name) + 2:])
        if m and not _pid_alive(int(m.group(1))):
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed


_TMP_RE = re.compile(r"(\d+)\.[^.]+\.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def json_default(o):
    try:
        import torch

        if isinstance(o, torch.Tensor):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
