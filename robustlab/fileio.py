"""Atomic file writes: write to a temporary file in the same directory, fsync, rename.

A reader (or a resumed run) never sees half a file. The file gets the permissions a plain ``open``
would give it (0666 minus the umask, typically 0644), or keeps those of the file it replaces. The
temporary file is removed on any exception (and on SIGTERM under the CLI, which turns it into
SystemExit); temporaries left by a process killed outright (SIGKILL) are removed by the next write
to the same path once their writer's process is gone.

Inside a run directory no symbolic link is followed: a write under a root given as ``inside=`` (or
under a root made ``confined`` for the current context, as a run being written is) refuses a link
at any component below that root, the file included, with ``LinkRefusedError`` naming the link.
"""
from __future__ import annotations

import contextlib
import contextvars
import glob
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


class LinkRefusedError(InputError):
    """A write inside a run directory met a symbolic link (robustlab never follows one there)."""


#: the roots (absolute paths) within which the current context's writes refuse symbolic links
_CONFINED: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("robustlab_confined", default=())


@contextlib.contextmanager
def confined(root: str | Path) -> Iterator[Path]:
    """Within this block, every atomic write under ``root`` refuses symbolic links below ``root``."""
    root = Path(os.path.abspath(root))
    token = _CONFINED.set(_CONFINED.get() + (root,))
    try:
        yield root
    finally:
        _CONFINED.reset(token)


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_no_links(path: str | Path, root: str | Path) -> Path:
    """``path`` (absolute) if no component of it below ``root``, itself included, is a symbolic link
    and its resolved location stays inside the resolved ``root``; else ``LinkRefusedError``."""
    given = path
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if not _under(path, root):
        raise LinkRefusedError(f"refusing to write {path}: it is outside the run directory {root}")
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise LinkRefusedError(
                f"refusing to write {path}: {current} is a symbolic link (to {os.readlink(current)}) inside the run "
                f"directory {root}; robustlab never follows links there: remove the link or use another --name")
    real_root = root.resolve()
    # realpath of the path as given: a link followed by ".." is resolved as the system will resolve it
    if not _under(Path(os.path.realpath(given)), real_root):
        raise LinkRefusedError(f"refusing to write {path}: it resolves outside the run directory {real_root}")
    return path


def _check_confined(path: Path, inside: str | Path | None) -> None:
    """Refuse links below ``inside`` and below every confined root that holds ``path``."""
    absolute = Path(os.path.abspath(path))
    roots = [Path(os.path.abspath(inside))] if inside is not None else []
    for root in roots + [r for r in _CONFINED.get() if _under(absolute, r)]:
        check_no_links(path, root)  # as given: a ".." after a link must be resolved through the link


def make_dirs(path: str | Path, inside: str | Path | None = None) -> Path:
    """``mkdir -p path``, refusing symbolic links below ``inside`` and any confined root."""
    path = Path(path)
    _check_confined(path, inside)
    path.mkdir(parents=True, exist_ok=True)
    _check_confined(path, inside)
    return path


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


def atomic_write_bytes(path: str | Path, data: bytes, inside: str | Path | None = None) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`. Below
    ``inside`` (a run directory) or a ``confined`` root, a symbolic link is refused, not followed."""
    path = Path(path)
    make_dirs(path.parent, inside)
    _check_confined(path, inside)
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


def atomic_write_text(path: str | Path, text: str, inside: str | Path | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), inside)


def atomic_write_json(path: str | Path, obj: Any, inside: str | Path | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n", inside)


def atomic_torch_save(obj: Any, path: str | Path, inside: str | Path | None = None) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), inside)


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
