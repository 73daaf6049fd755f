"""Spoken words, offline: digits and a few command words synthesised with espeak-ng at 16 kHz (many
accents x voice variants, random speaking rates and pitches), augmented with noise and synthetic
room impulse responses, split by voice so that the test speakers are unseen; and any folder of WAV
files in the Speech Commands layout (``<label>/<file>.wav``), read with soundfile.

Every clip is 1 s at 16 kHz, ``[N, 1, 16000]`` float32, trimmed of leading silence, centred and
peak-normalised to ``PEAK`` (so that a dB bound relative to the clip is the same radius for every
clip, and the adversary keeps headroom below full scale). The synthesised sets are cached as
safetensors under ``$ROBUSTLAB_DATA/audio``.
"""
from __future__ import annotations

import logging
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...data import Dataset
from ...errors import InputError
from ...fileio import atomic_write_bytes
from ...progress import progress_bar
from ...weights import cache_dir, settings_key

log = logging.getLogger(__name__)

RATE = 16_000
LENGTH = RATE  # samples per clip: 1 s
PEAK = 0.5     # every clip's max |x|
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "stop", "go")
WORDS = DIGITS + COMMANDS
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


class EspeakUnavailable(InputError):
    """espeak-ng is not installed (``make audio-system`` or ``apt-get install espeak-ng``)."""


def espeak_status() -> tuple[bool, str]:
    """(installed, why not): the one line tests print when they skip."""
    if shutil.which("espeak-ng") is None:
        return False, "espeak-ng is not installed (apt-get install espeak-ng, or make audio-system)"
    return True, ""


def voices() -> list[str]:
    """Every voice: an accent and a variant, ``en-gb+f3``."""
    return [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]


def fit_clip(wave: np.ndarray, length: int = LENGTH, peak: float = PEAK) -> np.ndarray:
    """Trim silence (below 2% of the peak) at both ends, centre in ``length`` samples (cropping the
    middle of longer clips) and scale to max |x| = ``peak``."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    top = np.abs(wave).max() if wave.size else 0.0
    if top <= 0:
        raise InputError("a silent clip (every sample is 0)")
    loud = np.nonzero(np.abs(wave) > 0.02 * top)[0]
    wave = wave[loud[0]:loud[-1] + 1]
    if wave.size > length:
        start = (wave.size - length) // 2
        wave = wave[start:start + length]
    out = np.zeros(length)
    start = (length - wave.size) // 2
    out[start:start + wave.size] = wave
    return (out * peak / np.abs(out).max()).astype(np.float32)


def resample(wave: np.ndarray, rate: int, to: int = RATE) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) from ``rate`` to ``to`` Hz."""
    if rate == to:
        return wave
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, to)
    return resample_poly(wave, to // g, rate // g, axis=0)


def speak(word: str, voice: str, rate: int = 160, pitch: int = 50) -> np.ndarray:
    """One utterance from espeak-ng (``-s`` words per minute, ``-p`` pitch 0-99) as a 1 s clip at 16 kHz."""
    import io

    import soundfile as sf

    ok, why = espeak_status()
    if not ok:
        raise EspeakUnavailable(why)
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True, timeout=30).stdout
    wave, sr = sf.read(io.BytesIO(wav), dtype="float64")
    return fit_clip(resample(wave, sr))


def room_impulse_response(rt60: float, gen: torch.Generator, rate: int = RATE) -> torch.Tensor:
    """A synthetic room: the direct path (1 at t = 0) plus Gaussian noise decaying by 60 dB over
    ``rt60`` seconds, exp(-6.91 t / rt60) (Sabine's reverberation time), reflections 10 dB below
    the direct sound in energy."""
    n = max(int(rt60 * rate), 2)
    t = torch.arange(n, dtype=torch.float32) / rate
    tail = torch.randn(n, generator=gen) * torch.exp(-6.91 * t / rt60)
    tail[0] = 0
    tail = tail / tail.norm() * 10 ** (-10 / 20)
    tail[0] = 1.0
    return tail


