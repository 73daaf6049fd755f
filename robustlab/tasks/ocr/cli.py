"""`robustlab ocr train | attack | reproduce`.

Each command writes a run directory (``runs/<name>/``: config.yaml, summary.json, figures/, report.html;
the CRNN's weights under checkpoints/ for train). ``--model`` names a CRNN: ``pretrained`` (the cached
reference net), a run directory or a .safetensors file.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ...argtypes import add_run_args, check_model_specs, float_list
from ...runs.rundir import Run
from ...runs.schema import DeviceSettings
from ...runtime import device_record, resolve_device
from ...settings import add_model_arguments

log = logging.getLogger(__name__)


def add_cli(sub) -> None:
    from .attacks import ATTACK_NAMES
    from .masks import MASKS

    ocr = sub.add_parser("ocr", help="OCR: train the CRNN, attack Tesseract or the CRNN, reproduce",
                         description="Adversarial text lines against Tesseract 5 and a CRNN+CTC recogniser.")
    s = ocr.add_subparsers(dest="ocr_command", required=True)

    p = s.add_parser("train", help="train the CRNN on rendered lines (cached)")
    add_run_args(p, "ocr-train")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="rendered lines per step")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (Adam)")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")

    p = s.add_parser("attack", help="attack Tesseract or the CRNN on rendered or scanned lines")
    add_run_args(p, "ocr-attack")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--target", default="tesseract", choices=["tesseract", "crnn"], help="the recogniser attacked")
    p.add_argument("--model", default="pretrained", help="the CRNN (with --target crnn): pretrained (the cached "
                   "reference net), a run directory or a .safetensors file")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "clean", "scanned"], help="the text lines")
    p.add_argument("--n", type=int, default=10, help="rendered lines")
    p.add_argument("--attack", default="square", choices=ATTACK_NAMES, help="the attack")
    p.add_argument("--budget", type=int, default=1000, help="queries per line (black-box attacks)")
    p.add_argument("--steps", type=int, default=50, help="steps of white-box attacks")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="threat norm")
    p.add_argument("--eps", type=float, default=0.2, help="threat radius (pixel values in [0, 1])")
    p.add_argument("--mask", default="whole", choices=MASKS, help="which pixels may change")
    p.add_argument("--goal", default="untargeted", choices=["untargeted", "targeted"],
                   help="targeted: one letter of each line's longest word changed")
    p.add_argument("--workers", type=int, default=1, help="Tesseract worker processes")

    p = s.add_parser("reproduce", help="measure the reference tables: success vs queries, masks, transfer")
    p.add_argument("--out", default="runs/ocr-reproduce", help="output folder")
    p.add_argument("--n", type=int, default=50, help="rendered lines")
    p.add_argument("--budget", type=int, default=500, help="queries per line")
    p.add_argument("--eps", type=float_list, default=[0.05, 0.2], help="two perturbation sizes (Linf)")
    p.add_argument("--cw-eps", type=float, default=1.0, help="L2 size of Carlini-Wagner on the CRNN")
    p.add_argument("--ensemble", type=int, default=3, help="CRNNs in the transfer ensemble (< 2: no ensemble row)")
    p.add_argument("--workers", type=int, default=1, help="Tesseract worker processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the rendered lines and the attacks")


def _start(args, kind: str, extra: dict | None = None) -> Run:
    run = Run(Path(args.runs) / args.name)  # inside run_cli()'s Run.writing
    run.write_config({"kind": kind, "task": "ocr", **vars(args), **(extra or {}), **device_record(args.device)})
    return run


def cmd_train(args) -> int:
    from .pretrained import MODEL_FILE, CRNNSetup, pretrained_crnn, save_crnn
    from .render import scanned_lines, synthetic_lines
    from .train import evaluate_crnn

    setup = CRNNSetup(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    run = _start(args, "ocr-model", {"setup": asdict(setup)})
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


def _lines(name: str, n: int):
    from .render import dataset

    return dataset(name, n=n)


def cmd_attack(args) -> int:
    from .attacks import attack_lines
    from .objectives import change_one_word
    from .report import flipped_lines, write_attack_page

    data = _lines(args.data, args.n)
    if args.target == "tesseract":  # an external program: its lines stay on the CPU
        from .tesseract import TesseractOracle

        model = TesseractOracle(workers=args.workers)
    else:
        from .pretrained import load_crnn

        model, _ = load_crnn(args.model)
        model, data = model.to(args.device), data.to(args.device)
    wanted = [change_one_word(t, i) for i, t in enumerate(data.texts)] if args.goal == "targeted" else None
    run = _start(args, "ocr-attack")
    res, metrics = attack_lines(model, data.x, data.texts, attack=args.attack, norm=args.norm, eps=args.eps,
                                mask=args.mask, budget=args.budget, steps=args.steps, wanted=wanted, seed=args.seed)
    flipped = flipped_lines(res.success, res.texts)
    run.write_summary({"metrics": metrics, "texts": res.texts, "wanted": wanted, "flipped": flipped})
    setting = {k: getattr(args, k) for k in ("target", "attack", "goal", "norm", "eps", "mask", "budget", "steps", "data")}
    log.info("%s", write_attack_page(run, setting, data.x, res, metrics, flipped))
    if hasattr(model, "close"):
        model.close()
    log.info("wrote %s", run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), n=args.n, budget=args.budget, eps=tuple(args.eps), workers=args.workers, seed=args.seed,
              cw_l2_eps=args.cw_eps, ensemble=args.ensemble)
    return 0


#: the kind of run each verb writes (a verb refuses a run of another kind)
KINDS = {"train": "ocr-model", "attack": "ocr-attack"}


def run_cli(args) -> int:
    """Run one OCR verb; ``train`` and ``attack`` through ``Run.writing`` (name checked, lock held, links refused)."""
    command = {"train": cmd_train, "attack": cmd_attack, "reproduce": cmd_reproduce}[args.ocr_command]
    if args.ocr_command not in KINDS:
        return command(args)
    args.device = resolve_device(args.device)  # one-line InputError for a device this machine lacks
    if getattr(args, "target", None) == "crnn":
        check_model_specs(args.model, "'pretrained', a run directory written by `robustlab ocr train` or a .safetensors file")
    with Run.writing(args.runs, args.name, KINDS[args.ocr_command]):
        return command(args)
