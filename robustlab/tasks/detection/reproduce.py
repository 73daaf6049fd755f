"""`robustlab detection reproduce`: the reproduction tables of docs/results/detection.md, measured
with the task's code on the cached reference detector.

- mAP against eps for each objective: PGD-20 then APGD-20 re-optimised per image (the shared
  ``evaluate``, no early stop), Linf eps in ``EPS``, on held-out scenes (untargeted: away from the detector's
  own clean detections);
- black-box Square on the detection scores (vanishing), a universal perturbation, transfer between two
  detectors trained from different seeds;
- a printable patch on the objects with EOT over scale, rotation and lighting (single-object scenes),
  against a random patch of the same size as the control;
- PGD adversarial fine-tuning: clean and adaptive numbers before and after, and the shared
  gradient-masking checks.

Writes ``results.json`` and ``results.md`` (and a boxes figure) under ``out``; returns the markdown.
``quick`` runs every part on tiny settings (a smoke test; its numbers mean nothing).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...errors import InputError
from ...evaluation.suite import wilson_interval
from ...fileio import atomic_write_json, atomic_write_text
from .attacks import attack_detector, transfer, universal_perturbation
from .data import SCENE_CLASSES, synthetic_scenes
from .defense import attacked_points, defend_detector, detection_checks, evaluate_detector
from .metrics import detection_metrics, recall_at
from .objectives import OBJECTIVES, Vanishing
from .patch import fit_patch, patch_success
from .pretrained import DetectorSetup, pretrained_detector
from .report import boxes_figure
from .train import predict

log = logging.getLogger(__name__)

EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


@dataclass(frozen=True)
class Scale:
    """How much each part measures (``FULL`` for the table, ``QUICK`` for a smoke test)."""

    setup: DetectorSetup
    n: int = 100                # held-out scenes
    steps: int = 20             # white-box steps
    eps: tuple = EPS
    queries: int = 500          # Square
    universal_epochs: int = 10
    universal_scenes: int = 1000      # training scenes the tiled universal perturbation is fit on
    universal_tile: int = 16          # its period in pixels (4 cells of the detector's stride 4)
    transfer_eps: tuple = (8 / 255, 16 / 255)
    transfer_mi_steps: int = 50       # MI-FGSM steps of the strengthened transfer attack
    patch_scenes: int = 256
    patch_epochs: int = 30
    transfer_steps: int = 1000  # of the second detector
    finetune_steps: int = 400
    validation: int = 200       # scenes a newly trained detector is validated on


FULL = Scale(DetectorSetup())
QUICK = Scale(DetectorSetup(width=4, scenes=32, steps=5), n=6, steps=2, eps=(4 / 255,), queries=10, universal_epochs=1,
              universal_scenes=16, universal_tile=8, transfer_eps=(4 / 255,), transfer_mi_steps=2, patch_scenes=8, patch_epochs=1, transfer_steps=5, finetune_steps=2, validation=6)


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _pct_ci(rate: float, n: int) -> str:
    """A success rate over ``n`` images with its 95% Wilson interval: ``3% (1-8%)``."""
    lo, hi = wilson_interval(round(rate * n), n)
    return f"{_pct(rate)} ({100 * lo:.0f}-{100 * hi:.0f}%)"


def _eps(e: float) -> str:
    return f"{e * 255:.0f}/255"


def objectives_table(model, val, scale: Scale, seed: int) -> tuple[dict, list[str]]:
    """mAP@0.5 / mAP / recall / success for each objective and eps (PGD then APGD, no early stop); untargeted
    against the detector's own clean detections (``attacks.attack_targets``)."""
    clean = detection_metrics(predict(model, val.x), val.targets)
    results, lines = {"clean": clean}, ["| goal | eps | success (on clean images) | mAP@0.5 | mAP@[.5:.95] | recall at 0.5 |",
                                        "|---|---|---|---|---|---|",
                                        f"| (clean) | 0 | - | {clean['map_50']:.3f} | {clean['map']:.3f} | {_pct(clean['recall'])} |"]
    for goal in OBJECTIVES:
        for eps in scale.eps:
            x_adv, rate, already = attacked_points(model, val.x, val.targets, eps, goal, steps=scale.steps, seed=seed)
            m = {**detection_metrics(predict(model, x_adv), val.targets), "success": rate, "clean_success": already}
            results[f"{goal}@{eps:.5f}"] = m
            lines.append(f"| {goal} | {_eps(eps)} | {_pct(rate)} ({_pct(already)}) | {m['map_50']:.3f} | {m['map']:.3f} | "
                         f"{_pct(m['recall'])} |")
    return results, lines


def _universal_row(model, val, train, eps: float, scale: Scale, seed: int, tile: int | None) -> dict:
    """A vanishing universal perturbation fit on ``train``: its success and recall on the held-out scenes."""
    uni = universal_perturbation(model, train.x, train.targets, "vanishing", eps, scale.universal_epochs, seed=seed,
                                 tile=tile)
    raw = predict(model, uni.apply(val.x))
    return {"success": float(Vanishing().success(raw).float().mean()), "recall": recall_at(model.decode(raw), val.targets),
            "train_success": uni.history[-1], "eps": eps, "tile": tile, "scenes": len(train)}


