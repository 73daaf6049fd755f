"""Attacks on keyword spotting through the shared engine, on the waveform.

- White-box: PGD, APGD (Linf in dB relative to each clip, or L2 by SNR) and Carlini-Wagner L2.
- Black-box: Square with 1-D windows (the clip travels as a one-row image [B, 1, 1, T], whose Linf
  windows are runs of round(p T) samples) and SimBA along low-frequency 1-D DCT directions. Clips of
  different peaks are attacked in one batch, each within its own radius: on a ``RelativeThreat`` both
  search the variable v (||v|| <= 10^(D/20)) of x_adv = clamp(x + max|x| v).
- Universal: one perturbation for every clip (``attacks.universal``); for clips of different peaks one
  v, scaled by each clip's peak (the same level relative to every clip).
- Over the air: EOT (the engine's ``eot=k``) through ``OverTheAir``, a model that plays the clip
  through a random room, adds noise and changes the gain at every call.
- Preprocessing defences (quantisation, down-sampling, low-pass) evaluated with BPDA (``attacks.bpda``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...attacks import APGD, PGD, CarliniWagnerL2, SimBA, Square
from ...attacks.bpda import BPDA
from ...errors import InputError
from ...threat import ThreatModel
from .metrics import audio_metrics
from .speech import RATE, add_noise, convolve, room_impulse_response
from .threats import BOUNDS, audio_threat

WHITE_BOX = ("pgd", "apgd", "cw")
BLACK_BOX = ("square", "simba")
ATTACK_NAMES = WHITE_BOX + BLACK_BOX


class OneRow(nn.Module):
    """The model on clips carried as one-row images [B, 1, 1, T] (for the 2-D window attacks)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], 1, x.shape[-1]))


def build_attack(name: str, threat, max_queries: int = 1000, steps: int = 50, seed: int = 0, eot: int = 1):
    """An engine attack on waveforms (cross-entropy for gradient attacks, the margin for Square)."""
    if name == "pgd":
        return PGD(threat, steps=steps, step_size=2.5 * threat.eps / steps, seed=seed, eot=eot)
    if name == "apgd":
        return APGD(threat, steps=steps, seed=seed, eot=eot)
    if name == "cw":
        if threat.norm != "l2":
            raise InputError(f"cw (Carlini-Wagner L2) is an L2 attack: bound the SNR (got {threat.norm})")
        return CarliniWagnerL2(threat, steps=steps, binary_search_steps=5, initial_const=1.0, lr=5e-4, seed=seed)
    if name == "square":
        return Square(threat, max_queries=max_queries, p_init=0.05, seed=seed)
    if name == "simba":  # the first RATE / 16 = 1,000 DCT rows of 1 s: 0-500 Hz (row k is k / 2 Hz), tried first;
        # a step of 64 eps along a unit direction moves each sample by at most 64 eps sqrt(2 / 16000) = 0.72 eps
        return SimBA(threat, step_size=threat.eps * 64, basis="dct", freq_dims=RATE // 16, steps=max_queries,
                     max_queries=max_queries, seed=seed)
    raise InputError(f"unknown audio attack {name!r}; known: {', '.join(ATTACK_NAMES)}")


def attack_clips(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str = "pgd",
                 bound_db: float | None = -30.0, bound_snr: float | None = None, max_queries: int = 1000, steps: int = 50,
                 seed: int = 0, eot: int = 1, batch_size: int = 256):
    """Attack clips ``x`` [B, 1, T] with labels ``y`` under a dB (Linf) or SNR (L2) bound; returns the
    adversarial clips, the engine's results per batch and ``audio_metrics``."""
    if bound_snr is not None:
        bound_db = None
    if attack == "cw" and bound_snr is None:
        raise InputError("cw (Carlini-Wagner L2) is an L2 attack: bound the SNR (--snr), not the Linf dB")
    model.eval()
    outs, results = [], []
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        threat = audio_threat(xb, bound_db=bound_db, bound_snr=bound_snr)
        if attack == "cw":  # a minimum-norm attack: one ball holding every clip's bound, judged per clip after
            threat = ThreatModel("l2", float(threat.radius().max()), bounds=BOUNDS)
        atk = build_attack(attack, threat, max_queries, steps, seed, eot)
        if attack in BLACK_BOX:
            res = atk(OneRow(model), xb[:, :, None], yb)
            res.x_adv = res.x_adv.reshape(xb.shape)
        else:
            res = atk(model, xb, yb)
        outs.append(res.x_adv.detach())
        results.append(res)
    x_adv = torch.cat(outs)
    metrics = audio_metrics(model, x, x_adv, y, bound_db=bound_db, bound_snr=bound_snr)
    metrics["queries_mean"] = float(torch.cat([r.queries for r in results]).float().mean())
    return x_adv, results, metrics


