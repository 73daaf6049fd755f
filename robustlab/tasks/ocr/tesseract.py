"""Tesseract 5 as a black-box oracle, through its C API kept open (tesserocr), never one process per
query.

Every query is quantised to uint8 (what the engine sees), hashed and memoised (Tesseract is
deterministic), counted per sample by the shared ``Oracle`` bookkeeping, and read as a single line
(page segmentation mode 7) with ``OMP_THREAD_LIMIT=1``. The answer per line is a ``Reading``: the text
and one confidence (0-100) per recognised symbol. With ``workers > 1`` a pool of processes, each
holding its own open engine, reads the chunks of a batch in parallel.
"""
from __future__ import annotations

import atexit
import glob
import logging
import os
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ...errors import InputError, RobustlabError
from ...oracles import Oracle

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = "tesseract-ocr tesseract-ocr-eng"
BUILD_PACKAGES = "libtesseract-dev libleptonica-dev pkg-config"
MISSING = (
    "Tesseract is not available ({why}). Install the engine and its English model with "
    f"`sudo apt-get install {DEBIAN_PACKAGES}`, and the Python binding with "
    f"`sudo apt-get install {BUILD_PACKAGES}` then `pip install tesserocr` (or `pip install -e '.[ocr]'`; "
    "`make install` does all of this where it may install system packages)."
)

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata", "/opt/homebrew/share/tessdata",
                 "/usr/share/tesseract/tessdata")


class TesseractUnavailable(RobustlabError, RuntimeError):
    """The Tesseract engine, its language data or the tesserocr binding is missing."""


class Reading(NamedTuple):
    """One line as Tesseract reads it: the text and a confidence in [0, 100] per symbol."""

    text: str
    confidences: tuple[float, ...] = ()

    @property
    def confidence(self) -> float:
        """Mean symbol confidence in [0, 1] (0 when nothing was read)."""
        return float(np.mean(self.confidences)) / 100 if self.confidences else 0.0


def find_tessdata(lang: str = "eng") -> str:
    """The folder holding ``<lang>.traineddata``: $TESSDATA_PREFIX, the usual system folders, then a search."""
    cands = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for d in cands:
        if d and os.path.exists(os.path.join(d, f"{lang}.traineddata")):
            return d
    for hit in glob.glob(f"/usr/share/**/{lang}.traineddata", recursive=True):
        return os.path.dirname(hit)
    raise TesseractUnavailable(MISSING.format(why=f"no {lang}.traineddata in {', '.join(TESSDATA_DIRS)} "
                                                  "or $TESSDATA_PREFIX"))


def tesseract_status(lang: str = "eng") -> tuple[bool, str]:
    """(available, reason): whether the binding and the language data can be used."""
    try:
        import tesserocr  # noqa: F401
    except ImportError as e:
        return False, MISSING.format(why=f"the Python binding tesserocr cannot be imported: {e}")
    try:
        find_tessdata(lang)
    except TesseractUnavailable as e:
        return False, str(e)
    return True, "ok"


# ----- engines kept open (in this process or in a worker), one per (tessdata, lang, psm) ----------
_ENGINES: dict = {}


def _open_engine(tessdata: str, lang: str, psm: int):
    os.environ["OMP_THREAD_LIMIT"] = "1"
    import tesserocr

    key = (tessdata, lang, int(psm))
    if key not in _ENGINES:
        _ENGINES[key] = tesserocr.PyTessBaseAPI(path=tessdata, lang=lang, psm=int(psm))
    return _ENGINES[key]


def read_uint8(images: np.ndarray, tessdata: str, lang: str = "eng", psm: int = 7) -> list[tuple[str, tuple]]:
    """Read grey uint8 lines [N, H, W] with the engine open in this process."""
    from PIL import Image
    from tesserocr import RIL, iterate_level

    api = _open_engine(tessdata, lang, psm)
    out = []
    for a in images:
        api.SetImage(Image.fromarray(np.ascontiguousarray(a), mode="L"))
        api.Recognize()
        text = (api.GetUTF8Text() or "").strip()
        confs = []
        it = api.GetIterator()
        if it is not None:
            for sym in iterate_level(it, RIL.SYMBOL):
                confs.append(round(float(sym.Confidence(RIL.SYMBOL)), 2))
        out.append((text, tuple(confs)))
    return out


