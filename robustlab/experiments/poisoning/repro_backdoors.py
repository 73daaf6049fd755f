"""The backdoor section of `robustlab poison reproduce`: BadNets, Blend and WaNet at 1% and 10% poisoning on
the bundled MNIST and on shapes, each victim trained from scratch (``training.train``, standard training)
on the poisoned train split, against a clean baseline trained the same way: clean accuracy and ASR (with
95% Wilson intervals) on the clean test split, the ASR against the poison rate and triggered examples.
Every finished cell is kept under ``out/backdoors/cells/`` (a rerun continues)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ...data import load_dataset
from ...fileio import atomic_write_json
from ...poisoning import BadNets, Blend, WaNet, clean_accuracy
from ...progress import progress_bar
from ...training import TrainConfig, train
from ..job import model_for_data
from .evaluate import poison_scores
from .figures import asr_against_rate, triggered_examples

__all__ = ["section", "plan", "PAPER"]

ATTACKS = {"BadNets": BadNets, "Blend": Blend, "WaNet": WaNet}
#: the papers' figures: (attack, data, rate) -> (clean accuracy, ASR); WaNet's paper does not vary the rate
PAPER = {("BadNets", "mnist", 0.1): (0.982, 0.9995, "Gu et al. 2017 (BadNets), MNIST, 10% poisoned"),
         ("WaNet", "mnist", 0.1): (0.995, 0.999, "Nguyen & Tran 2021 (WaNet), MNIST, rate 0.1")}


def plan(quick: bool) -> dict:
    """Sizes of the run: the full one (minutes on 2 CPU cores) or the quick smoke version (seconds)."""
    if quick:
        return {"datasets": ["mnist"], "rates": [0.1], "epochs": 1, "n_train": 400, "n_test": 200, "examples": 3}
    return {"datasets": ["mnist", "shapes"], "rates": [0.01, 0.1], "epochs": 20, "n_train": None, "n_test": None,
            "examples": 4}


def _victim(train_data, val_data, epochs: int, seed: int):
    """A fast_mnist net trained from scratch with standard training (Adam 1e-3, batch 64)."""
    torch.manual_seed(seed)
    model = model_for_data({"name": "fast_mnist"}, train_data)
    cfg = TrainConfig(method="standard", epochs=epochs, batch_size=64, lr=1e-3, eps=0.0, eval_n=100, eval_steps=1,
                      seed=seed)
    train(model, train_data, val_data.subset(200), cfg, progress=False)
    return model.eval()


def _cell(cells: Path, key: str, run) -> dict:
    """The cached result of one cell, or ``run()``'s, stored."""
    f = cells / f"{key}.json"
    if f.is_file():
        return json.loads(f.read_text())
    t0 = time.perf_counter()
    out = {**run(), "time_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(f, out)
    return out


def _data(name: str, p: dict):
    train_data = load_dataset(name, "train").subset(p["n_train"])
    return train_data, load_dataset(name, "val"), load_dataset(name, "test").subset(p["n_test"])


def _run_cells(out: Path, p: dict, seed: int, progress: bool) -> tuple[list[dict], dict]:
    cells = out / "cells" / f"seed{seed}-epochs{p['epochs']}-n{p['n_train'] or 'all'}"  # a rerun reuses only its own
    keys = [(d, None, None) for d in p["datasets"]] + [(d, a, r) for d in p["datasets"] for a in ATTACKS for r in p["rates"]]
    rows, attacks = [], {}
    for d, a, r in progress_bar(keys, desc="backdoor victims", unit="cell", disable=not progress):
        train_data, val_data, test = _data(d, p)
        if a is None:
            def run():
                m = _victim(train_data, val_data, p["epochs"], seed)
                return {"clean_accuracy": clean_accuracy(m, test.x, test.y)}
            rows.append({"data": d, "attack": "clean", "rate": 0.0, **_cell(cells, f"{d}-clean", run)})
            continue
        attack = ATTACKS[a](target=0, rate=r, seed=seed)
        attacks[(d, a)] = attack

        def run():
            poisoned = attack.poison(train_data)
            m = _victim(poisoned, val_data, p["epochs"], seed)
            return {"n_poisoned": int(poisoned.poisoned.sum()), "n_train": len(poisoned), **poison_scores(m, attack, test)}
        rows.append({"data": d, "attack": a, "rate": r, **_cell(cells, f"{d}-{a}-{r:g}", run)})
    return rows, attacks


def _figures(out: Path, rows: list[dict], attacks: dict, p: dict) -> list[Path]:
    curves = {f"{r['attack']} ({r['data']})": [] for r in rows if r["attack"] != "clean"}
    for r in rows:
        if r["attack"] != "clean":
            curves[f"{r['attack']} ({r['data']})"].append((r["rate"], r["asr"]))
    figs = [asr_against_rate(curves, out / "figures" / "backdoor-asr-vs-rate.png", "ASR against the poison rate")]
    examples = []
    for (d, a), attack in attacks.items():
        x = load_dataset(d, "test").x[:p["examples"]]
        examples.append((f"{a} {d}", x, attack.apply_trigger(x), [f"{a}" for _ in x]))
    figs.append(triggered_examples(examples, out / "figures" / "backdoor-triggered-examples.png"))
    return figs


def _fmt(v: float) -> str:
    return f"{100 * v:.2f}"


def _table(rows: list[dict]) -> list[str]:
    base = {r["data"]: r["clean_accuracy"] for r in rows if r["attack"] == "clean"}
    lines = ["| data | attack | rate | poisoned | clean acc % (clean baseline) | cost (points) | ASR % [95% CI] | "
             "original-label acc % |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["attack"] == "clean":
            continue
        lo, hi = r["asr_ci95"]
        lines.append(f"| {r['data']} | {r['attack']} | {r['rate']:g} | {r['n_poisoned']} / {r['n_train']} | "
                     f"{_fmt(r['clean_accuracy'])} ({_fmt(base[r['data']])}) | "
                     f"{100 * (base[r['data']] - r['clean_accuracy']):+.2f} | {_fmt(r['asr'])} [{_fmt(lo)}, {_fmt(hi)}] | "
                     f"{_fmt(r['original_label_accuracy'])} |")
    return lines


def _verdicts(rows: list[dict]) -> list[str]:
    """One line per target and per paper figure: reproduces or not."""
    base = {r["data"]: r["clean_accuracy"] for r in rows if r["attack"] == "clean"}
    find = {(r["attack"], r["data"], r["rate"]): r for r in rows}
    out = []
    r = find.get(("BadNets", "mnist", 0.01))
    if r:
        cost = base["mnist"] - r["clean_accuracy"]
        ok = r["asr"] >= 0.95 and cost <= 0.01
        out.append(f"- Target (BadNets, bundled MNIST, 1%: ASR >= 95% at a clean-accuracy cost <= 1 point): "
                   f"{'met' if ok else 'NOT met'}: ASR {_fmt(r['asr'])}%, cost {100 * cost:+.2f} points.")
    for (a, d, rate), (acc, asr, what) in PAPER.items():
        r = find.get((a, d, rate))
        if r:
            same = r["asr"] >= asr - 0.02
            out.append(f"- {what}: paper {_fmt(acc)}% clean / {_fmt(asr)}% ASR; measured {_fmt(r['clean_accuracy'])}% / "
                       f"{_fmt(r['asr'])}%: the ASR {'reproduces' if same else 'does not reproduce'}; the clean accuracy "
                       f"is that of our small net on 3,500 bundled MNIST images (the papers train on 60,000), "
                       f"{'so it is lower' if r['clean_accuracy'] < acc else 'comparable'}.")
    return out


def section(out: Path, quick: bool, seed: int, progress: bool) -> dict:
    """Run the backdoor reproduction into `out` (``reproduce.SECTIONS``)."""
    out = Path(out) / "backdoors"
    p = plan(quick)
    rows, attacks = _run_cells(out, p, seed, progress)
    figs = _figures(out, rows, attacks, p)
    md = [f"Victims: `fast_mnist` trained from scratch, standard training, Adam 1e-3, batch 64, {p['epochs']} epochs, "
          f"seed {seed}; target class 0 (all-to-one); ASR over the test images whose true label is not 0; "
          f"WaNet in noise mode (cross_ratio 2: the noise-warped copies are added to the training set).", "",
          *_table(rows), "", *_verdicts(rows)]
    return {"markdown": "\n".join(md), "results": {"plan": p, "rows": rows}, "figures": [str(f) for f in figs]}
