"""`robustlab detection train | attack | evaluate | defend | reproduce | track | hijack`, declared once
(``robustlab.runs.taskcli``): each verb's flags come from its settings models (``settings.py``; the tracking
verbs' from ``tracking_cli``).

Each verb but reproduce writes a run directory (``runs/<name>/``: config.yaml, summary.json, figures/,
report.html; the detector's weights under checkpoints/ for train and defend). ``--model`` names a
detector: ``pretrained`` (the cached reference), a run directory, a .safetensors file, or
``torchvision:<name>`` where torchvision imports. ``--data`` is ``synthetic`` (validation scenes) or
a COCO-format folder (``coco:PATH``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from ...errors import InputError
from ...runs.rundir import Run
from ...runs.schema import DeviceSettings
from ...runs.taskcli import TaskCommand, Verb
from .settings import (AttackSettings, DefenceSettings, DetectorInputSettings, EvaluationSettings, ReproduceSettings,
                       TrainingSettings)
from .tracking_cli import VERBS as TRACKING_VERBS

log = logging.getLogger(__name__)


def _record_setup(args, setup) -> None:
    """config.yaml: the validated settings and the detector's setup (None for a torchvision detector)."""
    args.run.write_config({**args.config, "setup": asdict(setup) if setup else None})


def _data(spec: str, n: int, setup, device):
    from .data import coco_folder

    if spec == "synthetic":
        from .pretrained import DetectorSetup

        return (setup or DetectorSetup()).validation_data(n).to(device)
    if spec.startswith("coco:"):
        return coco_folder(spec[5:], limit=n).to(device)
    raise InputError(f"--data must be synthetic or coco:FOLDER, got {spec!r}")


def _inputs(args):
    """The verb's detector (and its setup: None for torchvision) and its images; the setup recorded."""
    from .pretrained import load_detector

    model, setup = load_detector(args.model, args.device)
    data = _data(args.data, args.n, setup, args.device)
    if setup is None:  # torchvision: its COCO category ids mapped by name onto the data's classes
        model.use_classes(data.classes)
    if setup is not None and len(data.classes) != model.num_classes:
        raise InputError(f"--data has {len(data.classes)} classes ({', '.join(data.classes)}), the detector "
                         f"{model.num_classes}: train one on these classes or pick matching data")
    _record_setup(args, setup)
    return model, setup, data


def _figure(run: Run, data, model, versions: dict, title: str, name: str = "boxes.png") -> str:
    """The first 4 images of each version (name -> images) with the model's boxes and the truth."""
    from .report import boxes_figure
    from .train import predict

    dets = {k: model.decode(predict(model, x[:4])) for k, x in versions.items()}
    boxes_figure(run.figures / name, versions, dets, data.targets, data.classes, title=title)
    return f"figures/{name}"


def cmd_train(args) -> int:
    from .metrics import detection_metrics
    from .pretrained import MODEL_FILE, DetectorSetup, pretrained_detector, save_detector
    from .report import HEADER, metric_rows, write_report
    from .train import predict

    setup = DetectorSetup(width=args.width, scenes=args.scenes, steps=args.steps, lr=args.lr, seed=args.seed)
    run = args.run
    _record_setup(args, setup)
    start = time.perf_counter()
    model = pretrained_detector(setup, retrain=args.retrain, device=args.device, validation=args.n)
    save_detector(model, setup, run.checkpoints / MODEL_FILE)
    val = setup.validation_data(args.n).to(args.device)
    results = {f"validation ({args.n} scenes)": detection_metrics(predict(model, val.x), val.targets)}
    run.write_summary({"setup": asdict(setup), "metrics": results, "seconds": time.perf_counter() - start})
    fig = _figure(run, val, model, {"clean": val.x}, "validation scenes")
    write_report(run.path / "report.html", f"detector {run.name}",
                 [("setup", f"{setup.scenes:,} scenes, {setup.steps:,} steps of batch {setup.batch_size}, width "
                            f"{setup.width}, learning rate {setup.lr:g}, seed {setup.seed}")],
                 [("clean detection", HEADER, metric_rows(results))], [fig])
    log.info("validation: mAP@0.5 %.3f, mAP %.3f, recall %.3f", *(results[f"validation ({args.n} scenes)"][k]
                                                                     for k in ("map_50", "map", "recall")))
    log.info("wrote %s", run.path)
    return 0


def cmd_attack(args) -> int:
    from .attacks import attack_detector
    from .metrics import detection_metrics
    from .report import HEADER, metric_rows, write_report
    from .train import predict

    model, _, data = _inputs(args)
    run = args.run
    res, _, _ = attack_detector(model, data.x, data.targets, args.goal, args.attack, args.eps, args.steps,
                                args.max_queries, args.seed)
    results = {"clean": detection_metrics(predict(model, data.x), data.targets),
               "attacked": detection_metrics(predict(model, res.x_adv), data.targets)}
    rate = float(res.success.float().mean())
    run.write_summary({"metrics": results, "success_rate": rate, "seconds": res.time_s,
                       "linf": float((res.x_adv - data.x).abs().max())})
    fig = _figure(run, data, model, {"clean": data.x, "attacked": res.x_adv},
                  f"{args.attack} {args.goal}, Linf eps {args.eps:.4g}")
    write_report(run.path / "report.html", f"detection attack {run.name}",
                 [("summary", f"{args.goal} succeeded on {100 * rate:.1f}% of {len(data)} images"),
                  ("attack", f"{args.attack}, {args.steps} steps / {args.max_queries} queries, Linf eps {args.eps:.4g}")],
                 [("detection vs ground truth", HEADER, metric_rows(results))], [fig])
    log.info("%s success %.1f%%; mAP@0.5 %.3f -> %.3f", args.goal, 100 * rate, results["clean"]["map_50"],
             results["attacked"]["map_50"])
    log.info("wrote %s", run.path)
    return 0


