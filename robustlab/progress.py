"""Progress that a user sees wherever the output goes: tqdm on a terminal, and elsewhere (``| tee``, CI, nohup,
a cluster job's log) a heartbeat log line at most every ``HEARTBEAT_S`` seconds, from a background timer so
that it also comes inside one long step (an attack of several minutes):

    evaluate linf eps=0.3: 200/500 pt (40%), square on 312 points, elapsed 1m35s, ETA 2m23s

    bar = progress_bar(total=n, desc="evaluate", unit="pt", disable=not progress)
    bar.update(k); bar.set_postfix_str("square on 312 points"); bar.close()

Only rank 0 of a distributed job speaks. ``disable=True`` shows nothing; ``None`` or ``False`` choose by the
stream (tqdm's own ``None`` meant "off on a non-terminal", which left logged runs silent for minutes).

Live curves where researchers look: with ``tensorboard=True`` (``TensorBoardSettings``; the ``tensorboard``
extra) training writes every epoch's numbers and an evaluation its per-eps results as TensorBoard scalars
into the run folder (``RUN/tensorboard/``), so ``tensorboard --logdir runs`` follows the runs live.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch.distributed as dist
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from .errors import InputError
from .settings import StrictSettings

log = logging.getLogger("robustlab")

#: seconds between two heartbeat lines of one bar on a non-terminal
HEARTBEAT_S = 30.0


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool | None = None, heartbeat_s: float | None = None, **tqdm_options: Any):
    """A tqdm bar on a terminal, a ``Heartbeat`` elsewhere, nothing with ``disable=True`` or off rank 0."""
    if disable is True or not _rank0():
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_options)
    return Heartbeat(iterable, total, desc, unit, HEARTBEAT_S if heartbeat_s is None else heartbeat_s,
                     initial=int(tqdm_options.get("initial", 0)))


def _rank0() -> bool:
    """Whether this process speaks: rank 0 of a distributed job, or the only process."""
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def postfix_due(bar, step: int, every: int = 20) -> bool:
    """Whether a loop should read its running numbers now (a host read on an accelerator) to show them on
    `bar`: every `every` steps for a live tqdm bar, at most once per half heartbeat interval for a
    ``Heartbeat`` (so a line carries numbers at most 15 s old for one read per 15 s), never for a bar
    that shows nothing."""
    if isinstance(bar, Heartbeat):
        return bar.postfix_due()
    return not bar.disable and step % every == 0


def _beat(ref: weakref.ref, closed: threading.Event, interval: float) -> None:
    """The timer of one heartbeat: every `interval` seconds, while it is open and alive, a line if it is the
    innermost open bar (holding only a weak reference, so a bar dropped without ``close`` ends its timer)."""
    while not closed.wait(interval):
        bar = ref()
        if bar is None:
            return
        bars = Heartbeat.open_bars()
        if bars and bars[-1] is bar:
            log.info("%s", " | ".join(b.line() for b in bars))
        del bar


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class _InnerWork:
    """The steps of the attack running now (host-side counts, no device read): ``attack_steps`` opens one (they
    nest: an attack that calls another), ``step`` counts, ``plan`` adds the steps it means to run. The
    innermost heartbeat line shows the innermost one: ``square step 340 of 999``."""

    def __init__(self):
        self.stack: list[list] = []  # [what, done, planned]

    def line(self) -> str:
        if not self.stack:
            return ""
        what, done, planned = self.stack[-1]
        return f", {what} step {done:,}" + (f" of {planned:,}" if planned else "")


_INNER = _InnerWork()


class attack_steps:
    """``with attack_steps("square"):`` around one attack call; ``attack_steps.step()`` once per step and
    ``attack_steps.plan(n)`` when a run of n steps starts (both free: host integers)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> "attack_steps":
        _INNER.stack.append([self.what, 0, 0])
        return self

    def __exit__(self, *exc) -> None:
        if _INNER.stack:
            _INNER.stack.pop()

    @staticmethod
    def step(k: int = 1) -> None:
        if _INNER.stack:
            _INNER.stack[-1][1] += k

    @staticmethod
    def plan(n: int) -> None:
        if _INNER.stack:
            _INNER.stack[-1][2] += int(n)


