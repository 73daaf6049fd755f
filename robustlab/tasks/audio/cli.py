"""`robustlab audio train | attack | defend | evaluate | reproduce`, declared once (``runs.taskcli``).

Each verb but ``reproduce`` writes a run directory (``runs/<name>/``: config.yaml, summary.json,
figures/, audio/ WAV files, report.html; the CNN's weights under checkpoints/ for train and defend).
``--model`` names a keyword CNN: ``pretrained`` (standard), ``pretrained-at`` (adversarially trained),
a run directory or a .safetensors file. ``--data`` is ``espeak`` (the synthesised corpus's unseen
voices) or a folder of ``<label>/<file>.wav``. The flags come from the settings models of
``settings.py``, one per concern, shared by the verbs that need them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ...errors import InputError
from ...runs.schema import DeviceSettings
from ...runs.taskcli import TaskCommand, Verb
from .settings import (AttackSettings, CorpusSettings, DefendSettings, EvaluationSettings, ModelDataSettings,
                       ReproduceSettings, TrainingSettings)

log = logging.getLogger(__name__)


def corpus_setup(args):
    """The synthesised corpus of ``--voices``, ``--words`` and ``--takes``."""
    from .speech import WORDS, SpeechSetup, voices

    words = tuple(w.strip() for w in args.words.split(",") if w.strip()) or WORDS
    names = tuple(voices()[:args.voices] if args.voices > 0 else voices())
    if len(names) < 2 or len(words) < 2:
        raise InputError("the corpus needs at least two voices and two words")
    return SpeechSetup(words=words, voices=names, takes=args.takes)  # --seed is the run's, not the corpus's


def kws_setup(args, classes: int):
    """The keyword CNN's training setup of ``--method``, ``--at-db``, ``--epochs``, ``--batch-size``, ``--lr``."""
    from .pretrained import KWSSetup

    return KWSSetup(classes=classes, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    method=args.method, at_db=args.at_db, seed=args.seed)


def cmd_train(args) -> int:
    from .pretrained import MODEL_FILE, save_kws, train_kws, training_record
    from .speech import speech_commands

    data = corpus_setup(args)
    setup = kws_setup(args, len(data.words))
    args.run.write_config({**args.config, "setup": asdict(setup)})
    start = time.perf_counter()
    sets = speech_commands(data)
    model = setup.new_model().to(args.device)
    result = train_kws(model, setup, sets["train"], sets["test"])
    save_kws(model.cpu(), setup, args.run.checkpoints / MODEL_FILE, list(data.words), training_record(data))
    args.run.write_summary({"setup": asdict(setup), "test_accuracy": result["test_accuracy"],
                            "history": result["history"], "seconds": time.perf_counter() - start})
    log.info("test accuracy %.1f%% (unseen voices); wrote %s", 100 * result["test_accuracy"], args.run.path)
    return 0


def pick_clips(data, n: int, seed: int):
    """``n`` clips of ``data`` drawn with ``seed`` (all of them, in order, if it holds no more)."""
    import torch

    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.take(idx[:n]) if n < len(data) else data


def in_classes(data, classes: list[str]):
    """The corpus's clips labelled by the model's class indices (its words may be fewer or in another order)."""
    import torch

    from ...data import Dataset

    if list(data.classes) == list(classes):
        return data
    missing = [w for w in data.classes if w not in classes]
    if missing:
        raise InputError(f"the model has no class for {', '.join(missing)} (its classes: {', '.join(classes)}); "
                         "choose --words among them")
    index = torch.tensor([classes.index(w) for w in data.classes])
    return Dataset(data.x, index[data.y], name=data.name, classes=list(classes))


def check_unseen(record: dict | None, held_out: list[str], model) -> None:
    """InputError when the model (whose training record is ``record``, ``pretrained.trained_on``) was trained
    on any of the ``held_out`` voices it is to be evaluated on; a warning when its weights hold no record."""
    if record is None:
        log.warning("%s: its weights do not record the voices it was trained on (written before the record); "
                    "the %d held-out voices evaluated may not be unseen", model, len(held_out))
        return
    seen = sorted(set(held_out) & set(record["voices"]))
    if seen:
        raise InputError(f"--model {model} was trained on {len(seen)} of these clips' voices ({', '.join(seen[:3])}"
                         f"{', ...' if len(seen) > 3 else ''}): use the corpus flags it was trained with (--voices)")


