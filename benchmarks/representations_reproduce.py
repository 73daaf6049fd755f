"""Robust representations at small scale on the bundled MNIST (issue 12).

    OMP_NUM_THREADS=1 python benchmarks/representations_reproduce.py [--epochs 3] [--n 500]

Trains (resumably, under --root) a FastMNISTNet family with `robustlab sweep eps`: standard
training, PGD-AT (Linf) at eps 0.01 / 0.05 / 0.1 / 0.2 / 0.3 and TRADES beta 1 / 6 at eps 0.3, plus
an on-manifold adversarially trained model (VAE latent PGD) and, for the held-out-class probe, a
standard and a PGD-AT(0.3) model trained on digits 0-4 only. Then measures, per model: clean and
robust accuracy (the trade-off and its Pareto front), gradient / SmoothGrad alignment with 95% CIs,
inversion fidelity, class-interpolation and synthesis success, linear CKA between all models'
penultimate layers, linear-probe accuracy on `digits` (resized to 28x28) and on held-out MNIST
classes, and on- vs off-manifold robustness. Writes a markdown table (--out) and figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustlab import ThreatModel, load_dataset  # noqa: E402
from robustlab.attacks import PGD  # noqa: E402
from robustlab.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from robustlab.models import FastMNISTNet  # noqa: E402
from robustlab.representations import (features, linear_cka, linear_probe, on_off_manifold, pretrained_vae,  # noqa: E402
                                       save_grid, split_classes)
from robustlab.runs.job import load_model_from_run, train_model_run  # noqa: E402
from robustlab.runs.represent import analyse  # noqa: E402
from robustlab.runs.sweeps import sweep_eps  # noqa: E402
from robustlab.training import METHODS, TrainConfig, train  # noqa: E402
from robustlab.training.manifold import on_manifold  # noqa: E402

log = logging.getLogger("representations_reproduce")


def pgd_acc(model, data, eps, steps=20):
    res = PGD(ThreatModel("linf", eps), "ce", steps=steps)(model, data.x, data.y)
    with torch.no_grad():
        ok = model(data.x).argmax(1) == data.y
    return float((ok & ~res.success).float().mean())


def held_out_probe(root: Path, eps: float, epochs: int, seed: int = 0) -> dict:
    """Train on digits 0-4 (standard if eps == 0, else PGD-AT), probe the penultimate layer on 5-9."""
    tr_all, te_all = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    path = root / f"heldout-eps{eps:g}.safetensors"
    model = FastMNISTNet(num_classes=5)
    from robustlab.training import load_weights, save_weights

    if path.exists():
        load_weights(model, path)
    else:
        torch.manual_seed(seed)
        cfg = TrainConfig(method="pgd" if eps > 0 else "standard", epochs=epochs, eps=eps if eps > 0 else 0.3,
                          eps_warmup_epochs=1 if eps > 0 else 0, eval_n=200, seed=seed)
        train(model, split_classes(tr_all, range(5)), None, cfg, progress=False)
        save_weights(model, path)
    model.eval()
    res = linear_probe(model, split_classes(tr_all, range(5, 10)), split_classes(te_all, range(5, 10)))
    return {"eps": eps, "probe_acc_5_9": res.accuracy,
            "clean_acc_0_4": float((model(split_classes(te_all, range(5)).x).argmax(1) ==
                                    split_classes(te_all, range(5)).y).float().mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/representations-reproduce")
    ap.add_argument("--out", default="benchmarks/representations_results.md")
    ap.add_argument("--figures", default="benchmarks/figures/representations")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n", type=int, default=500, help="test points for accuracies, alignment and CKA")
    ap.add_argument("--eps", default="0,0.01,0.05,0.1,0.2,0.3")
    ap.add_argument("--betas", default="1,6")
    ap.add_argument("--eta", type=float, default=0.5, help="latent Linf radius of the on-manifold attack")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    root = Path(args.root)
    eps_list = [float(e) for e in args.eps.split(",")]
    betas = [float(b) for b in args.betas.split(",") if b]
    train_cfg = {"epochs": args.epochs, "lr": 1e-3, "optimizer": "adam", "attack_steps": 10, "eval_n": 200,
                 "eps_warmup_epochs": 1.0, "seed": 0}
    data_spec = {"name": "mnist", "seed": 0}
    sweep_eps(root / "sweep", {"name": "fast_mnist"}, data_spec, train_cfg, eps_list, betas, 0.3, 0.3, "fast",
              eval_n=args.n, resume=True, progress=False)
    rows = json.loads((root / "sweep" / "sweep.json").read_text())["rows"]
    # on-manifold adversarial training (registered here; see training/manifold.py)
    METHODS.setdefault("on_manifold", on_manifold)
    om_dir = root / "on-manifold-at"
    om_summary = train_model_run(om_dir, {"name": "fast_mnist"}, data_spec, {**train_cfg, "method": "on_manifold", "eps": 0.3},
                                 resume=True, progress=False)
    models = {r["name"]: Path(r["run"]) for r in rows}
    models["on-manifold-at"] = om_dir
    test = load_dataset("mnist", "test").subset(args.n)
    train_data = load_dataset("mnist", "train")
    loaded = {k: load_model_from_run(p)[0] for k, p in models.items()}
    fig_dir = root / "figures"
    vae = pretrained_vae()
    judges = {"std": loaded["pgd-eps0"], "pgd0.3": loaded["pgd-eps0.3"]}  # who recognises the synthesised digits
    results = {}
    for name, model in loaded.items():
        cache = root / "analyses" / f"{name}.json"
        if cache.exists():
            results[name] = json.loads(cache.read_text())
            continue
        t0 = time.perf_counter()
        key = name in ("pgd-eps0", "pgd-eps0.3")
        analyses = ["alignment", "inversion", "probe", "interpolation"] + (["saliency"] if key else [])
        out = analyse(model, test, train_data, analyses, fig_dir, args.n, tag=f"-{name}",
                      settings={"inversion_steps": 300, "judges": judges})
        out["manifold"] = on_off_manifold(model, vae, test.subset(300), eta=args.eta, eps=0.1)
        out["pgd_acc_0.1"] = pgd_acc(model, test, 0.1)
        out["time_s"] = time.perf_counter() - t0
        atomic_write_json(cache, out)
        results[name] = out
        log.info("%s analysed in %.0fs", name, out["time_s"])
    # generalisation gap on the full splits (train 3,500 vs test 1,000 images)
    test_full = load_dataset("mnist", "test")
    for name, model in loaded.items():
        with torch.no_grad():
            tr = float((model(train_data.x).argmax(1) == train_data.y).float().mean())
            te = float((model(test_full.x).argmax(1) == test_full.y).float().mean())
        results[name]["gap"] = {"train_acc": tr, "test_acc": te, "generalization_gap": tr - te}
    # CKA between every model's penultimate layer, and layer x layer standard vs robust
    names = list(loaded)
    reps = {k: features(m, test.x, "penultimate") for k, m in loaded.items()}
    cka = [[linear_cka(reps[a], reps[b]) for b in names] for a in names]
    layers = ["features.1", "features.3", "penultimate", "logits"]
    std, rob = loaded["pgd-eps0"], loaded["pgd-eps0.3"]
    layer_cka = [[linear_cka(features(std, test.x, a), features(rob, test.x, b)) for b in layers] for a in layers]
    heldout = [held_out_probe(root, e, args.epochs) for e in (0.0, 0.3)]
    # saliency comparison grid: image, standard gradient, robust gradient
    from robustlab.representations import saliency, signed_map

    idx = torch.tensor([int((test.y == c).nonzero()[0]) for c in range(10)])
    x, y = test.x[idx], test.y[idx]
    grid = torch.stack([x, signed_map(saliency(std, x, y)), signed_map(saliency(rob, x, y)),
                        signed_map(saliency(std, x, y, "smoothgrad")), signed_map(saliency(rob, x, y, "smoothgrad"))])
    save_grid(grid, fig_dir / "saliency-standard-vs-robust.png",
              ["image", "grad std", "grad PGD-0.3", "SG std", "SG PGD-0.3"], [str(int(v)) for v in y])
    summary = {"rows": rows, "results": results, "cka_names": names, "cka": cka, "layers": layers,
               "layer_cka_std_vs_robust": layer_cka, "heldout_probe": heldout, "on_manifold_at": om_summary,
               "settings": {**vars(args), "train": train_cfg}, "time_s": time.perf_counter() - t_start,
               "threads": torch.get_num_threads()}
    atomic_write_json(root / "results.json", summary)
    fig_out = Path(args.figures)
    fig_out.mkdir(parents=True, exist_ok=True)
    for f in ["saliency-standard-vs-robust.png", "repr-interpolation-pgd-eps0.png", "repr-interpolation-pgd-eps0.3.png",
              "repr-inversion-pgd-eps0.png", "repr-inversion-pgd-eps0.3.png", "repr-synthesis-pgd-eps0.png",
              "repr-synthesis-pgd-eps0.3.png"]:
        if (fig_dir / f).exists():
            shutil.copy(fig_dir / f, fig_out / f)
    shutil.copy(root / "sweep" / "figures" / "pareto.png", fig_out / "pareto.png")
    atomic_write_text(args.out, render(summary))
    print(Path(args.out).read_text())
    return 0


def _ci(d):
    return f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def render(s: dict) -> str:
    rows = {r["name"]: r for r in s["rows"]}
    lines = ["# Robust representations on the bundled MNIST (small scale)", "",
             f"`python benchmarks/representations_reproduce.py --epochs {s['settings']['epochs']} --n {s['settings']['n']}`; "
             f"FastMNISTNet, {s['settings']['epochs']} epochs (Adam 1e-3, eps warm-up 1 epoch, PGD-AT 10 steps), "
             f"3,500 training images; test numbers on {s['settings']['n']} test images. Robust accuracy: APGD-CE + APGD-T "
             "('fast' suite, 20 iterations) at Linf 0.3, and PGD-20 at Linf 0.1. Alignment: |<x, g>|/(||x|| ||g||) of the "
             "true-class logit gradient (Etmann et al. 2019), mean [95% t-interval]. Inversion: relative penultimate "
             "distance reached from noise (300 L2 steps), the Pearson correlation of the inversion's pixels with the target image's (pixel corr), and "
             "whether the result is classified as the target's class. Synthesis: Gaussian class seeds + targeted L2 PGD "
             "(eps 8, 60 steps) per model, success on that model, and the accuracy of the standard and the PGD-AT-0.3 "
             "model on those images (judges). Interpolation: targeted L2 PGD-40 to class y+1 at eps 8, 4 images. "
             f"Manifold: VAE latent Linf eta={s['settings']['eta']} (on) vs pixel PGD Linf 0.1 (off), 300 points. "
             f"This invocation: {s['time_s'] / 60:.1f} min on one thread (shared machine, under load; trained cells and "
             "finished analyses under --root are reused; a fresh run took 18 min here).", "",
             "| model | clean | robust@0.3 [CI] | PGD@0.1 | align grad | align SmoothGrad | edge corr | inv dist (noise) | inv pixel corr | inv same class | synth success | synth acc (std judge / PGD-0.3 judge) | interp success eps=8 | probe digits | on-manifold rob | off-manifold rob | recon acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in s["results"].items():
        row = rows.get(name, {})
        al = r["alignment"]
        inv = r["inversion"]
        interp = r.get("interpolation", {}).get("success_rate", [None])[-1]
        m = r["manifold"]
        rob = f"{row['robust_acc']:.3f} [{row['robust_acc_ci95'][0]:.2f}, {row['robust_acc_ci95'][1]:.2f}]" if row else "-"
        lines.append(
            f"| {name} | {row.get('clean_acc', m['clean_acc']):.3f} | {rob} | {r['pgd_acc_0.1']:.3f} | {_ci(al['gradient']['alignment'])} | "
            f"{_ci(al['smoothgrad']['alignment'])} | {_ci(al['gradient']['edge_correlation'])} | "
            f"{inv['from_noise']['distance_mean']:.3f} | {inv['from_noise'].get('image_correlation_mean', float('nan')):.3f} | "
            f"{inv['from_noise']['classified_as_target']:.2f} | {inv['synthesis']['success_rate']:.2f} | "
            f"{inv['judges']['std']['synthesis_acc']:.2f} / {inv['judges']['pgd0.3']['synthesis_acc']:.2f} | "
            f"{'-' if interp is None else f'{interp:.2f}'} | "
            f"{r['probe']['accuracy']:.3f} | {m['on_manifold_robust_acc']:.3f} | {m['off_manifold_robust_acc']:.3f} | {m['recon_acc']:.3f} |")
    lines += ["", "Pareto front (clean vs robust@0.3): " + ", ".join(r["name"] for r in s["rows"] if r.get("pareto")), "",
              "## Linear CKA between penultimate layers (test set)", "",
              "| | " + " | ".join(s["cka_names"]) + " |", "|---" * (len(s["cka_names"]) + 1) + "|"]
    for n, row in zip(s["cka_names"], s["cka"]):
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines += ["", "## Layer x layer CKA, standard (rows) vs PGD-AT 0.3 (columns)", "",
              "| | " + " | ".join(s["layers"]) + " |", "|---" * (len(s["layers"]) + 1) + "|"]
    for n, row in zip(s["layers"], s["layer_cka_std_vs_robust"]):
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines += ["", "## Held-out classes: trained on digits 0-4, linear probe on 5-9", "", "| training eps | clean acc 0-4 | probe acc 5-9 |",
              "|---|---|---|"]
    for h in s["heldout_probe"]:
        lines.append(f"| {h['eps']:g} | {h['clean_acc_0_4']:.3f} | {h['probe_acc_5_9']:.3f} |")
    lines += ["", "## Generalisation gap (clean accuracy on all 3,500 training vs all 1,000 test images) and on-manifold robustness",
              "", "| model | train acc | test acc | gap | on-manifold robust acc | off-manifold robust acc |", "|---|---|---|---|---|---|"]
    for name, r in s["results"].items():
        g = r["gap"]
        lines.append(f"| {name} | {g['train_acc']:.3f} | {g['test_acc']:.3f} | {g['generalization_gap']:.3f} | "
                     f"{r['manifold']['on_manifold_robust_acc']:.3f} | {r['manifold']['off_manifold_robust_acc']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