class OverTheAir(nn.Module):
    """A randomised channel before the model, drawn anew at every call: a room (RT60 uniform in
    ``rt60``, ``room_impulse_response``), white noise at an SNR uniform in ``snr_db``, a gain uniform in
    ``gain_db``. An attack with ``eot=k`` averages its gradient over k rooms (Athalye et al. 2018,
    Expectation over Transformation; Qin et al. 2019 for rooms)."""

    def __init__(self, model: nn.Module, rt60: tuple[float, float] = (0.1, 0.5), snr_db: tuple[float, float] = (20, 40),
                 gain_db: tuple[float, float] = (-6, 6), seed: int = 0, bank: int = 32):
        super().__init__()
        self.model, self.snr_db, self.gain_db = model, snr_db, gain_db
        self.gen = torch.Generator().manual_seed(seed)
        rooms = [room_impulse_response(rt60[0] + (rt60[1] - rt60[0]) * float(torch.rand((), generator=self.gen)),
                                       self.gen) for _ in range(bank)]
        n = max(r.numel() for r in rooms)
        self.register_buffer("rooms", torch.stack([F.pad(r, (0, n - r.numel())) for r in rooms]))

    def channel(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        u = torch.rand(b, 3, generator=self.gen)
        rooms = self.rooms[(u[:, 0] * self.rooms.shape[0]).long()].to(x)[:, None]
        y = convolve(x, rooms)
        snr = self.snr_db[0] + (self.snr_db[1] - self.snr_db[0]) * u[:, 1]
        y = add_noise(y, snr.to(x), self.gen)
        gain = 10 ** ((self.gain_db[0] + (self.gain_db[1] - self.gain_db[0]) * u[:, 2]) / 20)
        return y * gain.to(x).reshape(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.channel(x))


@torch.no_grad()
def over_the_air(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, draws: int = 8,
                 seed: int = 1) -> dict:
    """Clean and adversarial clips played through ``draws`` fresh rooms per clip, the same room, noise and
    gain for a clip clean and adversarial (two channels of one seed draw alike):

    - ``over_the_air_error``: the share of (clip, room) pairs misclassified after the attack;
    - ``over_the_air_error_clean``: the same share for the clean clips;
    - ``over_the_air_success``: of the pairs right when clean, the share wrong after the attack."""
    clean_air, adv_air = OverTheAir(model, seed=seed).eval(), OverTheAir(model, seed=seed).eval()
    error = error_clean = 0.0
    right = fooled = 0
    for _ in range(draws):
        ok, wrong = clean_air(x).argmax(1) == y, adv_air(x_adv).argmax(1) != y
        error += float(wrong.float().mean())
        error_clean += float((~ok).float().mean())
        right, fooled = right + int(ok.sum()), fooled + int((ok & wrong).sum())
    return {"over_the_air_error": error / draws, "over_the_air_error_clean": error_clean / draws,
            "over_the_air_success": fooled / right if right else float("nan")}


# ---- preprocessing defences, each with the identity as its backward approximation (BPDA) --------------


def quantise(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Uniform quantisation of [-1, 1] with step 2^-(bits - 1): round(2^(bits-1) x) / 2^(bits-1), 2^bits + 1
    levels from -1 to 1 (257 for 8 bits)."""
    q = 2 ** (bits - 1)
    return torch.round(x.clamp(*BOUNDS) * q) / q


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Down-sample by ``factor`` (average) and back up (linear interpolation): 16 kHz -> 8 kHz -> 16 kHz."""
    low = F.avg_pool1d(x, factor, factor)
    return F.interpolate(low, size=x.shape[-1], mode="linear", align_corners=False)


def low_pass(x: torch.Tensor, cutoff_hz: float = 4000.0) -> torch.Tensor:
    """An ideal low-pass filter: FFT bins above ``cutoff_hz`` set to zero."""
    spec = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / RATE).to(x.device)
    return torch.fft.irfft(spec * (freqs <= cutoff_hz), x.shape[-1])


DEFENCES = {"quantise-8bit": quantise, "downsample-8kHz": downsample, "low-pass-4kHz": low_pass}


def defended(model: nn.Module, name: str, backward: str = "identity") -> BPDA:
    """``model(g(x))`` for the preprocessing ``name``, differentiated as if g were the identity (BPDA,
    ``backward="identity"``) or through g's own gradient (``backward="own"``: zero through quantisation's
    rounding; the naive attack BPDA is compared with). Either way the model is a registered sub-module, so
    the wrapper moves and reports its device with it."""
    if name not in DEFENCES:
        raise InputError(f"unknown audio defence {name!r}; known: {', '.join(DEFENCES)}")
    if backward not in ("identity", "own"):
        raise InputError(f"backward is 'identity' (BPDA) or 'own' (the defence's own gradient), not {backward!r}")
    return BPDA(model, DEFENCES[name], approx=DEFENCES[name] if backward == "own" else None)