def cmd_evaluate(args) -> int:
    from .defense import evaluate_detector
    from .report import HEADER, metric_rows, write_report

    model, _, data = _inputs(args)
    run = args.run
    results = {}
    for eps in args.eps:
        r = evaluate_detector(model, data.x, data.targets, eps, args.goal, args.steps, args.seed)
        results.setdefault("clean", r["clean"])
        results[f"eps {eps:.4g}"] = r["adaptive"]
    run.write_summary({"goal": args.goal, "metrics": results})
    write_report(run.path / "report.html", f"detection evaluation {run.name}",
                 [("attack", f"PGD-{args.steps} then APGD-{args.steps} for {args.goal}, Linf, no early stop")],
                 [("mAP and recall against eps", HEADER, metric_rows(results))], [])
    for k, m in results.items():
        log.info("%s: mAP@0.5 %.3f, recall %.3f", k, m["map_50"], m["recall"])
    log.info("wrote %s", run.path)
    return 0


def cmd_defend(args) -> int:
    from .defense import defend_detector, detection_checks, evaluate_detector
    from .pretrained import MODEL_FILE, load_detector, save_detector
    from .report import HEADER, metric_rows, write_report

    if args.data != "synthetic":
        raise InputError("defend fine-tunes on the procedural scenes and evaluates on them: use --data synthetic")
    model, setup = load_detector(args.model, args.device)
    if setup is None:
        raise InputError("defend fine-tunes the task's own detector, not a torchvision one")
    data = _data(args.data, args.n, setup, args.device)
    new = replace(setup, eps=args.eps, attack_steps=args.attack_steps, steps=args.steps, seed=args.seed)
    run = args.run
    _record_setup(args, new)
    before = evaluate_detector(model, data.x, data.targets, args.eps, "vanishing", seed=args.seed)
    history = defend_detector(model, setup.train_data().to(args.device), args.steps, args.eps, args.attack_steps,
                              seed=args.seed)
    save_detector(model, new, run.checkpoints / MODEL_FILE)
    after = evaluate_detector(model, data.x, data.targets, args.eps, "vanishing", seed=args.seed)
    checks = detection_checks(model, data.x, data.targets, args.eps, args.checks)
    run.write_summary({"before": before, "after": after, "checks": checks.to_dict(), "final_loss": history[-1]})
    rows = metric_rows({"before, clean": before["clean"], "before, adaptive": before["adaptive"],
                        "after, clean": after["clean"], "after, adaptive": after["adaptive"]})
    write_report(run.path / "report.html", f"detection defence {run.name}",
                 [("defence", f"PGD-{args.attack_steps} adversarial fine-tuning, {args.steps} steps, eps {args.eps:.4g}")],
                 [(f"vanishing attack, eps {args.eps:.4g}, re-optimised against each model", HEADER, rows),
                  ("gradient-masking checks", ["check", "verdict", "evidence"],
                   [[c["name"].replace("_", " "), c["verdict"], c["message"]] for c in checks.to_dict()])], [])
    log.info("adaptive recall %.3f -> %.3f", before["adaptive"]["recall"], after["adaptive"]["recall"])
    log.info("wrote %s", run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    print(reproduce(Path(args.out), quick=args.quick, seed=args.seed))
    return 0


COMMAND = TaskCommand(
    "detection", "object detection: train, attack, evaluate, defend, reproduce; tracking: track, hijack",
    "Adversarial attacks on a one-stage detector: objects vanish, appear, change label or move.", (
        Verb("train", "train the detector on procedural scenes (cached)", cmd_train, (DeviceSettings, TrainingSettings),
             kind="detection-model"),
        Verb("attack", "attack a detector for one goal and draw the boxes", cmd_attack,
             (DeviceSettings, DetectorInputSettings, AttackSettings), kind="detection-attack"),
        Verb("evaluate", "mAP and recall against eps (adaptive PGD then APGD, the shared evaluate)", cmd_evaluate,
             (DeviceSettings, DetectorInputSettings, EvaluationSettings), kind="detection-evaluation"),
        Verb("defend", "PGD adversarial fine-tuning (shared method), adaptive evaluation, masking checks", cmd_defend,
             (DeviceSettings, DetectorInputSettings, DefenceSettings), kind="detection-model"),
        Verb("reproduce", "measure the reproduction tables (docs/results/detection.md)", cmd_reproduce,
             (ReproduceSettings,)),
        *TRACKING_VERBS))