def _worker_init(tessdata: str, lang: str, psm: int) -> None:
    _open_engine(tessdata, lang, psm)


def _worker_read(args):
    images, tessdata, lang, psm = args
    return read_uint8(images, tessdata, lang, psm)


class TesseractOracle(Oracle):
    """Tesseract as a score oracle: ``oracle(x, ids=...)`` -> list of ``Reading`` (text + symbol
    confidences) for float lines ``[B, 1, H, W]`` in [0, 1]; ``oracle.read(x)`` -> list of strings.

    Args:
        workers: processes reading in parallel (1: the engine runs in this process).
        psm: page segmentation mode (7: one text line).
        budget: the query budget per sample id, as for every ``Oracle``.
        memoize: answer a repeated query from memory, as for every ``Oracle``.
        record: keep every query and answer for replay, as for every ``Oracle``.
    """

    kind = "score"

    def __init__(self, *, workers: int = 1, lang: str = "eng", psm: int = 7, tessdata: str | None = None,
                 budget: int | None = None, memoize: bool = True, record: bool = False, batch_size: int | None = None):
        ok, why = tesseract_status(lang)
        if not ok:
            raise TesseractUnavailable(why)
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self.tessdata = tessdata or find_tessdata(lang)
        self.lang, self.psm, self.workers = lang, int(psm), int(workers)
        self._pool = None
        super().__init__(self._read_batch, budget=budget, batch_size=batch_size, memoize=memoize, record=record,
                         input_dtype="uint8", check_determinism=8)

    # the Oracle base class quantises to uint8 ([B, 1, H, W]) before hashing and calling this
    def _read_batch(self, q: torch.Tensor) -> list[Reading]:
        if q.dim() != 4 or q.shape[1] != 1:
            raise InputError(f"Tesseract reads grey lines [B, 1, H, W], got {tuple(q.shape)}")
        arr = q[:, 0].cpu().numpy()
        if self.workers == 1 or arr.shape[0] == 1:
            rows = read_uint8(arr, self.tessdata, self.lang, self.psm)
        else:
            pool = self._get_pool()
            chunks = [c for c in np.array_split(arr, min(self.workers, arr.shape[0])) if len(c)]
            rows = [r for part in pool.map(_worker_read, [(c, self.tessdata, self.lang, self.psm) for c in chunks])
                    for r in part]
        return [Reading(t, c) for t, c in rows]

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing as mp

            os.environ["OMP_THREAD_LIMIT"] = "1"
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=_worker_init,
                                                      initargs=(self.tessdata, self.lang, self.psm))
            atexit.register(self.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (the in-process engine stays open for reuse)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _split(self, res, n):
        res = list(res)
        if len(res) != n:
            raise InputError(f"Tesseract returned {len(res)} readings for {n} lines")
        return res

    def _collate(self, outputs):
        return list(outputs)

    def readings(self, x: torch.Tensor, ids: Sequence[int] | torch.Tensor | None = None) -> list[Reading]:
        return self(x, ids=ids)

    def read(self, x: torch.Tensor, ids: Sequence[int] | torch.Tensor | None = None) -> list[str]:
        """The text of each line (queries counted and memoised like every other call)."""
        return [r.text for r in self(x, ids=ids)]

    def decisions(self) -> "Oracle":
        """A label-only view: a DecisionOracle returning the text alone, sharing this engine."""
        from ...oracles import DecisionOracle

        return DecisionOracle(lambda q: [r.text for r in self._read_batch(q)], budget=self.budget,
                              batch_size=self.batch_size, input_dtype="uint8")
