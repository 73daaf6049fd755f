"""Audio threat models: a waveform perturbation bounded relative to the clip.

- Linf in dB (Carlini & Wagner 2018, "Audio adversarial examples"): dB(v) = 20 log10 max_t |v_t| and
  dB_x(delta) = dB(delta) - dB(x); a bound dB_x(delta) <= D (e.g. -30 dB) is ||delta||_inf <= eps_x
  with eps_x = max|x| * 10^(D / 20), one radius per clip.
- L2 by the signal-to-noise ratio: SNR(x, delta) = 20 log10 (||x||_2 / ||delta||_2) >= S is
  ||delta||_2 <= ||x||_2 * 10^(-S / 20).

Clips of one peak (every synthesised clip has max|x| = ``PEAK``) share one Linf radius, so the dB bound
is a plain pixel ``ThreatModel`` in [-1, 1] that every attack (black-box, universal, adversarial
training) takes unchanged. Otherwise the radius differs per clip: ``RelativeThreat`` attacks a
variable v with ||v|| <= 10^(D/20) (or 10^(-S/20)) and x_adv = clamp(x + s_x v, -1, 1), with the
clip's scale s_x (max|x| or ||x||_2) held as per-sample state, subset by the engine with the clips.
Clamping only shrinks each coordinate of the change, so ||x_adv - x|| <= s_x ||v|| <= eps_x exactly.
"""
from __future__ import annotations

import math

import torch

from ...errors import InputError
from ...threat import ThreatModel, VariableThreat, lp_norm

BOUNDS = (-1.0, 1.0)


def db(v: torch.Tensor) -> torch.Tensor:
    """Per-clip loudness in dB, 20 log10 max|v| ([B]; -inf for a silent clip)."""
    return 20 * torch.log10(lp_norm(v, "linf").double()).to(v.dtype)


def db_relative(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """dB_x(delta) = dB(delta) - dB(x) per clip."""
    return db(delta) - db(x)


def snr(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """SNR in dB, 20 log10 (||x||_2 / ||delta||_2), per clip (+inf for delta = 0)."""
    return 20 * (torch.log10(lp_norm(x, "l2").double()) - torch.log10(lp_norm(delta, "l2").double())).to(x.dtype)


def db_eps(x: torch.Tensor, bound_db: float) -> torch.Tensor:
    """The Linf radius per clip of the bound dB_x(delta) <= bound_db: max|x| * 10^(bound_db / 20)."""
    return lp_norm(x, "linf") * 10 ** (bound_db / 20)


def snr_eps(x: torch.Tensor, bound_snr: float) -> torch.Tensor:
    """The L2 radius per clip of the bound SNR >= bound_snr: ||x||_2 * 10^(-bound_snr / 20)."""
    return lp_norm(x, "l2") * 10 ** (-bound_snr / 20)


class RelativeThreat(VariableThreat):
    """x_adv = clamp(x + scale * v, -1, 1), ||v|| <= eps (linf or l2); ``scale`` [B] per clip
    (max|x| for a dB bound, ||x||_2 for an SNR bound), subset with the clips."""

    per_sample_fields = ("scale",)

    def __init__(self, norm: str, eps: float, scale: torch.Tensor, bounds: tuple[float, float] = BOUNDS):
        super().__init__(norm, eps, bounds)
        self.scale = torch.as_tensor(scale).reshape(-1).float()

    def variable_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def transform(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.check_batch(x)
        return x + self.scale.to(x).reshape(-1, *([1] * (x.dim() - 1))) * v

    def radius(self) -> torch.Tensor:
        """The bound on ||x_adv - x|| per clip, eps * scale."""
        return self.eps * self.scale


def same_peak(x: torch.Tensor, rtol: float = 1e-5) -> bool:
    peaks = lp_norm(x, "linf")
    return bool(x.shape[0] > 0 and (peaks - peaks[0]).abs().max() <= rtol * peaks[0])


def audio_threat(x: torch.Tensor, bound_db: float | None = None, bound_snr: float | None = None,
                 relative: bool | None = None):
    """The threat of ``bound_db`` (Linf, dB relative to each clip) or ``bound_snr`` (L2, SNR in dB) for
    clips ``x``. Linf clips of one peak get the plain ``ThreatModel`` with that radius; otherwise (or
    with ``relative=True``) a ``RelativeThreat``. Give exactly one bound."""
    if (bound_db is None) == (bound_snr is None):
        raise InputError("give one audio bound: bound_db (Linf, dB relative to the clip) or bound_snr (L2)")
    value = bound_db if bound_db is not None else bound_snr
    if not math.isfinite(value):
        raise InputError(f"the audio bound must be a finite number of dB, got {value}")
    if bound_db is not None:
        if relative is not True and same_peak(x):
            return ThreatModel("linf", float(db_eps(x[:1], bound_db)[0]), bounds=BOUNDS)
        return RelativeThreat("linf", 10 ** (bound_db / 20), lp_norm(x, "linf"))
    return RelativeThreat("l2", 10 ** (-bound_snr / 20), lp_norm(x, "l2"))


def within_bound(x: torch.Tensor, x_adv: torch.Tensor, bound_db: float | None = None,
                 bound_snr: float | None = None, tol_db: float = 1e-3) -> torch.Tensor:
    """bool[B]: the change respects the dB (or SNR) bound, to ``tol_db``."""
    delta = x_adv - x
    zero = lp_norm(delta, "linf") == 0
    if bound_db is not None:
        return zero | (db_relative(x, delta) <= bound_db + tol_db)
    return zero | (snr(x, delta) >= bound_snr - tol_db)