def black_box_and_universal(model, val, train, scale: Scale, seed: int) -> tuple[dict, list[str]]:
    """Square (vanishing, score-based) at the largest eps; universal perturbations (vanishing): a full-image one
    fit on 200 training scenes (as first measured) and a tiled one fit on ``universal_scenes``, at each eps of
    ``transfer_eps``."""
    eps = max(scale.eps)
    res, _, _ = attack_detector(model, val.x, val.targets, "vanishing", "square", eps, queries=scale.queries, seed=seed)
    sq = {"success": float(res.success.float().mean()), "recall": recall_at(model.decode(predict(model, res.x_adv)), val.targets),
          "queries_mean": float(res.queries.float().mean())}
    out = {"square": sq}
    for e in scale.transfer_eps:
        out[f"universal full@{e:.5f}"] = _universal_row(model, val, train[:200], e, scale, seed, None)
        out[f"universal tiled@{e:.5f}"] = _universal_row(model, val, train[:scale.universal_scenes], e, scale, seed,
                                                         scale.universal_tile)
    n = len(val)
    lines = [f"| attack | eps | success (vanishing, 95% CI, {n} images) | recall at 0.5 | queries / image |",
             "|---|---|---|---|---|",
             f"| Square (black-box, scores) | {_eps(eps)} | {_pct_ci(sq['success'], n)} | {_pct(sq['recall'])} | "
             f"{sq['queries_mean']:.0f} |"]
    for key, u in out.items():
        if key != "square":
            shape = (f"{u['tile']}x{u['tile']} tile" if u["tile"] else "full image")
            lines.append(f"| universal ({shape}, {scale.universal_epochs} epochs on {u['scenes']} training scenes; "
                         f"{_pct(u['train_success'])} of them emptied) | {_eps(u['eps'])} | {_pct_ci(u['success'], n)} | "
                         f"{_pct(u['recall'])} | - |")
    return out, lines


def patch_table(model, scale: Scale, seed: int) -> tuple[dict, list[str]]:
    """The EOT patch on single-object scenes against a random patch of the same size (the control)."""
    classes = SCENE_CLASSES[:model.num_classes]
    fit = synthetic_scenes(scale.patch_scenes, 77 + seed, 64, classes, max_objects=1)
    held = synthetic_scenes(scale.n, 78 + seed, 64, classes, max_objects=1)
    patch = fit_patch(model, fit.x, fit.targets, size=16, epochs=scale.patch_epochs, seed=seed)
    control = replace(patch, patch=torch.rand(patch.patch.shape, generator=torch.Generator().manual_seed(seed)))
    res = {"adversarial": patch_success(model, patch, held.x, held.targets),
           "random": patch_success(model, control, held.x, held.targets),
           "clean_missing": float(Vanishing().success(predict(model, held.x)).float().mean())}
    lines = ["| patch (16x16 texture, side 45-60% of the object's shorter side, +-20 deg, contrast 0.8-1.2, "
             "brightness +-0.1, noise 0.02) | objects hidden (mean of 5 EOT draws) |", "|---|---|",
             f"| none (clean) | {_pct(res['clean_missing'])} |", f"| random patch | {_pct(res['random'])} |",
             f"| adversarial patch (EOT, {scale.patch_epochs} epochs on {len(fit)} scenes) | {_pct(res['adversarial'])} |"]
    return res, lines


def transfer_table(model, val, scale: Scale, seed: int) -> tuple[dict, list[str]]:
    """Vanishing attacks crafted on detectors of the same architecture trained from other seeds, judged on another:
    PGD-20 from one detector (as first measured) and MI-FGSM with input diversity on an ensemble of two."""
    other, third = (pretrained_detector(replace(scale.setup, seed=scale.setup.seed + k, steps=scale.transfer_steps),
                                        progress=False, validation=scale.validation) for k in (1, 2))
    named = {"reference": model, "seed-1": other, "seed-2": third}
    plans = [("PGD-20", ("reference",), "seed-1", {}), ("PGD-20", ("seed-1",), "reference", {}),
             (f"MI-FGSM-{scale.transfer_mi_steps} + DI", ("reference", "seed-2"), "seed-1",
              {"attack": "mifgsm", "diversity": 0.5}),
             (f"MI-FGSM-{scale.transfer_mi_steps} + DI", ("seed-1", "seed-2"), "reference",
              {"attack": "mifgsm", "diversity": 0.5})]
    res = {name: {"clean_recall": recall_at(m.decode(predict(m, val.x)), val.targets)} for name, m in named.items()}
    lines = [f"| attack | crafted on -> judged on | eps | success on source | success on target (95% CI, {len(val)} "
             "images) | target recall (clean -> attacked) |", "|---|---|---|---|---|---|"]
    for eps in scale.transfer_eps:
        for attack, sources, target, options in plans:
            steps = scale.steps if attack.startswith("PGD") else scale.transfer_mi_steps
            src = [named[n] for n in sources]
            r = transfer(src[0] if len(src) == 1 else src, named[target], val.x, val.targets, "vanishing", eps, steps,
                         seed, **options)
            res[f"{attack}: {'+'.join(sources)} -> {target}@{eps:.5f}"] = r
            lines.append(f"| {attack} | {' + '.join(sources)} -> {target} | {_eps(eps)} | {_pct(r['source_success'])} | "
                         f"{_pct_ci(r['transfer_success'], len(val))} | {_pct(res[target]['clean_recall'])} -> "
                         f"{_pct(r['target_recall'])} |")
    return res, lines


