"""The voice task plug-in: what ``robustlab`` needs to know about keyword spotting on waveforms."""
from __future__ import annotations

from ...objectives import CrossEntropy, Margin
from ...taskspec import Task
from . import cli
from .report import report_sections


def _metrics(output, target) -> dict:
    return {"accuracy": float((output.argmax(1) == target).float().mean())}


def _pretrained(**kwargs):
    from .pretrained import pretrained_kws

    return pretrained_kws(**kwargs)


def _cnn(**kwargs):
    from .model import KeywordCNN

    return KeywordCNN(**kwargs)


def _espeak(split: str = "test", **kwargs):
    from .speech import SpeechSetup, speech_commands

    return speech_commands(SpeechSetup(**kwargs))[split]


def _wav_folder(root, labels=None):
    from .speech import wav_folder

    return wav_folder(root, labels)


def _threat(kind: str):
    def make(x, bound: float, **kwargs):
        from .threats import audio_threat

        return audio_threat(x, **{("bound_db" if kind == "db" else "bound_snr"): bound}, **kwargs)
    return make


TASK = Task(
    name="audio",
    description="voice: spoken words (espeak-ng, WAV folders), a log-mel CNN attacked on the waveform in dB / SNR",
    objectives={"ce": CrossEntropy, "margin": Margin},
    train_objective="ce",
    metrics=_metrics,
    datasets={"espeak": _espeak, "wav-folder": _wav_folder},
    models={"pretrained": _pretrained, "cnn": _cnn},
    threats={"db": _threat("db"), "snr": _threat("snr")},
    report_sections=report_sections,
    add_cli=cli.COMMAND.add_cli,
    run_cli=cli.COMMAND.run_cli,
)
