"""The OCR task plug-in: what ``robustlab`` needs to know about text recognition."""
from __future__ import annotations

from ...taskspec import Task
from .cli import COMMAND
from .report import report_sections
from .masks import text_threat
from .metrics import ocr_metrics
from .objectives import TextTargeted, TextUntargeted, texts_of


def _metrics(output, target) -> dict:
    truth = [t if isinstance(t, str) else t[0] for t in target]
    return ocr_metrics(texts_of(output), truth)


def _pretrained(**kwargs):
    from .pretrained import pretrained_crnn

    return pretrained_crnn(**kwargs)


def _crnn(**kwargs):
    from .model import CRNN

    return CRNN(**kwargs)


def _tesseract(**kwargs):
    from .tesseract import TesseractOracle

    return TesseractOracle(**kwargs)


def _dataset(name):
    def make(**kwargs):
        from .render import dataset

        return dataset(name, **kwargs)
    return make


def _threat(mask):
    def make(x=None, norm: str = "linf", eps: float = 0.2, **kwargs):
        return text_threat(norm, eps, mask, x, **kwargs)
    return make


TASK = Task(
    name="ocr",
    description="text-line recognition: Tesseract 5 (black-box oracle) and a CRNN+CTC (white-box)",
    objectives={"untargeted": TextUntargeted, "targeted": TextTargeted},
    train_objective="untargeted",  # on CRNN log-probs its loss is the CTC negative log-likelihood of the truth
    metrics=_metrics,
    datasets={"synthetic": _dataset("synthetic"), "clean": _dataset("clean"), "scanned": _dataset("scanned")},
    models={"pretrained": _pretrained, "crnn": _crnn},
    threats={m: _threat(m) for m in ("whole", "strokes", "edges", "watermark")},
    oracles={"tesseract": _tesseract},
    report_sections=report_sections,
    add_cli=COMMAND.add_cli,
    run_cli=COMMAND.run_cli,
)
