"""Pages of audio runs: waveforms and log-mel spectrograms, clean against adversarial, with the WAV
files written beside the page and shown as HTML ``<audio>`` players (the shared page writer)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence
import torch

from ...fileio import atomic_write_bytes
from ...runs import run_page_sections
from ...runs.report_figures import save_figure
from .speech import RATE


def write_wav(path: str | Path, clip: torch.Tensor, rate: int = RATE) -> None:
    """One clip [1, T] or [T] as a 32-bit float WAV file (soundfile), written atomically: the samples as
    attacked (16-bit PCM would round a -70 dB perturbation, ~5 steps of 2^-15, into another clip)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, clip.detach().reshape(-1).clamp(-1, 1).cpu().numpy(), rate, subtype="FLOAT", format="WAV")
    atomic_write_bytes(path, buf.getvalue())


def clips_figure(path: str | Path, x: torch.Tensor, x_adv: torch.Tensor, clean: Sequence[str], adv: Sequence[str],
                 frontend=None, n: int = 4, title: str = "") -> None:
    """Per clip: the waveform (clean and adversarial overlaid, the perturbation below) and the log-mel
    spectrograms clean / adversarial, titled with the predicted words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frontend is None:
        from .model import LogMel

        frontend = LogMel()
    n = min(n, x.shape[0])
    fig, axes = plt.subplots(n, 3, figsize=(13, 2.2 * n), squeeze=False)
    t = torch.arange(x.shape[-1]) / RATE
    with torch.no_grad():
        mels = [frontend(v[:n].cpu())[:, 0] for v in (x, x_adv)]
    for i in range(n):
        ax = axes[i, 0]
        ax.plot(t, x[i].reshape(-1).cpu(), lw=0.5, label="clean")
        ax.plot(t, (x_adv[i] - x[i]).reshape(-1).cpu(), lw=0.5, label="perturbation")
        ax.set_title(f"clean '{clean[i]}' -> adversarial '{adv[i]}'", fontsize=8, loc="left")
        ax.legend(fontsize=6, loc="upper right")
        for j, (m, tag) in enumerate(zip(mels, ("clean", "adversarial"))):
            axes[i, j + 1].imshow(m[i].numpy(), origin="lower", aspect="auto", vmin=-1, vmax=1)
            axes[i, j + 1].set_title(f"log-mel, {tag}", fontsize=8, loc="left")
            axes[i, j + 1].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(path))


def write_clips(folder: Path, x: torch.Tensor, x_adv: torch.Tensor, n: int = 4, prefix: str = "") -> list[str]:
    """WAV files of the first ``n`` clips, clean and adversarial, under ``folder/audio/``; their page paths."""
    paths = []
    for i in range(min(n, x.shape[0])):
        for tag, v in (("clean", x), ("adversarial", x_adv)):
            rel = f"audio/{prefix}clip{i}-{tag}.wav"
            write_wav(folder / rel, v[i])
            paths.append(rel)
    return paths


report_sections = run_page_sections  # what ``robustlab report`` shows of an audio run
