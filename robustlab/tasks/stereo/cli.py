"""`robustlab stereo train | attack | defend | evaluate | reproduce`, declared once (``COMMAND``, through
``robustlab.runs.taskcli``; the settings models in ``settings``).

Every command but ``reproduce`` (its tables go under ``--out``) writes a run directory (``runs/<name>/``:
config.yaml, summary.json, figures/, report.html; weights under checkpoints/ for train and defend).
Models are named by ``--model``: ``pretrained`` (the cached reference network), a run directory, or a
.safetensors file.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ...fileio import atomic_torch_save
from ...runs import Run
from ...runs.schema import DeviceSettings
from ...runs.taskcli import TaskCommand, Verb
from .settings import (AttackStepsSettings, StereoAttackSettings, StereoDataSettings, StereoDefendSettings,
                       StereoEvaluateSettings, StereoModelSettings, StereoReproduceSettings, StereoTrainSettings,
                       ViewsSettings, target_spec)

log = logging.getLogger(__name__)


def _dataset(name: str, setup, n: int | None, device: torch.device):
    """The pairs a verb runs on, on `device`."""
    from .data import motorcycle, synthetic_stereo

    if name == "synthetic":
        return synthetic_stereo(n or setup.n_val, setup.h, setup.w, setup.max_disp, seed=999_999).to(device)
    data = motorcycle("full" if name.endswith("-full") else "half").to(device)
    if data.max_disp > setup.max_disp:
        log.warning("the motorcycle pair's disparities reach %d px, beyond the network's max_disp %d",
                    data.max_disp, setup.max_disp)
    return data


def _model(spec: str, device: torch.device):
    """The stereo model `spec` names (``load_stereo_model``) on `device`, and its setup."""
    from .pretrained import load_stereo_model

    model, setup = load_stereo_model(spec)
    return model.to(device), setup


def _record(args, **extra) -> Run:
    """The verb's run, its config.yaml completed with what the verb derives (the setup, the defence)."""
    args.run.write_config({**args.config, **extra})
    return args.run


def _maps_figure(run: Run, data, preds: dict, title: str, name: str = "maps.png") -> str:
    """The first pair's maps: `preds` maps a label to disparities [B, 1, H, W] of (at least) that pair."""
    from .report import disparity_figure

    disparity_figure(run.figures / name, data.x[0, :3].cpu(), data.disparity[0, 0].cpu(), data.mask[0, 0].cpu(),
                     {k: v[0, 0].cpu() for k, v in preds.items()}, max_disp=data.max_disp, title=title)
    return f"figures/{name}"


def cmd_train(args) -> int:
    from .data import motorcycle
    from .pretrained import MODEL_FILE, StereoSetup, pretrained_stereo, save_stereo_model
    from .report import HEADER, metric_rows, results_text, setup_text, write_report
    from .train import evaluate_stereo, predict

    setup = StereoSetup(h=args.height, w=args.width, max_disp=args.max_disp, n_train=args.scenes, steps=args.steps,
                        lr=args.lr, seed=args.seed)
    run = _record(args, setup=asdict(setup))
    start = time.perf_counter()
    model = pretrained_stereo(setup, retrain=args.retrain, device=args.device)
    save_stereo_model(model, setup, run.checkpoints / MODEL_FILE)
    val = setup.val_data().to(args.device)
    results = {"synthetic validation": evaluate_stereo(model, val)}
    moto = motorcycle("half").to(args.device) if setup.max_disp >= 31 else None
    if moto is not None:
        results["motorcycle (half, zero-shot)"] = evaluate_stereo(model, moto)
    run.write_summary({"setup": asdict(setup), "metrics": results, "seconds": time.perf_counter() - start})
    figs = [_maps_figure(run, val, {"prediction": predict(model, val.x[:1])}, "synthetic validation scene")]
    if moto is not None:
        figs.append(_maps_figure(run, moto, {"prediction": predict(model, moto.x)}, "motorcycle (zero-shot)", "moto.png"))
    write_report(run.path / "report.html", f"stereo network {run.name}",
                 [("summary", results_text(results)),
                  ("setup", setup_text(asdict(setup)))], [("clean disparity error", HEADER, metric_rows(results))], figs)
    for k, m in results.items():
        log.info("%s: EPE %.3f px, bad-3 %.1f%%", k, m["epe"], 100 * m["bad3"])
    log.info("wrote %s", run.path)
    return 0


