"""CRNN (Shi et al. 2016): a small conv feature extractor, a bidirectional LSTM over the columns and a
per-column softmax over ``CHARSET`` + the CTC blank (index 0), trained with CTC (Graves et al. 2006).

``CRNN(x)`` returns per-column log-probabilities ``[B, T, C]`` with T = W / 4; ``greedy_decode`` reads
them (argmax per column, merge repeats, drop blanks).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import InputError
from .render import CHARSET

BLANK = 0
_INDEX = {c: i + 1 for i, c in enumerate(CHARSET)}


def _block(cin: int, cout: int, pool) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.MaxPool2d(pool)]


class CRNN(nn.Module):
    """Conv (16-32-64-96 channels; height 32 -> 2, width / 4) -> max over height -> BiLSTM(hidden) -> linear.

    About 140k parameters at the defaults. Input: grey lines ``[B, 1, 32, W]`` in [0, 1] (ink dark).
    """

    def __init__(self, hidden: int = 48, channels: Sequence[int] = (16, 32, 64, 96), charset: str = CHARSET):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.charset = charset
        self.features = nn.Sequential(*_block(1, c1, 2), *_block(c1, c2, 2), *_block(c2, c3, (2, 1)),
                                      *_block(c3, c4, (2, 1)))
        self.rnn = nn.LSTM(c4, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, len(charset) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != 32:
            raise InputError(f"the CRNN reads grey lines [B, 1, 32, W], got {tuple(x.shape)}")
        f = self.features(1.0 - x)          # ink = 1: zero padding is then "background"
        f = f.amax(2).transpose(1, 2)       # [B, T, C]
        h, _ = self.rnn(f)
        return F.log_softmax(self.head(h), dim=-1)


def encode(texts: Sequence[str], charset: str = CHARSET) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated label indices and lengths for ``F.ctc_loss``; unknown characters are an InputError."""
    index = _INDEX if charset == CHARSET else {c: i + 1 for i, c in enumerate(charset)}
    flat, lengths = [], []
    for t in texts:
        bad = [c for c in t if c not in index]
        if bad:
            raise InputError(f"character {bad[0]!r} of {t!r} is not in the CRNN's charset (printable ASCII)")
        flat.extend(index[c] for c in t)
        lengths.append(len(t))
    return torch.tensor(flat, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)


def ctc_log_likelihood(log_probs: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """log p(text | x) per sample, [B], from the CTC forward algorithm (-inf where the text cannot be
    aligned in T columns; returned as a large negative number so that points can still be ranked)."""
    if log_probs.dim() != 3:
        raise InputError(f"CTC needs per-column log-probabilities [B, T, C], got {tuple(log_probs.shape)}")
    labels, lengths = encode(texts)
    labels = labels.to(log_probs.device)  # CUDA's CTC wants the targets on the GPU of the log-probabilities
    b, t, _ = log_probs.shape
    in_lengths = torch.full((b,), t, dtype=torch.long)
    nll = F.ctc_loss(log_probs.transpose(0, 1).float(), labels, in_lengths, lengths, blank=BLANK,
                     reduction="none", zero_infinity=False)
    return -nll.clamp(max=1e4)


def greedy_decode(log_probs: torch.Tensor, charset: str = CHARSET) -> list[str]:
    """Best path: argmax per column, merge repeats, drop blanks."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for row in best.tolist():
        chars, prev = [], BLANK
        for k in row:
            if k != prev and k != BLANK:
                chars.append(charset[k - 1])
            prev = k
        out.append("".join(chars))
    return out


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
