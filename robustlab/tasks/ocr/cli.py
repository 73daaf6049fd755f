"""`robustlab ocr train | attack | reproduce`, declared once (``robustlab.runs.taskcli``; the settings
models in ``settings``).

``train`` and ``attack`` write a run directory (``runs/<name>/``: config.yaml, summary.json, figures/,
report.html; the CRNN's weights under checkpoints/ for train); ``reproduce`` writes its tables under
``--out``. ``--model`` names a CRNN: ``pretrained`` (the cached reference net), a run directory or a
.safetensors file.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ...runs.schema import DeviceSettings
from ...runs.taskcli import TaskCommand, Verb
from .settings import (CRNNTrainSettings, LinesSettings, OCRReproduceSettings, QueryBudgetSettings,
                       RecogniserSettings, TesseractSettings, TextAttackSettings)

log = logging.getLogger(__name__)


def cmd_train(args) -> int:
    from .pretrained import MODEL_FILE, CRNNSetup, pretrained_crnn, save_crnn
    from .render import scanned_lines, synthetic_lines
    from .train import evaluate_crnn

    setup = CRNNSetup(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    run = args.run
    run.write_config({**args.config, "setup": asdict(setup)})
    start = time.perf_counter()
    model = pretrained_crnn(setup, retrain=args.retrain, device=args.device)
    save_crnn(model, setup, run.checkpoints / MODEL_FILE)
    results = {"rendered (200 styled lines)": evaluate_crnn(model, synthetic_lines(200, 999)),
               "rendered (200 plain lines)": evaluate_crnn(model, synthetic_lines(200, 999, styles=False)),
               "scanned page lines": evaluate_crnn(model, scanned_lines())}
    run.write_summary({"setup": asdict(setup), "metrics": results, "seconds": time.perf_counter() - start})
    for k, m in results.items():
        log.info("%s: CER %.2f%%, WER %.2f%%", k, 100 * m["cer"], 100 * m["wer"])
    log.info("wrote %s", run.path)
    return 0


def _recogniser(args, data):
    """The recogniser `args` name and the lines on its device (Tesseract's stay on the CPU)."""
    if args.target == "tesseract":  # an external program
        from .tesseract import TesseractOracle

        return TesseractOracle(workers=args.workers), data
    from .pretrained import load_crnn

    model, _ = load_crnn(args.model)
    return model.to(args.device), data.to(args.device)


def cmd_attack(args) -> int:
    from .attacks import attack_lines
    from .objectives import change_one_word
    from .render import dataset
    from .report import flipped_lines, write_attack_page

    model, data = _recogniser(args, dataset(args.data, n=args.n))
    wanted = [change_one_word(t, i) for i, t in enumerate(data.texts)] if args.goal == "targeted" else None
    run = args.run
    res, metrics = attack_lines(model, data.x, data.texts, attack=args.attack, norm=args.norm, eps=args.eps,
                                mask=args.mask, budget=args.max_queries, steps=args.steps, wanted=wanted,
                                seed=args.seed)
    flipped = flipped_lines(res.success, res.texts)
    run.write_summary({"metrics": metrics, "texts": res.texts, "wanted": wanted, "flipped": flipped})
    setting = {k: getattr(args, k) for k in ("target", "attack", "goal", "norm", "eps", "mask", "steps", "data")}
    log.info("%s", write_attack_page(run, {**setting, "budget": args.max_queries}, data.x, res, metrics, flipped))
    if hasattr(model, "close"):
        model.close()
    log.info("wrote %s", run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), n=args.n, budget=args.max_queries, eps=tuple(args.eps), workers=args.workers,
              seed=args.seed, cw_l2_eps=args.cw_eps, ensemble=args.ensemble)
    return 0


COMMAND = TaskCommand(
    "ocr", "OCR: train the CRNN, attack Tesseract or the CRNN, reproduce",
    "Adversarial text lines against Tesseract 5 and a CRNN+CTC recogniser.", (
        Verb("train", "train the CRNN on rendered lines (cached)", cmd_train, (DeviceSettings, CRNNTrainSettings),
             kind="ocr-model"),
        Verb("attack", "attack Tesseract or the CRNN on rendered or scanned lines", cmd_attack,
             (DeviceSettings, RecogniserSettings, LinesSettings, TextAttackSettings, QueryBudgetSettings,
              TesseractSettings), kind="ocr-attack"),
        Verb("reproduce", "measure the reference tables: success vs queries, masks, transfer", cmd_reproduce,
             (OCRReproduceSettings, QueryBudgetSettings, TesseractSettings), defaults={"max_queries": 500}),
    ))