class Heartbeat:
    """The part of tqdm's interface the loops use (iteration, ``update``, ``set_postfix``, ``set_postfix_str``,
    ``close``, a context manager); it logs one line at most every ``interval`` seconds while open: what, done of
    total, the postfix, elapsed and the remaining time at the rate so far. ``disable`` is True: there is no
    live display, so a loop skips work done only to show one (e.g. reading a loss every few steps).

    Bars nest (a curve over eps, its evaluation over points, the cascade of attacks on a batch): only the
    innermost open one speaks, and its line carries the outer ones' (``outer | inner``)."""

    disable = True
    _open: list[weakref.ref] = []   # the open heartbeats, outermost first (weak: a bar dropped unclosed goes)
    _lock = threading.Lock()

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, interval: float,
                 initial: int = 0):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.start = initial, "", time.monotonic()
        self._first = initial
        self._postfix_at = float("-inf")  # when a loop last refreshed the postfix through ``postfix_due``
        self._closed = threading.Event()
        with Heartbeat._lock:
            Heartbeat._open.append(weakref.ref(self))
        threading.Thread(target=_beat, args=(weakref.ref(self), self._closed, interval), name="robustlab-heartbeat",
                         daemon=True).start()

    @staticmethod
    def open_bars() -> list["Heartbeat"]:
        """The open heartbeats, outermost first (those dropped without ``close`` are forgotten)."""
        with Heartbeat._lock:
            Heartbeat._open[:] = [r for r in Heartbeat._open if r() is not None and not r()._closed.is_set()]
            return [r() for r in Heartbeat._open]

    def line(self) -> str:
        """The heartbeat line now."""
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            done += f" ({self.n / self.total:.0%})"
        rate_n = self.n - self._first  # done since this bar opened (a resumed cascade starts past its first attacks)
        eta = f", ETA {_duration(elapsed * (self.total - self.n) / rate_n)}" if self.total and rate_n > 0 else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        inner = _INNER.line() if Heartbeat.open_bars()[-1:] == [self] else ""  # the innermost bar shows the attack's steps
        return f"{self.desc}: {done}{postfix}{inner}, elapsed {_duration(elapsed)}{eta}"

    def postfix_due(self) -> bool:
        """True at most once per half interval (the first call included): time for the loop to refresh the
        postfix it shows. Reading the clock costs no device read."""
        now = time.monotonic()
        if now - self._postfix_at < self.interval / 2:
            return False
        self._postfix_at = now
        return True

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> "Heartbeat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# ----- TensorBoard: live curves in the run folder -------------------------------------------------------
#: the folder of a run that holds its TensorBoard event files
TENSORBOARD_DIR = "tensorboard"
_INSTALL = "pip install 'robustlab[tensorboard]' (or pip install tensorboard)"


class TensorBoardSettings(StrictSettings):
    """Whether a command also writes its curves as TensorBoard scalars into its run folder (``--tensorboard``;
    a job's ``train: {tensorboard: true}``). Off by default; needs the ``tensorboard`` package."""

    settings_name: ClassVar[str] = "the TensorBoard setting"

    tensorboard: bool = Field(False, description="also write per-epoch training metrics and per-eps evaluation "
                                                 "results as TensorBoard scalars into RUN/tensorboard/ (watch them "
                                                 "with `tensorboard --logdir runs`; needs the tensorboard extra)")

    @field_validator("tensorboard")
    @classmethod
    def _installed(cls, v: bool) -> bool:
        if v and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(f"the tensorboard package is not installed: {_INSTALL}")
        return v


def tensorboard_writer(log_dir: str | Path):
    """A ``torch.utils.tensorboard.SummaryWriter`` into `log_dir` on rank 0 (None on the other ranks); one-line
    InputError without the package."""
    if not _rank0():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError(f"--tensorboard: the tensorboard package is not installed: {_INSTALL}") from None
    return SummaryWriter(log_dir=str(log_dir))


def write_scalars(writer, prefix: str, values: dict, step: int) -> None:
    """Every finite number of `values` (not flags) as the scalar ``prefix/key`` at `step`, flushed at once (a
    live reader sees it)."""
    for key, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            writer.add_scalar(f"{prefix}/{key}", v, global_step=step)
    writer.flush()


def eps_step(eps: float) -> int:
    """An eps as a TensorBoard step (steps are integers): eps x 1000, rounded (0.1 -> 100, 8/255 -> 31)."""
    return int(round(float(eps) * 1000))


def write_evaluation_scalars(log_dir: str | Path, evaluation: dict) -> Path | None:
    """An evaluation's results (its dict: ``attacks``, ``n`` and the per-eps ``reports``) as scalars over eps
    (the step is ``eps_step``: eps x 1000) into ``log_dir/evaluation-<suite>-n<n>``: clean and robust
    accuracy, and the points each attack broke first (``broken_by/<attack>``). Returns the folder (None off
    rank 0)."""
    attacks = evaluation.get("attacks")
    suite = attacks if isinstance(attacks, str) else "+".join(map(str, attacks or []))
    folder = Path(log_dir) / f"evaluation-{suite}-n{evaluation.get('n', '')}"
    writer = tensorboard_writer(folder)
    if writer is None:
        return None
    with writer:
        for r in evaluation["reports"]:
            numbers = {"clean_accuracy": r["clean_accuracy"], "robust_accuracy": r["robust_accuracy"],
                       **{f"broken_by/{k}": v for k, v in (r.get("per_attack") or {}).items()}}
            write_scalars(writer, "evaluation", numbers, eps_step(r["eps"]))
    return folder