def _target_map(spec: str, clean: torch.Tensor, data):
    """(target, target_mask) for --target, built from the clean prediction."""
    from .attacks import region_target, scale_target, shift_target

    kind, value = target_spec(spec)  # checked with the settings
    if kind == "none":
        return None, None
    if kind == "shift":
        return shift_target(clean, value), None
    if kind == "scale":
        return scale_target(clean, value), None
    # region: the nearest valid region, ground-truth disparity in the top 20% of the image's range
    gt = torch.nan_to_num(data.disparity, posinf=0.0)
    region = torch.zeros_like(data.mask)
    for i in range(gt.shape[0]):
        valid = gt[i][data.mask[i]]
        region[i] = data.mask[i] & (gt[i] >= torch.quantile(valid, 0.8))
    return region_target(clean, region), region


def cmd_attack(args) -> int:
    from .attacks import stereo_attack
    from .metrics import stereo_metrics
    from .report import HEADER, change_text, metric_rows, write_report
    from .train import predict

    model, setup = _model(args.model, args.device)
    data = _dataset(args.data, setup, args.n, args.device)
    run = _record(args, setup=asdict(setup))
    clean = predict(model, data.x)
    target, target_mask = _target_map(args.target, clean, data)
    start = time.perf_counter()
    res = stereo_attack(model, data.x, data.disparity, data.mask, eps=args.eps, views=args.views, method=args.method,
                        steps=args.steps, target=target, target_mask=target_mask, reference=args.reference, seed=args.seed)
    seconds = time.perf_counter() - start
    attacked = predict(model, res.x_adv)
    results = {"clean": stereo_metrics(clean, data.disparity, data.mask), "attacked": stereo_metrics(attacked, data.disparity, data.mask)}
    summary = {"metrics": results, "seconds": seconds, "linf": float((res.x_adv - data.x).abs().max())}
    if target is not None:
        m = target_mask if target_mask is not None else torch.ones_like(target, dtype=torch.bool)
        summary["error_to_target"] = {"clean": stereo_metrics(clean, target, m)["epe"], "attacked": stereo_metrics(attacked, target, m)["epe"]}
        summary["target_reached"] = float(res.success.float().mean())
    atomic_torch_save({"x_adv": res.x_adv.cpu(), "target": None if target is None else target.cpu()},
                      run.path / "adversarial.pt")
    run.write_summary(summary)
    fig = _maps_figure(run, data, {"clean": clean, f"attacked ({args.views})": attacked},
                       f"{args.method.upper()} eps {args.eps} on {args.views}, target {args.target}")
    write_report(run.path / "report.html", f"stereo attack {run.name}",
                 [("summary", f"{change_text(results['clean'], results['attacked'])} ({len(data)} pairs)"),
                  ("attack", f"{args.method.upper()}, {args.steps} steps, Linf eps {args.eps:g} on {args.views} views, target "
                             f"{args.target}, on {args.data} ({len(data)} pairs); time {seconds:.1f} s")],
                 [("disparity error vs ground truth", HEADER, metric_rows(results))], [fig])
    log.info("EPE %.3f -> %.3f px (bad-3 %.1f%% -> %.1f%%)", results["clean"]["epe"], results["attacked"]["epe"],
             100 * results["clean"]["bad3"], 100 * results["attacked"]["bad3"])
    if target is not None:
        log.info("mean |pred - target|: %.3f -> %.3f px", summary["error_to_target"]["clean"], summary["error_to_target"]["attacked"])
    log.info("wrote %s", run.path)
    return 0


def cmd_defend(args) -> int:
    from .defense import DefenseConfig, defend_stereo, evaluate_defense, stereo_checks
    from .pretrained import MODEL_FILE, save_stereo_model
    from .report import HEADER, change_text, checks_table, defence_text, metric_rows, write_report

    model, setup = _model(args.model, args.device)
    cfg = DefenseConfig(steps=args.steps, eps=args.eps, attack_steps=args.attack_steps, adversarial=not args.no_adversarial,
                        lr_consistency=args.lr_consistency, llr=args.llr, seed=args.seed)
    run = _record(args, setup=asdict(setup), defense=asdict(cfg))
    val = setup.val_data().to(args.device)
    before = evaluate_defense(model, val, eps=args.eps, seed=args.seed)
    start = time.perf_counter()
    history = defend_stereo(model, setup.train_data().to(args.device), cfg)
    seconds = time.perf_counter() - start
    save_stereo_model(model, setup, run.checkpoints / MODEL_FILE, defense=str(asdict(cfg)))
    run.rewrite_metrics(history)
    after = evaluate_defense(model, val, eps=args.eps, seed=args.seed)
    checks = stereo_checks(model, val, eps=args.eps, checks=args.checks)
    run.write_summary({"before": before, "after": after, "checks": checks.to_dict(), "finetune_seconds": seconds})
    rows = metric_rows({"before, clean": before["clean"], "before, adaptive PGD-10": before["adaptive"],
                         "after, clean": after["clean"], "after, adaptive PGD-10": after["adaptive"]})
    write_report(run.path / "report.html", f"stereo defence {run.name}",
                 [("summary", "adaptive PGD-10: " + change_text(before["adaptive"], after["adaptive"], "before", "after")),
                  ("defence", defence_text(asdict(cfg)))],
                 [(f"synthetic validation, eps {args.eps:g} on both views (attacks re-optimised against each model)", HEADER, rows),
                  checks_table(checks.to_dict())], [])
    log.info("adaptive-attack EPE %.3f -> %.3f px; clean %.3f -> %.3f px (%.0f s)", before["adaptive"]["epe"],
             after["adaptive"]["epe"], before["clean"]["epe"], after["clean"]["epe"], seconds)
    for line in str(checks).splitlines():
        log.info("%s", line)
    log.info("wrote %s", run.path)
    return 0


