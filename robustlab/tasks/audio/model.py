"""A small keyword-spotting CNN on log-mel features, with the feature front end inside the model, so
that every attack acts on the waveform ``[B, 1, T]`` (16 kHz, in [-1, 1]).

The front end is a short-time Fourier transform (``torch.stft``: Hann window of 25 ms, hop 10 ms,
512-point FFT, centred frames with zero padding), the power spectrum projected on a mel filterbank
computed once by librosa (``librosa.filters.mel``, Slaney-style, kept in a buffer so the weights file
carries it), and log compression in dB relative to the clip's loudest bin, floored at -top_db dB (what
``librosa.power_to_db(ref=np.max, top_db=top_db)`` computes). Relative to the clip's maximum, the
features do not change with the playback gain. The floor matters for robustness: the synthesised clips
are padded with digital silence, whose bins sit at the floor, so a perturbation far below the speech
but above the floor changes them; the reference CNNs use a floor of -50 dB.

torchaudio would supply the same front end, but it has no build for the pinned torch 2.13 (its last
release is built against torch 2.11), so the well-kept filterbank comes from librosa.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .speech import RATE


def mel_filterbank(n_fft: int = 512, n_mels: int = 40, rate: int = RATE, fmin: float = 20.0,
                   fmax: float | None = None) -> torch.Tensor:
    """librosa's mel filterbank [n_mels, n_fft // 2 + 1] (float32)."""
    from librosa.filters import mel

    return torch.from_numpy(mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)).float()


class LogMel(nn.Module):
    """waveform [B, 1, T] -> log-mel [B, 1, n_mels, frames], differentiable."""

    def __init__(self, n_fft: int = 512, win: int = 400, hop: int = 160, n_mels: int = 40, top_db: float = 80.0):
        super().__init__()
        self.n_fft, self.win, self.hop, self.top_db = n_fft, win, hop, top_db
        self.register_buffer("mel", mel_filterbank(n_fft, n_mels))
        self.register_buffer("window", torch.hann_window(win, periodic=True))

    def power_mel(self, x: torch.Tensor) -> torch.Tensor:
        """The mel power spectrogram [B, n_mels, frames] of waveforms [B, 1, T] or [B, T]."""
        wave = x.reshape(x.shape[0], -1)
        spec = torch.stft(wave, self.n_fft, self.hop, self.win, self.window.to(wave.dtype), center=True,
                          pad_mode="constant", return_complex=True)
        return torch.matmul(self.mel.to(wave.dtype), spec.real ** 2 + spec.imag ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.power_mel(x)
        ref = p.flatten(1).amax(1).clamp_min(1e-20).reshape(-1, 1, 1)
        db = 10 * torch.log10(p / ref + 1e-10)           # <= 0 dB; scale-free
        return (db.clamp_min(-self.top_db) / (self.top_db / 2) + 1)[:, None]   # in [-1, 1]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class KeywordCNN(nn.Module):
    """LogMel -> three conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool) -> global average pool
    -> linear: logits [B, classes]."""

    def __init__(self, classes: int = 14, channels: tuple[int, ...] = (16, 32, 64), n_mels: int = 40,
                 top_db: float = 80.0):
        super().__init__()
        self.frontend = LogMel(n_mels=n_mels, top_db=top_db)
        blocks, cin = [], 1
        for c in channels:
            blocks.append(_block(cin, c))
            cin = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.frontend(x)).mean((2, 3)))
