"""The stereo issue's reproduction tables, measured and written to a run directory.

1. attacks: EPE and bad-3 under FGSM and PGD-10 on the left view, the right view, both, and
   stereo-consistent perturbations, eps in {0.005, 0.01, 0.02}, on synthetic validation scenes and
   on the Middlebury motorcycle pair (half resolution, zero-shot);
2. defence: undefended, adversarial training, + LR consistency, + LLR, + both; clean EPE and the
   EPE under attacks re-optimised against each model, per fine-tuning seed, with the
   gradient-masking checks;
3. transfer: network-crafted perturbations applied to OpenCV SGBM, and Square on SGBM itself;
4. physical: a universal tile per view, a patch at a disparity (EOT), and EOT against jitter.

Every cell is stored as JSON in ``<out>/cells`` as soon as it is measured (defended weights in
``<out>/models``), so a killed run resumes where it stopped.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from ...attacks import PGD, Square
from ...attacks.universal import UniversalPerturbation
from ...fileio import atomic_write_json, atomic_write_text
from ...runs import Cells
from ...training.checkpoints import load_weights
from .attacks import stereo_attack
from .data import StereoDataset, motorcycle, synthetic_stereo
from .defense import DefenseConfig, defend_stereo, stereo_checks
from .metrics import stereo_metrics
from .physical import PairJitter, RandomPairTransform, fit_stereo_patch, fit_universal_tile, jittered_metrics, patch_metrics
from .pretrained import StereoSetup, pretrained_stereo, save_stereo_model
from .sgbm import SGBM, sgbm_oracle
from .train import UNREACHED, disparity_objective, evaluate_stereo, stereo_threat

log = logging.getLogger(__name__)

EPS = (0.005, 0.01, 0.02)
VARIANTS = {
    "undefended": None,
    "adversarial training": {},
    "+ LR consistency": {"lr_consistency": 0.1},
    "+ LLR": {"llr": 1.0},
    "+ both": {"lr_consistency": 0.1, "llr": 1.0},
}


def _metrics(model, data: StereoDataset, x: torch.Tensor | None = None) -> dict:
    m = evaluate_stereo(model, data, batch_size=4, x=x)
    return {"epe": m["epe"], "bad3": m["bad3"], "d1": m["d1"]}


def attack_table(model, datasets: dict[str, StereoDataset], cells: Cells, eps_values=EPS, steps: int = 10) -> dict:
    rows = {}
    for dname, data in datasets.items():
        rows[(dname, "clean", "-", 0.0)] = cells.get(f"attack-{dname}-clean", lambda: _metrics(model, data))
        for method in ("fgsm", "pgd"):
            for views in ("left", "right", "both", "consistent"):
                for eps in eps_values:
                    def run(method=method, views=views, eps=eps, data=data):
                        res = stereo_attack(model, data.x, data.disparity, data.mask, eps=eps, views=views,
                                            method=method, steps=steps)
                        return _metrics(model, data, res.x_adv)
                    rows[(dname, method, views, eps)] = cells.get(f"attack-{dname}-{method}-{views}-{eps}", run)
    return rows


def transfer_table(model, data: StereoDataset, cells: Cells, eps_values=EPS, square_queries: int = 500) -> dict:
    sgbm = SGBM(data.max_disp)

    def on_sgbm(x):
        m = stereo_metrics(sgbm(x), data.disparity, data.mask)
        return {"epe": m["epe"], "bad3": m["bad3"], "d1": m["d1"]}

    rows = {("clean", 0.0): cells.get("transfer-clean", lambda: on_sgbm(data.x))}
    for views in ("both", "consistent"):
        for eps in eps_values:
            def run(views=views, eps=eps):
                res = stereo_attack(model, data.x, data.disparity, data.mask, eps=eps, views=views, method="pgd")
                return {"net": _metrics(model, data, res.x_adv), "sgbm": on_sgbm(res.x_adv)}
            rows[(f"transfer-{views}", eps)] = cells.get(f"transfer-{views}-{eps}", run)
    for eps in eps_values:
        def black_box(eps=eps):
            oracle = sgbm_oracle(data.max_disp)
            res = Square(stereo_threat(eps, "both"), disparity_objective(UNREACHED), max_queries=square_queries,
                         early_stop=False)(oracle, data.x, (data.disparity, data.mask))
            out = on_sgbm(res.x_adv)
            out["queries_per_pair"] = square_queries
            return out
        rows[(f"square-{square_queries}", eps)] = cells.get(f"transfer-square{square_queries}-{eps}", black_box)
    return rows


def physical_table(model, setup: StereoSetup, val: StereoDataset, moto: StereoDataset, cells: Cells, eps: float = 0.02,
                   n_fit: int = 128) -> dict:
    """Universal tiles, patches at a disparity and EOT, each against a random baseline of the same size."""
    fit_data = synthetic_stereo(n_fit, setup.h, setup.w, setup.max_disp, seed=77)
    rows = {}

    def tiles():
        tile = fit_universal_tile(model, fit_data, eps=eps, tile=16, epochs=10)
        noise = UniversalPerturbation(eps * torch.sign(torch.randn(tile.delta.shape, generator=torch.Generator().manual_seed(0))),
                                      tile.threat, tiled=True)
        return {"fitted": {"synthetic": _metrics(model, val, tile.apply(val.x)), "motorcycle": _metrics(model, moto, tile.apply(moto.x))},
                "random_sign": {"synthetic": _metrics(model, val, noise.apply(val.x)), "motorcycle": _metrics(model, moto, noise.apply(moto.x))}}
    rows["tile"] = cells.get("physical-tile", tiles)

    def patches():
        jitter = PairJitter()
        out = {}
        for name, eot in (("fitted", False), ("fitted_eot", True)):
            patch = fit_stereo_patch(model, fit_data, size=16, epochs=10, lr=0.02, eot=eot).patch
            out[name] = {"static": patch_metrics(model, patch, val), "jittered": patch_metrics(model, patch, val, jitter=jitter)}
        rand = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        out["random"] = {"static": patch_metrics(model, rand, val), "jittered": patch_metrics(model, rand, val, jitter=jitter)}
        return out
    rows["patch"] = cells.get("physical-patch", patches)

    def eot():
        jitter = PairJitter()
        plain = stereo_attack(model, val.x, val.disparity, val.mask, eps=eps, views="both").x_adv
        attack = PGD(stereo_threat(eps, "both"), disparity_objective(UNREACHED), steps=10, step_size=eps / 4, early_stop=False, eot=5)
        robust = attack(RandomPairTransform(model, jitter), val.x, (val.disparity, val.mask)).x_adv
        return {"pgd10": {"static": _metrics(model, val, plain), "jittered": jittered_metrics(model, plain, val.disparity, val.mask, jitter)},
                "eot5_pgd10": {"static": _metrics(model, val, robust), "jittered": jittered_metrics(model, robust, val.disparity, val.mask, jitter)},
                "clean": {"jittered": jittered_metrics(model, val.x, val.disparity, val.mask, jitter)}}
    rows["eot"] = cells.get("physical-eot", eot)
    return rows


def defended_model(setup: StereoSetup, base, variant: str, seed: int, out: Path, steps: int, attack_steps: int):
    if VARIANTS[variant] is None:
        return base
    path = out / "models" / f"{variant.replace(' ', '_').replace('+', 'plus')}-seed{seed}.safetensors"
    model = copy.deepcopy(base)
    if path.exists():
        return load_weights(model, path).eval()
    cfg = DefenseConfig(steps=steps, attack_steps=attack_steps, seed=seed, **VARIANTS[variant])
    start = time.perf_counter()
    defend_stereo(model, setup.train_data(), cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_stereo_model(model, setup, path, variant=variant, seed=str(seed), seconds=f"{time.perf_counter() - start:.1f}")
    return model.eval()


def defence_table(setup: StereoSetup, base, val: StereoDataset, out: Path, cells: Cells, seeds=(0, 1, 2),
                  steps: int = 150, attack_steps: int = 3, eps: float = 0.02) -> dict:
    rows = {}
    transferred = None
    for variant in VARIANTS:
        for seed in seeds if VARIANTS[variant] is not None else (0,):
            def run(variant=variant, seed=seed):
                nonlocal transferred
                start = time.perf_counter()
                model = defended_model(setup, base, variant, seed, out, steps, attack_steps)
                train_s = time.perf_counter() - start
                if transferred is None:
                    transferred = stereo_attack(base, val.x, val.disparity, val.mask, eps=eps, views="both").x_adv
                adaptive = stereo_attack(model, val.x, val.disparity, val.mask, eps=eps, views="both", seed=seed)
                checks = stereo_checks(model, val, eps=eps, checks="all" if seed == 0 else "cheap")
                return {"clean": _metrics(model, val), "adaptive_pgd10": _metrics(model, val, adaptive.x_adv),
                        "transferred_from_undefended": _metrics(model, val, transferred),
                        "checks": checks.to_dict(), "finetune_seconds": round(train_s, 1)}
            rows[(variant, seed)] = cells.get(f"defence-{variant}-seed{seed}", run)
    return rows


def _fmt(m: dict) -> str:
    return f"{m['epe']:.2f} / {100 * m['bad3']:.1f}%"


def render_tables(attacks: dict, transfer: dict, defence: dict, physical: dict | None = None, eps_values=EPS) -> str:
    lines = ["## Attack table (EPE px / bad-3)", ""]
    datasets = sorted({k[0] for k in attacks}, key=lambda d: d != "synthetic")
    for dname in datasets:
        clean = attacks[(dname, "clean", "-", 0.0)]
        lines += [f"**{dname}**, clean: {_fmt(clean)}", "",
                  "| attack | views | " + " | ".join(f"eps {e}" for e in eps_values) + " |",
                  "|---|---|" + "---|" * len(eps_values)]
        for method in ("fgsm", "pgd"):
            for views in ("left", "right", "both", "consistent"):
                cells = [_fmt(attacks[(dname, method, views, e)]) for e in eps_values]
                lines.append(f"| {'FGSM' if method == 'fgsm' else 'PGD-10'} | {views} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Transfer to OpenCV SGBM (SGBM EPE px / bad-3)", "",
              f"SGBM clean: {_fmt(transfer[('clean', 0.0)])}", "",
              "| perturbation | " + " | ".join(f"eps {e}" for e in eps_values) + " |", "|---|" + "---|" * len(eps_values)]
    for kind in dict.fromkeys(k[0] for k in transfer if k[0] != "clean"):
        row = []
        for e in eps_values:
            v = transfer[(kind, e)]
            row.append(_fmt(v["sgbm"]) + f" (net {v['net']['epe']:.2f})" if "sgbm" in v else _fmt(v))
        label = {"transfer-both": "PGD-10 on the net, both views", "transfer-consistent": "PGD-10 on the net, consistent"}.get(
            kind, f"Square on SGBM ({kind.split('-')[1]} queries/pair)")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += ["", "## Defence ablation (EPE px; adaptive = PGD-10, eps 0.02, both views, re-optimised per model)", "",
              "| model | seeds | clean EPE | adaptive EPE | transferred EPE | checks | fine-tuning |",
              "|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        runs = [v for (name, _), v in defence.items() if name == variant]
        if not runs:
            continue

        def stat(key, runs=runs):
            vals = torch.tensor([r[key]["epe"] for r in runs])
            return f"{vals.mean():.2f}" + (f" ± {vals.std():.2f}" if len(vals) > 1 else "")
        warns = sum(c["verdict"] in ("warn", "fail") for r in runs for c in r["checks"])
        lines.append(f"| {variant} | {len(runs)} | {stat('clean')} | {stat('adaptive_pgd10')} | "
                     f"{stat('transferred_from_undefended')} | {'all pass' if not warns else f'{warns} warnings'} | "
                     f"{sum(r['finetune_seconds'] for r in runs) / len(runs):.0f} s |")
    if physical:
        t, p, e = physical["tile"], physical["patch"], physical["eot"]
        lines += ["", "## Physical-world perturbations (EPE px / bad-3, eps 0.02)", "",
                  "| perturbation | synthetic | motorcycle |", "|---|---|---|",
                  f"| universal 16x16 tile per view, fitted | {_fmt(t['fitted']['synthetic'])} | {_fmt(t['fitted']['motorcycle'])} |",
                  f"| random-sign tile, same eps | {_fmt(t['random_sign']['synthetic'])} | {_fmt(t['random_sign']['motorcycle'])} |",
                  "", "| 16x16 patch at disparity 8-24 px | EPE on the patch | scene EPE | on the patch, jittered | scene, jittered |",
                  "|---|---|---|---|---|"]
        for key, label in (("fitted", "fitted (random placements)"), ("fitted_eot", "fitted with EOT (placements + jitter)"),
                           ("random", "random texture")):
            st, jt = p[key]["static"], p[key]["jittered"]
            lines.append(f"| {label} | {st['patch_epe']:.2f} | {st['epe']:.2f} | {jt['patch_epe']:.2f} | {jt['epe']:.2f} |")
        lines += ["", "| attack | EPE, as crafted | mean EPE under 10 random jitters |", "|---|---|---|",
                  f"| none | - | {e['clean']['jittered']['epe']:.2f} |",
                  f"| PGD-10 | {e['pgd10']['static']['epe']:.2f} | {e['pgd10']['jittered']['epe']:.2f} |",
                  f"| EOT-5 PGD-10 | {e['eot5_pgd10']['static']['epe']:.2f} | {e['eot5_pgd10']['jittered']['epe']:.2f} |"]
    return "\n".join(lines) + "\n"


def reproduce(out: str | Path, setup: StereoSetup = StereoSetup(), seeds=(0, 1, 2), parts=("attacks", "transfer", "physical", "defence"),
              finetune_steps: int = 150) -> str:
    """Measure the tables (resuming from `out`), write ``tables.md`` and ``results.json``; return the markdown."""
    out = Path(out)
    cells = Cells(out / "cells")
    model = pretrained_stereo(setup)
    val = setup.val_data()
    moto = motorcycle("half")
    attacks = attack_table(model, {"synthetic": val, "motorcycle": moto}, cells) if "attacks" in parts else {}
    transfer = transfer_table(model, val, cells) if "transfer" in parts else {}
    physical = physical_table(model, setup, val, moto, cells) if "physical" in parts else {}
    defence = defence_table(setup, model, val, out, cells, seeds=seeds, steps=finetune_steps) if "defence" in parts else {}
    text = render_tables(attacks, transfer, defence, physical) if attacks and transfer and defence else ""
    atomic_write_json(out / "results.json", {"attacks": [[*k, v] for k, v in attacks.items()], "physical": physical,
                                             "transfer": [[*k, v] for k, v in transfer.items()],
                                             "defence": [[*k, v] for k, v in defence.items()]})
    if text:
        atomic_write_text(out / "tables.md", text)
    return text