def defence_table(model, val, scale: Scale, seed: int) -> tuple[dict, list[str]]:
    """PGD-AT fine-tuning of a copy of the reference; adaptive vanishing and untargeted attacks before and after."""
    import copy

    eps = 4 / 255 if 4 / 255 in scale.eps else max(scale.eps)
    robust = copy.deepcopy(model)
    defend_detector(robust, scale.setup.train_data(), scale.finetune_steps, eps, seed=seed, progress=False)
    res, lines = {}, ["| model | goal | clean mAP@0.5 | clean recall | adaptive success (on clean images) | adaptive mAP@0.5 | "
                      "adaptive recall |",
                      "|---|---|---|---|---|---|---|"]
    for name, m in (("reference", model), (f"PGD-AT fine-tuned ({scale.finetune_steps} steps)", robust)):
        for goal in ("vanishing", "untargeted"):
            r = evaluate_detector(m, val.x, val.targets, eps, goal, scale.steps, seed)
            res[f"{name}/{goal}"] = r
            lines.append(f"| {name} | {goal} | {r['clean']['map_50']:.3f} | {_pct(r['clean']['recall'])} | "
                         f"{_pct(r['adaptive']['success'])} ({_pct(r['adaptive']['clean_success'])}) | "
                         f"{r['adaptive']['map_50']:.3f} | {_pct(r['adaptive']['recall'])} |")
    checks = detection_checks(robust, val.x, val.targets, eps, "cheap")
    res["checks"] = checks.to_dict()
    lines += ["", "Gradient-masking checks (shared, cheap) on the fine-tuned detector:", "",
              "| check | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c['name'].replace('_', ' ')} | {c['verdict']} | {c['message']} |" for c in res["checks"]]
    return res, lines


def reproduce(out: str | Path, quick: bool = False, seed: int = 0) -> str:
    """Every part in turn; results.json and results.md under ``out`` (the markdown is returned). An ``out`` that
    already holds results is refused (a user's results are never overwritten)."""
    out = Path(out)
    if (out / "results.json").exists() or (out / "results.md").exists():
        raise InputError(f"{out} already holds reproduction results; pass another output folder (--out) or move them")
    scale = QUICK if quick else FULL
    start = time.perf_counter()
    model = pretrained_detector(scale.setup, progress=False, validation=scale.validation)
    val = scale.setup.validation_data(scale.n)
    train = scale.setup.train_data()
    results, md = {"eps": list(scale.eps), "n": scale.n, "quick": quick}, []
    for title, part in (("mAP against eps for each objective", lambda: objectives_table(model, val, scale, seed)),
                        ("Black-box Square and a universal perturbation",
                         lambda: black_box_and_universal(model, val, train, scale, seed)),
                        ("Printable patch under EOT", lambda: patch_table(model, scale, seed)),
                        ("Transfer between detectors", lambda: transfer_table(model, val, scale, seed)),
                        ("Adversarial training", lambda: defence_table(model, val, scale, seed))):
        t = time.perf_counter()
        results[title], lines = part()
        md += [f"### {title}", "", *lines, ""]
        log.info("%s: %.0f s", title, time.perf_counter() - t)
    from .tracking_reproduce import tracking_section

    tracking_md, results["tracking"] = tracking_section(out, quick, seed, model=model)
    md += [tracking_md, ""]
    results["seconds"] = time.perf_counter() - start
    md.append(f"Measured in {results['seconds'] / 60:.1f} min on {scale.n} held-out scenes (seed {seed}).")
    text = "\n".join(md) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", text)
    x_adv, _, _ = attacked_points(model, val.x[:4], val.targets[:4], max(scale.eps), "vanishing", steps=scale.steps, seed=seed)
    boxes_figure(out / "boxes.png", {"clean": val.x[:4], "vanishing": x_adv},
                 {"clean": model.decode(predict(model, val.x[:4])), "vanishing": model.decode(predict(model, x_adv))},
                 val.targets[:4], val.classes, title=f"vanishing PGD+APGD, eps {_eps(max(scale.eps))}")
    return text
