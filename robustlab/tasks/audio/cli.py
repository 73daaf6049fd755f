"""`robustlab audio train | attack | evaluate | reproduce`.

Each command but ``reproduce`` writes a run directory (``runs/<name>/``: config.yaml, summary.json,
figures/, audio/ WAV files, report.html; the CNN's weights under checkpoints/ for train). ``--model``
names a keyword CNN: ``pretrained`` (standard), ``pretrained-at`` (adversarially trained), a run
directory or a .safetensors file. ``--data`` is ``espeak`` (the synthesised corpus's unseen voices)
or a folder of ``<label>/<file>.wav``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ...argtypes import add_run_args, float_list
from ...errors import InputError
from ...runs.rundir import Run
from ...runs.schema import DeviceSettings
from ...runtime import device_record, resolve_device
from ...settings import add_model_arguments

log = logging.getLogger(__name__)

ATTACKS = ("pgd", "apgd", "cw", "square", "simba", "universal")
METHODS = ("standard", "pgd", "fgsm_rs", "trades")


def _corpus_args(p) -> None:
    p.add_argument("--voices", type=int, default=0, help="synthesise only the first N voices (0: all 84)")
    p.add_argument("--words", default="", help="comma-separated words (default: the ten digits, yes, no, stop, go)")
    p.add_argument("--takes", type=int, default=2, help="utterances per word and voice")


def _model_data_args(p, name: str) -> None:
    add_run_args(p, name)
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--model", default="pretrained", help="pretrained | pretrained-at | a run directory | a .safetensors file")
    p.add_argument("--data", default="espeak", help="espeak (unseen voices of the corpus) or a folder of <label>/<file>.wav")
    p.add_argument("--n", type=int, default=100, help="clips attacked")
    _corpus_args(p)


def add_cli(sub) -> None:
    audio = sub.add_parser("audio", help="voice: train the keyword CNN, attack, evaluate, reproduce",
                           description="Adversarial waveforms against a log-mel CNN on spoken words.")
    s = audio.add_subparsers(dest="audio_command", required=True)

    p = s.add_parser("train", help="train the keyword CNN on the espeak-ng corpus (standard or adversarial)")
    add_run_args(p, "audio-train")
    add_model_arguments(p, DeviceSettings)
    _corpus_args(p)
    p.add_argument("--method", default="standard", choices=METHODS, help="a shared training method")
    p.add_argument("--at-db", type=float, default=-30.0, help="Linf bound of the inner attacks, dB relative to the clip")
    p.add_argument("--epochs", type=int, default=12, help="training epochs")
    p.add_argument("--batch-size", type=int, default=64, help="clips per training step")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (Adam)")

    p = s.add_parser("attack", help="attack the keyword CNN on the waveform")
    _model_data_args(p, "audio-attack")
    p.add_argument("--attack", default="pgd", choices=ATTACKS, help="the attack on the waveform")
    p.add_argument("--db", type=float, default=-30.0, help="Linf bound, dB relative to each clip (C&W 2018)")
    p.add_argument("--snr", type=float, default=None, help="L2 bound as a minimum SNR in dB (instead of --db)")
    p.add_argument("--steps", type=int, default=50, help="steps of white-box attacks")
    p.add_argument("--budget", type=int, default=1000, help="queries per clip (black-box attacks)")
    p.add_argument("--eot", type=int, default=1, help="over the air: attack through random rooms, noise and gain, "
                                                     "averaging the gradient over this many draws (> 1)")
    p.add_argument("--defence", default="none", choices=["none", "quantise-8bit", "downsample-8kHz", "low-pass-4kHz"],
                   help="a preprocessing defence before the model, attacked with BPDA")

    p = s.add_parser("evaluate", help="clean and robust accuracy against dB bounds (the shared evaluation)")
    _model_data_args(p, "audio-evaluate")
    p.add_argument("--db", type=float_list, default=[-40.0, -30.0, -20.0], help="Linf bounds, dB relative to the clip")
    p.add_argument("--attacks", default="fast", help="the shared suite (fast, standard) or attack names")

    p = s.add_parser("reproduce", help="the reproduction table (docs/results/audio.md)")
    p.add_argument("--out", default="runs/audio-reproduce", help="output folder")
    p.add_argument("--n", type=int, default=100, help="test clips attacked")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not the published numbers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test clips drawn and of the attacks")


def corpus_setup(args):
    from .speech import WORDS, SpeechSetup, voices

    words = tuple(w.strip() for w in args.words.split(",") if w.strip()) or WORDS
    names = tuple(voices()[:args.voices] if args.voices > 0 else voices())
    if args.takes < 1 or len(names) < 2 or len(words) < 2:
        raise InputError("the corpus needs --takes >= 1, at least two voices and two words")
    return SpeechSetup(words=words, voices=names, takes=args.takes)  # --seed is the run's, not the corpus's


def _start(args, kind: str, extra: dict | None = None) -> Run:
    run = Run(Path(args.runs) / args.name)  # inside run_cli()'s Run.writing
    run.write_config({"kind": kind, "task": "audio", **vars(args), **(extra or {}), **device_record(args.device)})
    return run


def cmd_train(args) -> int:
    from .pretrained import MODEL_FILE, KWSSetup, save_kws, train_kws
    from .speech import speech_commands

    data = corpus_setup(args)
    setup = KWSSetup(classes=len(data.words), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     method=args.method, at_db=args.at_db, seed=args.seed)
    run = _start(args, "audio-model", {"setup": asdict(setup)})
    start = time.perf_counter()
    sets = speech_commands(data)
    model = setup.new_model().to(args.device)
    result = train_kws(model, setup, sets["train"], sets["test"])
    save_kws(model.cpu(), setup, run.checkpoints / MODEL_FILE, list(data.words))
    run.write_summary({"setup": asdict(setup), "test_accuracy": result["test_accuracy"], "history": result["history"],
                       "seconds": time.perf_counter() - start})
    log.info("test accuracy %.1f%% (unseen voices); wrote %s", 100 * result["test_accuracy"], run.path)
    return 0


def load_clips(args, classes: list[str]):
    """The clips of ``--data``: the corpus's unseen voices or a WAV folder (the model's classes), ``--n`` of them."""
    import torch

    from .speech import speech_commands, wav_folder

    if args.data == "espeak":
        data = speech_commands(corpus_setup(args))["test"]
    else:
        data = wav_folder(args.data, classes)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    return data.take(idx[:args.n]) if args.n < len(data) else data


def _model(args):
    from .pretrained import load_kws

    model, _, words = load_kws(args.model)
    return model.to(args.device), words


def cmd_attack(args) -> int:
    from .experiment import attack_run

    model, words = _model(args)
    data = load_clips(args, words)
    run = _start(args, "audio-attack")
    metrics = attack_run(run, model, data, words, args)
    log.info("%s at %s: accuracy %.0f%% -> %.0f%%, perturbation %.1f dB, SNR %.1f dB", args.attack,
             f"SNR {args.snr:g} dB" if args.snr is not None else f"{args.db:g} dB", 100 * metrics["clean_accuracy"],
             100 * metrics["adversarial_accuracy"], metrics["db_max"], metrics["snr_min"])
    log.info("wrote %s", run.path)
    return 0


def cmd_evaluate(args) -> int:
    from .experiment import evaluate_run

    model, words = _model(args)
    data = load_clips(args, words)
    run = _start(args, "audio-evaluate")
    rows = evaluate_run(run, model, data, args.db, args.attacks, args.seed)
    for r in rows:
        log.info("%s dB: robust accuracy %s (clean %s)", r[0], r[2], r[1])
    log.info("wrote %s", run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), n=args.n, quick=args.quick, seed=args.seed)
    return 0


#: the kind of run each verb writes (a verb refuses a run of another kind)
KINDS = {"train": "audio-model", "attack": "audio-attack", "evaluate": "audio-evaluate"}


def run_cli(args) -> int:
    """Run one audio verb; those that write a run through ``Run.writing`` (name checked, lock held)."""
    command = {"train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate,
               "reproduce": cmd_reproduce}[args.audio_command]
    if args.audio_command not in KINDS:
        return command(args)
    args.device = resolve_device(args.device)
    with Run.writing(args.runs, args.name, KINDS[args.audio_command]):
        return command(args)
