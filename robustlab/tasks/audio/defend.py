"""`robustlab audio defend`: adversarial training on the waveform with a shared training method (``pgd``:
Madry et al. 2018; ``fgsm_rs``: Wong et al. 2020; ``trades``: Zhang et al. 2019), the inner attacks bounded
in dB relative to the clip (Linf ``at_db``), from scratch or fine-tuning a trained CNN; then, in the same
run, the shared evaluation (``robustness_curve``) with attacks re-optimised against the new weights at each
dB bound, and the shared gradient-masking checks.

Writes the weights (``checkpoints/kws.safetensors``, loadable with ``--model RUN``), summary.json (the
training history, the test accuracy, the robust accuracy per bound and the checks' verdicts) and
report.html."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

from ...errors import InputError
from .cli import check_unseen, corpus_setup, kws_setup, pick_clips
from .experiment import evaluate_run
from .pretrained import MODEL_FILE, load_kws, save_kws, train_kws, trained_on, training_record
from .speech import speech_commands

log = logging.getLogger(__name__)


def starting_model(args, words: tuple[str, ...]):
    """(model, setup): a new CNN for the corpus's words (``--model`` empty), else the CNN ``--model`` with
    its own architecture and the training settings of ``args``; its classes must be the corpus's words."""
    setup = kws_setup(args, len(words))
    if not args.model:
        return setup.new_model(), setup
    model, loaded, classes = load_kws(args.model)
    if list(classes) != list(words):
        raise InputError(f"--model {args.model} classifies {', '.join(classes)}, the corpus holds "
                         f"{', '.join(words)}; fine-tune on the words it was trained on (--words)")
    trained = {k: getattr(setup, k) for k in ("epochs", "batch_size", "lr", "method", "at_db", "seed")}
    return model, replace(loaded, **trained)


def defend_run(run, args) -> dict:
    """Train (or fine-tune) with ``args.method`` at ``args.at_db``, save the weights, then evaluate them
    at the bounds ``args.db`` (``args.attacks`` suite, ``args.sanity`` checks) on ``args.n`` unseen-voice
    clips. Returns the summary."""
    data = corpus_setup(args)
    model, setup = starting_model(args, data.words)
    base = trained_on(args.model) if args.model else None
    if args.model:
        check_unseen(base, data.split()[1], args.model)
    record = training_record(data, base) if base is not None or not args.model else None
    run.write_config({**args.config, "setup": asdict(setup), "fine_tuned": args.model or None})
    start = time.perf_counter()
    sets = speech_commands(data)
    model = model.to(args.device)
    trained = train_kws(model, setup, sets["train"], sets["test"])
    save_kws(model.cpu(), setup, run.checkpoints / MODEL_FILE, list(data.words), record)
    model.to(args.device)
    summary = {"setup": asdict(setup), "fine_tuned": args.model or None, "test_accuracy": trained["test_accuracy"],
               "history": trained["history"], "training_seconds": time.perf_counter() - start}
    clips = pick_clips(sets["test"], args.n, args.seed)
    rows = evaluate_run(run, model, clips, args.db, args.attacks, args.seed,
                        sanity=None if args.sanity == "none" else args.sanity, summary=summary)
    return {**summary, "rows": rows}