def load_clips(args, classes: list[str]):
    """The clips of ``--data``: the corpus's held-out voices (refused if the model was trained on any of them)
    or a WAV folder (the model's classes), ``--n`` of them."""
    from .pretrained import trained_on
    from .speech import speech_commands, wav_folder

    if args.data == "espeak":
        corpus = corpus_setup(args)
        check_unseen(trained_on(args.model), corpus.split()[1], args.model)
        data = in_classes(speech_commands(corpus)["test"], classes)
    else:
        data = wav_folder(args.data, classes)
    return pick_clips(data, args.n, args.seed)


def _model(args):
    from .pretrained import load_kws

    model, _, words = load_kws(args.model)
    return model.to(args.device), words


def cmd_attack(args) -> int:
    from .experiment import attack_run

    model, words = _model(args)
    data = load_clips(args, words)
    metrics = attack_run(args.run, model, data, words, args)
    log.info("%s at %s: accuracy %.0f%% -> %.0f%%, perturbation %.1f dB, SNR %.1f dB", args.attack,
             f"SNR {args.snr:g} dB" if args.snr is not None else f"{args.db:g} dB", 100 * metrics["clean_accuracy"],
             100 * metrics["adversarial_accuracy"], metrics["db_max"], metrics["snr_min"])
    log.info("wrote %s", args.run.path)
    return 0


def cmd_evaluate(args) -> int:
    from .experiment import evaluate_run

    model, words = _model(args)
    data = load_clips(args, words)
    rows = evaluate_run(args.run, model, data, args.db, args.attacks, args.seed,
                        sanity=None if args.sanity == "none" else args.sanity)
    for r in rows:
        log.info("%s dB: robust accuracy %s (clean %s)", r[0], r[2], r[1])
    log.info("wrote %s", args.run.path)
    return 0


def cmd_defend(args) -> int:
    from .defend import defend_run

    if args.method == "standard":
        raise InputError("--method standard is no defence: defend trains with pgd, fgsm_rs or trades (a standard "
                         "model is `robustlab audio train`)")
    result = defend_run(args.run, args)
    log.info("%s at %g dB: test accuracy %.1f%%; robust accuracy %s; wrote %s", args.method, args.at_db,
             100 * result["test_accuracy"], ", ".join(f"{r[2]} at {r[0]} dB" for r in result["rows"]), args.run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), n=args.n, quick=args.quick, seed=args.seed)
    return 0


MODEL_FLAGS = (ModelDataSettings, CorpusSettings, DeviceSettings)

COMMAND = TaskCommand(
    "audio", "voice: train the keyword CNN, attack, defend, evaluate, reproduce",
    "Adversarial waveforms against a log-mel CNN on spoken words.", (
        Verb("train", "train the keyword CNN on the espeak-ng corpus (standard or adversarial)", cmd_train,
             (DeviceSettings, CorpusSettings, TrainingSettings), kind="audio-model"),
        Verb("attack", "attack the keyword CNN on the waveform", cmd_attack, (*MODEL_FLAGS, AttackSettings),
             kind="audio-attack"),
        Verb("defend", "adversarial training on the waveform (from scratch or fine-tuning --model), then the "
             "shared evaluation with adaptive attacks and sanity checks", cmd_defend,
             (DefendSettings, CorpusSettings, TrainingSettings, EvaluationSettings, DeviceSettings),
             kind="audio-model", defaults={"method": "fgsm_rs", "at_db": -50.0, "db": [-60.0, -50.0, -40.0]}),
        Verb("evaluate", "clean and robust accuracy against dB bounds (the shared evaluation)", cmd_evaluate,
             (*MODEL_FLAGS, EvaluationSettings), kind="audio-evaluate"),
        Verb("reproduce", "the reproduction table (docs/results/audio.md)", cmd_reproduce, (ReproduceSettings,)),
    ))
