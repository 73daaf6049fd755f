"""`robustlab stereo train | attack | defend | evaluate | reproduce`.

Every command writes a run directory (``runs/<name>/``: config.yaml, summary.json, figures/,
report.html; weights under checkpoints/ for train and defend). Models are named by ``--model``:
``pretrained`` (the cached reference network), a run directory, or a .safetensors file.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ...argtypes import add_run_args, check_model_specs, int_list, name_list
from ...argtypes import float_list as _floats
from ...errors import InputError
from ...fileio import atomic_torch_save
from ...runs import Run
from ...runs.schema import DeviceSettings
from ...runtime import device_record, resolve_device
from ...settings import add_model_arguments

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "middlebury-motorcycle", "middlebury-motorcycle-full")


def _data_args(p) -> None:
    p.add_argument("--data", default="synthetic", choices=DATASETS,
                   help="synthetic validation scenes of the model's setup, or the Middlebury motorcycle pair "
                        "(half resolution; -full for full)")
    p.add_argument("--n", type=int, default=None, help="number of synthetic scenes (default: the setup's n_val)")


def _views_arg(p) -> None:
    p.add_argument("--views", default="both", choices=["left", "right", "both", "consistent"],
                   help="the views perturbed; consistent: the left one is the right one warped by the true disparity")


def add_parser(sub) -> None:
    stereo = sub.add_parser("stereo", help="stereo disparity: train, attack, defend, evaluate, reproduce",
                            description="Attacks on disparity and the defence, on procedural scenes and the "
                                        "Middlebury motorcycle pair.")
    s = stereo.add_subparsers(dest="stereo_command", required=True)

    p = s.add_parser("train", help="train the stereo network on procedural scenes (cached)")
    add_run_args(p, "stereo-train")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--steps", type=int, default=1600, help="optimizer steps")
    p.add_argument("--scenes", type=int, default=800, help="training scenes")
    p.add_argument("--height", type=int, default=64, help="scene height in pixels")
    p.add_argument("--width", type=int, default=128, help="scene width in pixels")
    p.add_argument("--max-disp", type=int, default=32, help="largest disparity the network predicts, in pixels")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")

    p = s.add_parser("attack", help="attack a stereo model (untargeted or targeted) and show the maps")
    add_run_args(p, "stereo-attack")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--model", default="pretrained", help="pretrained (the cached reference net), a run directory "
                   "or a .safetensors file")
    _data_args(p)
    _views_arg(p)
    p.add_argument("--method", default="pgd", choices=["pgd", "fgsm"], help="the attack")
    p.add_argument("--eps", type=float, default=0.02, help="Linf radius (pixel values in [0, 1])")
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--reference", default="gt", choices=["gt", "prediction"],
                   help="untargeted: maximise the error to the ground truth or to the clean prediction")
    p.add_argument("--target", default="none",
                   help="none | shift:S (all disparities + S px) | scale:K | region (the nearest 20%% of valid "
                        "pixels take the background's disparity; the error to the target is measured there)")

    p = s.add_parser("defend", help="adversarial fine-tuning with LR consistency and local linearity")
    add_run_args(p, "stereo-defend")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--model", default="pretrained", help="the model fine-tuned: pretrained (the cached reference "
                   "net), a run directory or a .safetensors file")
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps")
    p.add_argument("--eps", type=float, default=0.02, help="Linf radius of the training attack")
    p.add_argument("--attack-steps", type=int, default=3, help="PGD steps per training batch")
    p.add_argument("--no-adversarial", action="store_true", help="fine-tune on clean pairs (ablation)")
    p.add_argument("--lr-consistency", type=float, default=0.0, help="weight of the left-right feature consistency")
    p.add_argument("--llr", type=float, default=0.0, help="weight of the local-linearity term")
    p.add_argument("--checks", default="cheap", choices=["cheap", "all"], help="gradient-masking checks to run")

    p = s.add_parser("evaluate", help="EPE / bad-k vs eps curves of one or more models")
    add_run_args(p, "stereo-evaluate")
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--model", action="append", default=None, help="a model: pretrained, a run directory or a "
                   ".safetensors file; repeat for several models (default: pretrained)")
    _data_args(p)
    p.add_argument("--eps", type=_floats, default=[0.005, 0.01, 0.02], help="Linf radii (comma-separated)")
    _views_arg(p)
    p.add_argument("--steps", type=int, default=10, help="PGD steps")

    p = s.add_parser("reproduce", help="measure the reference tables (attacks, transfer, physical, defence ablation)")
    p.add_argument("--out", default="runs/stereo-reproduce", help="output folder")
    p.add_argument("--seeds", type=int_list, default="0,1,2", help="seeds of the defence fine-tuning (comma-separated)")
    p.add_argument("--parts", type=name_list, default="attacks,transfer,physical,defence",
                   help="tables to measure (comma-separated)")
    p.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning steps of the defence")


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


def _start(args, kind: str, extra: dict) -> Run:
    run = Run(Path(args.runs) / args.name)  # inside run()'s Run.writing
    run.write_config({"kind": kind, "task": "stereo", **vars(args), **extra, **device_record(args.device)})
    return run


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
    run = _start(args, "stereo-model", {"setup": asdict(setup)})
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

    if spec == "none":
        return None, None
    kind, _, value = spec.partition(":")
    try:
        if kind == "shift":
            return shift_target(clean, float(value)), None
        if kind == "scale":
            return scale_target(clean, float(value)), None
    except ValueError:
        raise InputError(f"--target {spec!r}: expected a number after '{kind}:'") from None
    if kind == "region":
        # the nearest valid region: ground-truth disparity in the top 20% of the image's range
        gt = torch.nan_to_num(data.disparity, posinf=0.0)
        region = torch.zeros_like(data.mask)
        for i in range(gt.shape[0]):
            valid = gt[i][data.mask[i]]
            region[i] = data.mask[i] & (gt[i] >= torch.quantile(valid, 0.8))
        return region_target(clean, region), region
    raise InputError(f"--target must be none, shift:S, scale:K or region, got {spec!r}")


def cmd_attack(args) -> int:
    from .attacks import stereo_attack
    from .metrics import stereo_metrics
    from .report import HEADER, change_text, metric_rows, write_report
    from .train import predict

    model, setup = _model(args.model, args.device)
    data = _dataset(args.data, setup, args.n, args.device)
    run = _start(args, "stereo-attack", {"setup": asdict(setup)})
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
    run = _start(args, "stereo-model", {"setup": asdict(setup), "defense": asdict(cfg)})
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
    run = _start(args, "stereo-evaluation", {})
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


COMMANDS = {"train": cmd_train, "attack": cmd_attack, "defend": cmd_defend, "evaluate": cmd_evaluate, "reproduce": cmd_reproduce}
#: the kind of run each verb writes (a verb refuses a run of another kind)
KINDS = {"train": "stereo-model", "attack": "stereo-attack", "defend": "stereo-model", "evaluate": "stereo-evaluation"}


def run(args) -> int:
    """Run one stereo verb through ``Run.writing`` (name checked, run lock held, links refused)."""
    if args.stereo_command == "reproduce":
        return COMMANDS[args.stereo_command](args)
    args.device = resolve_device(args.device)  # one-line InputError for a device this machine lacks
    check_model_specs(getattr(args, "model", None), "'pretrained', a run directory written by `robustlab stereo "
                      "train/defend`, or a .safetensors file")
    with Run.writing(args.runs, args.name, KINDS[args.stereo_command]):
        return COMMANDS[args.stereo_command](args)
