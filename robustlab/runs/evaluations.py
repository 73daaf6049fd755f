"""Where a model run's evaluations live: one folder per set of settings, so no evaluation replaces another.

``RUN/evaluations/<slug>-<hash>/`` holds one evaluation (``robustlab evaluate RUN`` or a job's)::

    key.json         the key (written first): the settings that change the numbers and the weights
    evaluation.json  the record (written last, atomically: its presence means the evaluation is complete)
    examples.pt      the adversarial examples of the largest eps
    cells/           resume cells while it runs (removed once the record is written)

The **key** (``evaluation_key``) is the suite or attack list, norm, eps list (sorted), n as asked, batch
size (attacks draw their random starts per batch), seed, the weights (``best``/``last`` of a trained
run, or ``zoo``) with the SHA-256 of the weights file(s), and a digest of the run config's model and data. ``<slug>`` is readable
(``standard-linf-eps0-0.3x4-n500-best``), ``<hash>`` the first 10 hex digits of the key's SHA-256.

Rules (``plan``):

- Same key again: a complete evaluation is reused (one log line, nothing recomputed); an incomplete one
  continues from its cells (each cell also checks the model's weights and points, ``evaluation.suite``).
- Other settings or other weights: another key, so another folder beside the others.
- A clash: the key's folder holds files of another key (``key.json`` or the record's key differ, e.g. a
  folder copied from another run or left by other weights) or files without a key. It is never written
  over silently: one ``InputError`` says what is there and to pass ``--overwrite``.
- ``--overwrite`` (``EvaluationSettings.overwrite``) removes the key's folder and evaluates afresh.

Readers: ``list_evaluations`` (every complete one, oldest first), ``default_evaluation`` (the one a
report shows) and ``chosen_evaluation`` (the one matching given settings, else the default: a job's
report, leaderboard and a sweep's rows use their own settings). The default is the most thorough: a suite other than ``fast`` first, then the most eps values, the most points, and
the latest written. A run made before this layout has ``RUN/evaluation.json`` and ``RUN/examples.pt``; it
is read as one more (legacy) evaluation and never written to.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError
from ..fileio import atomic_write_json, make_dirs

log = logging.getLogger(__name__)

FOLDER = "evaluations"
RECORD, EXAMPLES, KEY, CELLS = "evaluation.json", "examples.pt", "key.json", "cells"
#: the settings fields that change the numbers (``overwrite`` does not)
SETTINGS_FIELDS = ("attacks", "norm", "eps", "n", "batch_size", "seed")


def _attacks(value: Any) -> str | list[str]:
    """A suite name as is; an attack list (a list or comma-separated string) as a list of names."""
    from ..evaluation.suite import SUITES

    if isinstance(value, str):
        return value if value in SUITES else [a.strip() for a in value.split(",") if a.strip()]
    return [str(a) for a in value]


def settings_key(settings: Any) -> dict:
    """The part of an evaluation's key set by its settings (``EvaluationSettings`` or its dict)."""
    from .schema import EvaluationSettings

    given = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    s = {k: given.get(k, EvaluationSettings.model_fields[k].default) for k in SETTINGS_FIELDS}
    return {"attacks": _attacks(s["attacks"]), "norm": s["norm"], "eps": sorted(float(e) for e in s["eps"]),
            "n": int(s["n"]), "batch_size": int(s["batch_size"]), "seed": int(s["seed"])}


def evaluation_key(settings: Any, weights: str, sha256: Optional[str], run_config: Optional[dict] = None) -> dict:
    """An evaluation's key: ``settings_key``, the weights (``best``, ``last`` or ``zoo``) with their SHA-256,
    and a digest of the run config's model and data (the architecture and the test points)."""
    model_data = {k: (run_config or {}).get(k) for k in ("model", "data")}
    digest = hashlib.sha256(json.dumps(model_data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {**settings_key(settings), "weights": weights, "weights_sha256": sha256, "model_data_sha256": digest}


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def slug(key: dict) -> str:
    """A readable folder name for `key`: suite, norm, eps, n, weights, then its hash."""
    attacks = key["attacks"] if isinstance(key["attacks"], str) else "+".join(key["attacks"])
    eps = key["eps"]
    eps_text = f"{eps[0]:g}" if len(eps) == 1 else f"{eps[0]:g}-{eps[-1]:g}x{len(eps)}"
    text = f"{attacks[:40]}-{key['norm']}-eps{eps_text}-n{key['n']}-{key['weights']}"
    return "".join(c if c.isalnum() or c in "_.+=@-" else "_" for c in text) + f"-{key_hash(key)}"


def evaluation_dir(run_path: str | Path, key: dict) -> Path:
    """The folder of the evaluation `key` in the model run `run_path`."""
    return Path(run_path) / FOLDER / slug(key)


@dataclass
class StoredEvaluation:
    """One complete evaluation of a run: its folder (the run itself for a legacy one) and its record."""

    folder: Path
    record: dict = field(repr=False)
    legacy: bool = False

    @property
    def record_path(self) -> Path:
        return self.folder / RECORD

    @property
    def examples_path(self) -> Path:
        return self.folder / EXAMPLES

    @property
    def name(self) -> str:
        return "evaluation.json (legacy)" if self.legacy else self.folder.name

    def settings_key(self) -> dict:
        """The settings part of its key (from the record's key, or a legacy record's settings)."""
        key = self.record.get("key")
        if isinstance(key, dict):
            return {k: key.get(k) for k in SETTINGS_FIELDS}
        settings = self.record.get("settings")
        try:
            return settings_key(settings if isinstance(settings, dict) else self.record)
        except (TypeError, ValueError, AttributeError):
            return {}

    def label(self) -> str:
        """Suite and n, as every number of it is labelled: ``standard suite, n=500`` (the report's words)."""
        from .report_summary import suite_label

        return suite_label(self.record)


def _read_record(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is corrupt or not a file robustlab wrote ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''}); rewrite it with `robustlab evaluate "
                         "--overwrite`, or remove it") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} is corrupt or not a file robustlab wrote (expected a mapping at the top level, "
                         f"got {type(value).__name__}); rewrite it with `robustlab evaluate --overwrite`, or remove it")
    return value


