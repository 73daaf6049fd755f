"""The detectors section of `robustlab poison reproduce`: every detector on every backdoor.

On the bundled MNIST (train split 3,500 images), each backdoor (BadNets, Blend, WaNet; target class 0) poisons
as many images as 10% of the target class's size (Tran et al. 2018's setting: 35 images, 1% of the set),
a ``fast_mnist`` victim is trained on the poisoned set, and each detector is scored against the true poisons
(precision, recall, FPR): Activation Clustering, Spectral Signatures at the penultimate layer and at the
flattened convolutional features, STRIP and Neural Cleanse (held-out clean images: the validation split);
Fine-Pruning (pruned on the validation split, fine-tuned on it) is scored by clean accuracy and ASR before and
after. A victim trained on the clean set checks that AC and SS flag only a minority of clean data.
``quick``: a 600-image, 1-epoch smoke version (minutes).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ...data import Dataset, load_dataset
from ...models import create_model
from ...poisoning.detectors import ActivationClustering, FinePruning, NeuralCleanse, SpectralSignatures, STRIP
from ...training import TrainConfig, train
from ...weights import load_weights, save_weights
from .detect import score_histogram

__all__ = ["section", "FULL", "QUICK"]

FULL = {"n": None, "epochs": 20, "nc_steps": 300, "strip_n": 20, "fine_tune_epochs": 5}
QUICK = {"n": 600, "epochs": 1, "nc_steps": 10, "strip_n": 4, "fine_tune_epochs": 1}
TARGET = 0
#: the layers Spectral Signatures reads on fast_mnist: the input of the classifier, and the flattened output
#: of the convolutional stack (32 x 7 x 7 = 1568 dimensions)
SS_LAYERS = {"penultimate": None, "conv": "features"}


def _victim(data: Dataset, epochs: int, seed: int, progress: bool, cache: Path) -> torch.nn.Module:
    """A fast_mnist trained on `data` (Adam 1e-3, batch 64), or its weights cached at `cache` by an earlier run."""
    torch.manual_seed(seed)
    model = create_model("fast_mnist")
    if cache.is_file():
        return load_weights(model, cache).eval()
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, eps=0.0, eval_n=64, eval_steps=1, seed=seed)
    train(model, data, None, cfg, progress=progress)
    save_weights(model, cache)
    return model.eval()


def _cache(out: Path, tag: str, s: dict, seed: int) -> Path:
    """Where a victim's weights are cached: keyed by its data, seed, epochs and size, so a rerun with other
    settings trains its own."""
    return Path(out) / "victims" / f"{tag}-seed{seed}-epochs{s['epochs']}-n{s['n'] or 'all'}.safetensors"


def _backdoor_numbers(model, attack, test: Dataset) -> dict:
    """Clean accuracy on the test split and the ASR on its triggered images whose label is not the target."""
    with torch.no_grad():
        clean = float((model(test.x).argmax(1) == test.y).float().mean())
        keep = test.y != TARGET
        asr = float((model(attack.apply_trigger(test.x[keep])).argmax(1) == TARGET).float().mean())
    return {"clean_accuracy": clean, "asr": asr}


def _detectors(clean: Dataset, s: dict, seed: int) -> dict:
    out = {"AC": ActivationClustering(seed=seed)}
    out.update({f"SS ({k})": SpectralSignatures(layer=v) for k, v in SS_LAYERS.items()})
    out["STRIP"] = STRIP(clean=clean.x, n=s["strip_n"], frr=0.05, seed=seed)
    out["NC"] = NeuralCleanse(clean=clean.x, steps=s["nc_steps"], batch_size=64, seed=seed)
    return out


def _detect_all(model, poisoned, clean: Dataset, s: dict, seed: int, figures: Path, tag: str) -> tuple[dict, list]:
    rows, figs = {}, []
    for name, det in _detectors(clean, s, seed).items():
        t0 = time.perf_counter()
        report = det.detect(model, poisoned.x, poisoned.y)
        rows[name] = {**report.evaluate(poisoned.poisoned), "time_s": round(time.perf_counter() - t0, 1)}
        if name == "NC":
            rows[name]["flagged_targets"] = report.details["flagged_targets"]
            rows[name].update({k: report.details[k] for k in ("norms", "anomaly_index", "success")})
        slug = name.lower().replace(" ", "-").replace("(", "").replace(")", "")
        figs.append(score_histogram(report.scores, poisoned.poisoned, figures / f"detect-{tag}-{slug}.png",
                                    f"{name} on {tag}", report.is_poison))
    return rows, figs


def _fine_pruning(model, attack, clean: Dataset, test: Dataset, s: dict, seed: int, progress: bool) -> dict:
    cfg = TrainConfig(epochs=s["fine_tune_epochs"], batch_size=64, lr=1e-4, eps=0.0, eval_n=64, eval_steps=1,
                      seed=seed)
    before = _backdoor_numbers(model, attack, test)
    record = FinePruning(clean=clean, max_drop=0.04).defend(model, lambda m: train(m, clean, None, cfg,
                                                                                    progress=progress))
    after = _backdoor_numbers(model.eval(), attack, test)
    return {"pruned": f"{record['pruned']}/{record['channels']}", "clean_before": before["clean_accuracy"],
            "asr_before": before["asr"], "clean_after": after["clean_accuracy"], "asr_after": after["asr"]}


def _backdoors(n_target: int, n: int) -> dict:
    from ...poisoning.backdoors import BadNets, Blend, WaNet

    rate = round(0.1 * n_target) / n  # poisons = 10% of the target class's size
    return {"BadNets": BadNets(target=TARGET, rate=rate), "Blend": Blend(target=TARGET, rate=rate),
            "WaNet": WaNet(target=TARGET, rate=rate)}


def _clean_check(train_set: Dataset, s: dict, seed: int, progress: bool, cache: Path) -> dict:
    """AC and SS on a victim trained on clean data: the share of the set each flags."""
    model = _victim(train_set, s["epochs"], seed, progress, cache)
    out = {}
    for name, det in (("AC", ActivationClustering(seed=seed)), ("SS (penultimate)", SpectralSignatures())):
        out[name] = float(det.detect(model, train_set.x, train_set.y).is_poison.float().mean())
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _markdown(results: dict) -> str:
    """The section's tables (``reproduce`` adds the heading, the date and the command)."""
    lines = ["Bundled MNIST, `fast_mnist` victims, poisons = 10% of the target class's size, target 0.", "",
             "| backdoor | clean acc % | ASR % | detector | precision % | recall % | FPR % | flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for bd, r in results["backdoors"].items():
        for det, m in r["detectors"].items():
            lines.append(f"| {bd} | {_pct(r['clean_accuracy'])} | {_pct(r['asr'])} | {det} | {_pct(m['precision'])} "
                         f"| {_pct(m['recall'])} | {_pct(m['fpr'])} | {m['flagged']}/{m['n']} |")
    lines += ["", "Fine-Pruning (pruned and fine-tuned on the 500 validation images):", "",
              "| backdoor | pruned channels | clean acc before % | ASR before % | clean acc after % | ASR after % |",
              "|---|---|---|---|---|---|"]
    for bd, r in results["backdoors"].items():
        f = r["fine_pruning"]
        lines.append(f"| {bd} | {f['pruned']} | {_pct(f['clean_before'])} | {_pct(f['asr_before'])} "
                     f"| {_pct(f['clean_after'])} | {_pct(f['asr_after'])} |")
    c = results["clean"]
    lines += ["", f"On a clean training set, AC flags {_pct(c['AC'])}% and SS {_pct(c['SS (penultimate)'])}% of the "
              "images (a minority, as it must be)."]
    return "\n".join(lines) + "\n"


def section(out: Path, quick: bool, seed: int, progress: bool) -> dict:
    """Every detector on every backdoor; returns {"markdown", "results", "figures"}."""
    s = QUICK if quick else FULL
    train_set = load_dataset("mnist", "train", seed=seed).subset(s["n"])
    clean, test = load_dataset("mnist", "val", seed=seed), load_dataset("mnist", "test", seed=seed)
    results, figures = {"settings": s, "backdoors": {}}, []
    for name, attack in _backdoors(int((train_set.y == TARGET).sum()), len(train_set)).items():
        poisoned = attack.poison(train_set, seed=seed)
        model = _victim(poisoned, s["epochs"], seed, progress, _cache(out, name.lower(), s, seed))
        rows, figs = _detect_all(model, poisoned, clean, s, seed, Path(out) / "figures", name.lower())
        results["backdoors"][name] = {**_backdoor_numbers(model, attack, test), "poisons": int(poisoned.poisoned.sum()),
                                      "detectors": rows,
                                      "fine_pruning": _fine_pruning(model, attack, clean, test, s, seed, progress)}
        figures += figs
    results["clean"] = _clean_check(train_set, s, seed, progress, _cache(out, "clean", s, seed))
    return {"markdown": _markdown(results), "results": results, "figures": [str(f) for f in figures]}