def convolve(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x [..., T] convolved with h [..., K] (broadcast), cut to T samples (FFT; differentiable)."""
    t = x.shape[-1]
    n = t + h.shape[-1] - 1
    return torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(h, n), n)[..., :t]


def add_noise(x: torch.Tensor, snr_db: torch.Tensor | float, gen: torch.Generator | None = None) -> torch.Tensor:
    """x [B, 1, T] plus white Gaussian noise at ``snr_db`` (per clip or one value); the noise is drawn on the
    generator's device (a CPU generator for clips on a GPU) and moved to the clips'."""
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device if gen is not None else x.device)
    noise = noise.to(x.device)
    power = x.pow(2).mean(-1, keepdim=True)
    snr = torch.as_tensor(snr_db, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return x + noise * (power / 10 ** (snr / 10)).sqrt()


def peak_normalise(x: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    return x * peak / x.abs().amax(-1, keepdim=True).clamp_min(1e-12)


def augment(x: torch.Tensor, seed: int, p_room: float = 0.5, p_noise: float = 0.5) -> torch.Tensor:
    """Each clip of [N, 1, T], with probability ``p_room``, through a random room (RT60 0.1-0.6 s)
    and, with probability ``p_noise``, plus white noise at 10-30 dB SNR; peak-normalised again."""
    gen = torch.Generator().manual_seed(seed)
    out = x.clone()
    for i in range(x.shape[0]):
        if float(torch.rand((), generator=gen)) < p_room:
            rt60 = 0.1 + 0.5 * float(torch.rand((), generator=gen))
            out[i] = convolve(out[i], room_impulse_response(rt60, gen))
        if float(torch.rand((), generator=gen)) < p_noise:
            out[i:i + 1] = add_noise(out[i:i + 1], 10 + 20 * float(torch.rand((), generator=gen)), gen)
    return peak_normalise(out)


@dataclass(frozen=True)
class SpeechSetup:
    """What the synthesised corpus holds: ``takes`` utterances per word and voice (random rate 120-220
    wpm, pitch 20-80), ``test_fraction`` of the voices held out (unseen speakers), train clips augmented."""

    words: tuple[str, ...] = WORDS
    voices: tuple[str, ...] = tuple(voices())
    takes: int = 2
    test_fraction: float = 0.25
    augment: bool = True
    seed: int = 0

    def key(self) -> str:
        return settings_key(self)

    def split(self) -> tuple[list[str], list[str]]:
        """(train voices, held-out test voices) of this corpus (``split_voices``)."""
        return split_voices(self.voices, self.test_fraction, self.seed)


def split_voices(names: tuple[str, ...], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train voices, test voices): a seeded shuffle, at least one voice on each side."""
    order = list(names)
    random.Random(seed).shuffle(order)
    k = min(max(1, round(test_fraction * len(order))), len(order) - 1) if len(order) > 1 else 0
    return sorted(order[k:]), sorted(order[:k])


def _synthesise(words, voice_names, takes: int, seed: int, name: str) -> Dataset:
    rng = random.Random(f"{seed}-{name}")
    clips, labels = [], []
    jobs = [(w, v) for v in voice_names for w in words for _ in range(takes)]
    for w, v in progress_bar(jobs, desc=f"espeak {name}", unit="clip", mininterval=10):
        clips.append(speak(w, v, rate=rng.randint(120, 220), pitch=rng.randint(20, 80)))
        labels.append(words.index(w))
    x = torch.from_numpy(np.stack(clips))[:, None] if clips else torch.zeros(0, 1, LENGTH)
    return Dataset(x, torch.tensor(labels, dtype=torch.long), name=name, classes=list(words))


def speech_commands(setup: SpeechSetup = SpeechSetup(), cache: str | Path | None = None) -> dict[str, Dataset]:
    """{"train", "test"} of the synthesised corpus (synthesised once, then read from the cache)."""
    from safetensors.torch import load_file, save

    folder = Path(cache) if cache is not None else cache_dir("audio")
    path = folder / f"speech-{setup.key()}.safetensors"
    if path.exists():
        t = load_file(str(path))
        return {s: Dataset(t[f"{s}_x"].float(), t[f"{s}_y"].long(), name=f"espeak-{s}", classes=list(setup.words))
                for s in ("train", "test")}
    train_v, test_v = setup.split()
    log.info("synthesising %d words x %d voices x %d takes with espeak-ng; cached at %s", len(setup.words),
             len(setup.voices), setup.takes, path)
    out = {"train": _synthesise(setup.words, train_v, setup.takes, setup.seed, "espeak-train"),
           "test": _synthesise(setup.words, test_v, setup.takes, setup.seed, "espeak-test")}
    if setup.augment and len(out["train"]):
        out["train"].x = augment(out["train"].x, setup.seed)
    tensors = {f"{s}_{k}": getattr(d, a).contiguous() for s, d in out.items() for k, a in (("x", "x"), ("y", "y"))}
    tensors = {k: v.half() if k.endswith("_x") else v for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, {"setup": str(asdict(setup))}))
    for d in out.values():
        d.x = d.x.half().float()  # what a cached read returns
    return out


def wav_folder(root: str | Path, labels: list[str] | None = None) -> Dataset:
    """A folder of WAV files in the Speech Commands layout, ``<root>/<label>/<file>.wav`` (any rate,
    mono or multichannel), as 1 s clips at 16 kHz. ``labels`` fixes the class order (a model's
    classes); without it the sub-folders in sorted order. Folders not in ``labels`` are refused."""
    import soundfile as sf

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"no folder {root}: pass a folder of <label>/<file>.wav")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    classes = list(labels) if labels is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise InputError(f"{root}: labels {', '.join(unknown)} are not classes of the model ({', '.join(classes)})")
    clips, ys = [], []
    for label in found:
        for f in sorted((root / label).glob("*.wav")):
            try:
                wave, sr = sf.read(str(f), dtype="float64")
                clips.append(fit_clip(resample(wave, sr)))
            except sf.SoundFileError as e:
                raise InputError(f"{f}: not a readable WAV file ({e})") from None
            except InputError as e:
                raise InputError(f"{f}: {e}") from None
            ys.append(classes.index(label))
    if not clips:
        raise InputError(f"{root} holds no <label>/<file>.wav files")
    return Dataset(torch.from_numpy(np.stack(clips))[:, None], torch.tensor(ys), name=root.name, classes=classes)