def cmd_evaluate(args) -> int:
    from .attacks import stereo_attack
    from .report import HEADER, change_text, curves_figure, metric_cells, write_report
    from ...runs import Cells
    from .train import evaluate_stereo, predict

    specs = args.model or ["pretrained"]
    run = args.run
    cells = Cells(run.path / "cells")
    curves, figs, rows = {}, [], []
    for k, spec in enumerate(specs):
        model, setup = _model(spec, args.device)
        data = _dataset(args.data, setup, args.n, args.device)
        label = "pretrained" if spec == "pretrained" else Path(spec).stem if Path(spec).is_file() else Path(spec).name
        pts = {0.0: cells.get(f"{k}-clean", lambda: evaluate_stereo(model, data))}
        x_adv = {}

        def attacked(eps):
            if eps not in x_adv:
                x_adv[eps] = stereo_attack(model, data.x, data.disparity, data.mask, eps=eps, views=args.views,
                                           steps=args.steps, seed=args.seed).x_adv
            return x_adv[eps]
        for eps in args.eps:
            pts[eps] = cells.get(f"{k}-eps{eps}", lambda eps=eps: evaluate_stereo(model, data, x=attacked(eps)))
        curves[label] = pts
        rows += [[label, f"{e:g}", *metric_cells(m)] for e, m in pts.items()]
        worst = max(args.eps)  # after a resume its pairs are re-crafted (the attack is seeded)
        figs.append(_maps_figure(run, data, {"clean": predict(model, data.x[:1]), f"eps {worst:g}": predict(model, attacked(worst)[:1])},
                                 label, f"maps-{k}.png"))
    curves_figure(run.figures / "curves.png", curves, f"PGD-{args.steps} on {args.views} views, {args.data}")
    run.write_summary({"curves": {m: {str(e): v for e, v in pts.items()} for m, pts in curves.items()}})
    write_report(run.path / "report.html", f"stereo evaluation {run.name}",
                 [("summary", "; ".join(f"{m}: " + change_text(pts[0.0], pts[max(args.eps)], "clean", f"at eps {max(args.eps):g}")
                                        for m, pts in curves.items())),
                  ("attack", f"PGD-{args.steps} (step eps/4, random start), Linf, on {args.views} views of {args.data}")],
                 [("disparity error vs eps", ["model", "eps (Linf)", *HEADER[1:]], rows)],
                 ["figures/curves.png", *figs])
    for row in rows:
        log.info("%s eps %s: EPE %s px, bad-3 %s%%", row[0], row[1], row[2], row[4])
    log.info("wrote %s", run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    text = reproduce(args.out, seeds=tuple(args.seeds), parts=tuple(args.parts), finetune_steps=args.finetune_steps)
    if text:
        print(text)
    log.info("wrote %s", args.out)
    return 0


COMMAND = TaskCommand(
    "stereo", "stereo disparity: train, attack, defend, evaluate, reproduce",
    "Attacks on disparity and the defence, on procedural scenes and the Middlebury motorcycle pair.", (
        Verb("train", "train the stereo network on procedural scenes (cached)", cmd_train,
             (DeviceSettings, StereoTrainSettings), kind="stereo-model"),
        Verb("attack", "attack a stereo model (untargeted or targeted) and show the maps", cmd_attack,
             (DeviceSettings, StereoModelSettings, StereoDataSettings, ViewsSettings, StereoAttackSettings,
              AttackStepsSettings), kind="stereo-attack"),
        Verb("defend", "adversarial fine-tuning with LR consistency and local linearity", cmd_defend,
             (DeviceSettings, StereoModelSettings, StereoDefendSettings), kind="stereo-model"),
        Verb("evaluate", "EPE / bad-k vs eps curves of one or more models", cmd_evaluate,
             (DeviceSettings, StereoEvaluateSettings, StereoDataSettings, ViewsSettings, AttackStepsSettings),
             kind="stereo-evaluation"),
        Verb("reproduce", "measure the reference tables (attacks, transfer, physical, defence ablation)",
             cmd_reproduce, (StereoReproduceSettings,)),
    ))