def list_evaluations(run_path: str | Path) -> list[StoredEvaluation]:
    """Every complete evaluation of a model run (a legacy ``RUN/evaluation.json`` included), oldest first."""
    run_path = Path(run_path)
    found = [run_path / RECORD] if (run_path / RECORD).is_file() else []
    if (run_path / FOLDER).is_dir():
        found += [d / RECORD for d in sorted((run_path / FOLDER).iterdir()) if (d / RECORD).is_file()]
    found.sort(key=lambda p: p.stat().st_mtime_ns)
    return [StoredEvaluation(p.parent, _read_record(p), legacy=p.parent == run_path) for p in found]


def _thoroughness(ev: StoredEvaluation) -> tuple:
    """The default's order: not the ``fast`` suite, then more eps values, then more points (then the latest)."""
    key = ev.settings_key()
    eps, n = key.get("eps"), ev.record.get("n", key.get("n"))
    return (key.get("attacks") != "fast", len(eps) if isinstance(eps, list) else 0, n if isinstance(n, int) else 0)


def default_evaluation(run_path: str | Path) -> Optional[StoredEvaluation]:
    """The evaluation a report shows for a run (None if it has none): the most thorough (``_thoroughness``),
    the latest written among equals."""
    stored = list_evaluations(run_path)
    return max(reversed(stored), key=_thoroughness) if stored else None


def chosen_evaluation(run_path: str | Path, settings: Any = None) -> Optional[StoredEvaluation]:
    """The latest evaluation made with `settings` (e.g. a job's ``evaluation:``, any weights); without
    `settings`, or when none matches, ``default_evaluation``."""
    if settings is not None:
        want = settings_key(settings)
        matching = [ev for ev in list_evaluations(run_path) if ev.settings_key() == want]
        if matching:
            return matching[-1]
    return default_evaluation(run_path)


def others(run_path: str | Path, shown: Optional[StoredEvaluation]) -> list[StoredEvaluation]:
    """The run's complete evaluations other than `shown`, oldest first."""
    return [ev for ev in list_evaluations(run_path) if shown is None or ev.folder != shown.folder]


def plan(run_path: str | Path, key: dict, overwrite: bool) -> tuple[str, Path, Optional[dict]]:
    """What an evaluation with `key` does in the run `run_path` (see the module's rules):
    ``("reuse", folder, record)``, or ``("compute", folder, None)`` with ``key.json`` written and the
    folder ready for cells (a clash raises InputError unless ``overwrite``, which empties the folder)."""
    folder = evaluation_dir(run_path, key)
    stored_key = _stored_key(folder)
    record = _read_record(folder / RECORD) if (folder / RECORD).is_file() else None
    occupied = folder.is_dir() and any(folder.iterdir())
    clash = occupied and (stored_key != key or (record is not None and record.get("key") != key))
    if occupied and overwrite:
        log.info("%s: --overwrite: removing the stored evaluation and evaluating afresh", folder)
        shutil.rmtree(folder)
    elif clash:
        raise InputError(f"{folder} holds an evaluation that is not the one asked for (its key.json or "
                         f"{RECORD} names other settings or weights, or none); pass --overwrite to replace it, "
                         "or move that folder away")
    elif record is not None:
        log.info("%s: an evaluation with these settings and weights is complete; reusing it, nothing recomputed "
                 "(--overwrite recomputes it)", folder)
        return "reuse", folder, record
    elif (folder / CELLS).is_dir():
        log.info("%s: continuing this evaluation from its stored cells", folder)
    make_dirs(folder / CELLS, inside=Path(run_path))
    atomic_write_json(folder / KEY, key)
    return "compute", folder, None


def _stored_key(folder: Path) -> Optional[dict]:
    """The key a folder's ``key.json`` records (None without one, or when it is not a readable mapping)."""
    try:
        value = json.loads((folder / KEY).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
