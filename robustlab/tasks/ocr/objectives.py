"""Objectives for text recognisers, on the shared ``Objective`` interface (``loss -> [B]`` maximised,
``success -> bool[B]``).

An output is any of: the CRNN's per-column log-probabilities ``[B, T, C]`` (scores; read by greedy
CTC decoding), a list of Tesseract ``Reading`` (text + symbol confidences) or a list of strings (the
decision of a label-only oracle). Targets are lists with one entry per line, so that the engine's
``index_target`` selects them: the true transcriptions (untargeted), or the wanted strings / pairs
``(truth, wanted)`` (targeted).

Losses:
- CRNN: the CTC log-likelihood (Graves et al. 2006): untargeted ``-log p(truth | x)``, targeted
  ``log p(wanted | x)``.
- Tesseract: edit distance plus confidence: untargeted ``d(read, truth) + (1 - conf)``; targeted
  ``-d(read, wanted) + (1 - conf) / 2`` while not reached, ``1`` once reached (conf = mean symbol
  confidence in [0, 1]; a low confidence means the reading is about to change).
- Strings only: the edit distance (a decision attack uses ``success`` alone).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ...errors import InputError
from ...objectives import Objective
from .metrics import edit_distance
from .model import ctc_log_likelihood, greedy_decode


def texts_of(output: Any) -> list[str]:
    """The text per sample of any recogniser output."""
    if isinstance(output, torch.Tensor):
        if output.dim() != 3:
            raise InputError(f"recogniser scores must be per-column log-probabilities [B, T, C], got {tuple(output.shape)}")
        return greedy_decode(output)
    if isinstance(output, (list, tuple)):
        return [o if isinstance(o, str) else o.text for o in output]
    raise InputError(f"unsupported recogniser output {type(output).__name__}")


def _confidences(output) -> list[float] | None:
    if isinstance(output, (list, tuple)) and output and hasattr(output[0], "confidences"):
        return [o.confidence for o in output]
    return None


def _strings(target, n: int, what: str, pick: int = 0) -> list[str]:
    if isinstance(target, str):
        target = [target]
    if not isinstance(target, (list, tuple)):
        raise InputError(f"OCR {what} targets are a list of strings (one per line), got {type(target).__name__}")
    out = [t if isinstance(t, str) else t[pick] for t in target]
    if len(out) != n or not all(isinstance(t, str) for t in out):
        raise InputError(f"expected {n} {what} strings (one per line), got {len(out)}")
    return out


def _device(output) -> torch.device:
    return output.device if isinstance(output, torch.Tensor) else torch.device("cpu")


class TextUntargeted(Objective):
    """Untargeted: success when the edit distance to the truth is at least ``k`` or, with ``word=i``,
    when the truth's i-th word is no longer read at position i. Target: the true strings."""

    name = "ocr_untargeted"

    def __init__(self, k: int = 1, word: int | None = None):
        if k < 1:
            raise InputError(f"k (the edit distance that counts as success) must be >= 1, got {k}")
        self.k, self.word = int(k), word

    def loss(self, output, target):
        n = len(output)
        truth = _strings(target, n, "true")
        if isinstance(output, torch.Tensor):
            return -ctc_log_likelihood(output, truth).to(output.device)
        read = texts_of(output)
        d = torch.tensor([float(edit_distance(r, t)) for r, t in zip(read, truth)])
        conf = _confidences(output)
        if conf is not None:
            d = d + (1 - torch.tensor(conf))
        return d

    def success(self, output, target):
        read = texts_of(output)
        truth = _strings(target, len(read), "true")
        if self.word is not None:
            ok = []
            for r, t in zip(read, truth):
                tw, rw = t.split(), r.split()
                i = self.word if self.word >= 0 else len(tw) + self.word
                ok.append(not (0 <= i < len(tw)) or i >= len(rw) or rw[i] != tw[i])
            return torch.tensor(ok, device=_device(output))
        return torch.tensor([edit_distance(r, t) >= self.k for r, t in zip(read, truth)], device=_device(output))

    def __repr__(self):
        return f"TextUntargeted(k={self.k}, word={self.word})"


class TextTargeted(Objective):
    """Targeted: success when the line reads exactly the wanted string. Target: wanted strings, or
    ``(truth, wanted)`` pairs."""

    name = "ocr_targeted"

    def loss(self, output, target):
        n = len(output)
        wanted = _strings(target, n, "wanted", pick=-1)
        if isinstance(output, torch.Tensor):
            return ctc_log_likelihood(output, wanted).to(output.device)
        read = texts_of(output)
        d = torch.tensor([float(edit_distance(r, w)) for r, w in zip(read, wanted)])
        conf = _confidences(output)
        if conf is not None:
            d = d - (1 - torch.tensor(conf)) / 2
        return torch.where(d == 0, torch.ones_like(d), -d)

    def success(self, output, target):
        read = texts_of(output)
        wanted = _strings(target, len(read), "wanted", pick=-1)
        return torch.tensor([r == w for r, w in zip(read, wanted)], device=_device(output))


def targeted_pairs(truth: Sequence[str], wanted: Sequence[str]) -> list[tuple[str, str]]:
    """The target list of a targeted attack: one ``(truth, wanted)`` pair per line."""
    if len(truth) != len(wanted):
        raise InputError(f"{len(truth)} transcriptions for {len(wanted)} wanted strings")
    return list(zip(truth, wanted))


def change_one_word(text: str, seed: int = 0) -> str:
    """A targeted goal: the line with one character of its longest word replaced (e.g. 'markers' -> 'markars')."""
    import random

    rng = random.Random(seed)
    words = text.split(" ")
    i = max(range(len(words)), key=lambda j: (len(words[j]), -j))
    w = words[i]
    if not w:
        return text + "a"
    p = rng.randrange(len(w))
    pool = "aeiou" if w[p].lower() in "aeiou" else "nmrstl"
    c = rng.choice([ch for ch in pool if ch != w[p].lower()])
    words[i] = w[:p] + c + w[p + 1:]
    return " ".join(words)


OBJECTIVES = {"untargeted": TextUntargeted, "targeted": TextTargeted}
