"""`robustlab represent RUN --analyses ...`: representation analyses of a trained model run.

Writes ``representations.json`` (every number with its settings) and figures
``figures/repr-*.png`` into the run directory, plus a small ``representations.html`` page. With
``compare=[RUN, ...]`` the CKA analysis also compares the penultimate representation with the other
runs' models (standard vs robust).

Analyses: ``saliency`` (grid of gradient / SmoothGrad / integrated-gradient maps), ``alignment``
(Etmann et al. alignment and edge correlation, means with 95% CIs), ``interpolation`` (targeted L2
attacks over eps, a strip per image), ``inversion`` (inversion from noise and from another image,
feature visualisation, class-conditional synthesis), ``cka`` (layer x layer, and across runs),
``probe`` (linear probe on `digits` resized to the run's input size, and the network fine-tuned
with that head: both accuracies), ``manifold`` (on- vs off-manifold robustness with the cached
class-conditional VAE, or the unconditional one with ``settings["conditional_vae"] = False``;
mnist-shaped data only).
"""
from __future__ import annotations

import html
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from pydantic import Field

from ..data import Dataset, in_memory, load_dataset
from ..errors import InputError
from ..fileio import atomic_write_json, atomic_write_text
from ..models.vae import VAEConfig, pretrained_vae
from ..representations import (ClassGaussian, alignment, class_interpolation, invert, linear_cka,
                               linear_probe, noise_seed, on_off_manifold, resize, saliency, save_grid,
                               signed_map, synthesize, visualize_feature)
from ..representations.layers import features, last_linear
from .job import ModelRunSource, load_model_from_run, load_split, on_device, parse_data_spec
from ..runs.rundir import Run, split_run_dir
from ..runtime import device_of, device_record, eval_mode, resolve_device

log = logging.getLogger(__name__)

ANALYSES = ("saliency", "alignment", "interpolation", "inversion", "cka", "probe", "manifold")
DEFAULT_ANALYSES = ("saliency", "alignment", "interpolation", "inversion", "cka", "probe")


class RepresentSettings(ModelRunSource):
    """``robustlab represent RUN``: which analyses, on how many points, and their own settings."""

    analyses: list[str] = Field(list(DEFAULT_ANALYSES), description=f"analyses, from: {', '.join(ANALYSES)}")
    compare: list[str] = Field([], description="other model runs for CKA (e.g. standard vs robust)",
                               json_schema_extra={"nargs": "*"})
    n: int = Field(500, ge=1, description="test points for alignment and CKA")
    inversion_steps: int = Field(300, ge=1, description="inversion: optimisation steps")
    eta: float = Field(0.5, ge=0, description="latent Linf radius of the on-manifold attack")
    conditional_vae: bool = Field(True, description="manifold: use the unconditional VAE (default: the "
                                  "class-conditional one, Stutz et al.)", json_schema_extra={"negative_flag": "--unconditional-vae"})
    finetune: bool = Field(True, description="probe: only the linear probe, no fine-tuning",
                           json_schema_extra={"negative_flag": "--no-finetune"})
    finetune_epochs: int = Field(3, ge=0, description="probe: epochs of fine-tuning (Adam)")
    finetune_lr: float = Field(1e-4, gt=0, description="probe: learning rate of fine-tuning")

    def analysis_settings(self) -> dict:
        """The analyses' own settings (``represent_run``'s ``settings``)."""
        return self.model_dump(include={"inversion_steps", "eta", "conditional_vae", "finetune", "finetune_epochs",
                                        "finetune_lr"})


def _by_class(data: Dataset, k: int) -> torch.Tensor:
    """Indices of the first test point of each class (up to k points)."""
    out = []
    for c in range(data.num_classes):
        hit = (data.y == c).nonzero().flatten()
        if hit.numel():
            out.append(int(hit[0]))
    return torch.tensor(out[:k])


def do_saliency(model, test: Dataset, fig_dir: Path, n_show: int = 6, tag: str = "") -> dict:
    idx = _by_class(test, n_show)
    x, y = test.x[idx], test.y[idx]
    maps = {m: saliency(model, x, y, m) for m in ("gradient", "smoothgrad", "integrated")}
    grid = torch.stack([x] + [signed_map(maps[m]).expand_as(x) if x.shape[1] > 1 else signed_map(maps[m]) for m in maps])
    path = save_grid(grid, fig_dir / f"repr-saliency{tag}.png", ["image", *maps], [str(int(v)) for v in y],
                     "saliency of the true-class logit (grey = 0)")
    return {"figure": path.name, "n": int(len(idx)),
            "mean_abs": {m: float(a.abs().mean()) for m, a in maps.items()}}


def do_alignment(model, test: Dataset, n: int, methods: Sequence[str] = ("gradient", "smoothgrad")) -> dict:
    x, y = test.x[:n], test.y[:n]
    return {m: alignment(model, x, y, m).summary() for m in methods}


def do_interpolation(model, test: Dataset, fig_dir: Path, eps: Sequence[float] = (0, 1, 2, 3, 4, 6, 8),
                     steps: int = 40, n_show: int = 4, tag: str = "") -> dict:
    idx = _by_class(test, n_show)
    x, y = test.x[idx], test.y[idx]
    target = (y + 1) % test.num_classes
    out = class_interpolation(model, x, target, list(eps), steps=steps)
    grid = out["frames"].transpose(0, 1)  # rows = images, cols = eps
    path = save_grid(grid, fig_dir / f"repr-interpolation{tag}.png", [f"{int(a)}->{int(b)}" for a, b in zip(y, target)],
                     [f"eps={e:g}" for e in eps], "targeted L2 PGD over eps")
    return {"figure": path.name, "eps": list(map(float, eps)), "steps": steps,
            "target_prob_mean": [float(p.mean()) for p in out["prob"]],
            "success_rate": [float(s.float().mean()) for s in out["success"]]}


def do_inversion(model, test: Dataset, train: Dataset, fig_dir: Path, n: int = 10, steps: int = 300,
                 step_size: float = 0.1, synth_eps: float = 8.0, tag: str = "",
                 judges: dict[str, nn.Module] | None = None) -> dict:
    """Inversion, feature visualisation and synthesis. ``judges``: other models whose accuracy on the
    synthesised images (w.r.t. the intended class) and on the inversions (w.r.t. the target's label)
    measures whether the images carry the class for someone else than the model that made them."""
    idx = _by_class(test, n)
    x = test.x[idx]
    from_noise = invert(model, x, None, steps=steps, step_size=step_size)
    other = x.roll(1, 0)  # seed with another class's image
    from_image = invert(model, x, other, steps=steps, step_size=step_size)
    _, lin = last_linear(model)
    units = torch.arange(min(n, lin.in_features))
    vis, act = visualize_feature(model, units, noise_seed(x[: len(units)], 1), steps=steps // 2, step_size=step_size)
    gauss = ClassGaussian.fit(train)
    classes = torch.arange(test.num_classes)
    syn = synthesize(model, gauss, classes, eps=synth_eps)
    rows = [x, from_noise.x, other, from_image.x]
    path = save_grid(torch.stack(rows), fig_dir / f"repr-inversion{tag}.png",
                     ["target", "inv(noise)", "seed image", "inv(image)"], None, "penultimate-layer inversion")
    path2 = save_grid(torch.stack([syn["seeds"], syn["x"]]), fig_dir / f"repr-synthesis{tag}.png",
                      ["Gaussian seed", "synthesised"], [str(int(c)) for c in classes], f"class-conditional synthesis, L2 eps={synth_eps:g}")
    path3 = save_grid(vis[None], fig_dir / f"repr-features{tag}.png", None, [f"unit {int(u)}" for u in units],
                      "feature visualisation (maximise one penultimate unit)")
    judged = {}
    for jname, judge in (judges or {}).items():
        with eval_mode(judge), torch.no_grad():
            judged[jname] = {
                "synthesis_acc": float((judge(syn["x"]).argmax(1) == classes).float().mean()),
                "inversion_acc": float((judge(from_noise.x).argmax(1) == test.y[idx]).float().mean())}
    return {"figures": [path.name, path2.name, path3.name], "judges": judged,
            "from_noise": from_noise.summary(), "from_image": from_image.summary(),
            "feature_visualisation": {"units": units.tolist(), "activation_mean": float(act.mean()), "steps": steps // 2},
            "synthesis": {"success_rate": float(syn["success"].float().mean()), "prob_mean": float(syn["prob"].mean()),
                          "seed_prob_mean": float(syn["seed_prob"].mean()), **syn["settings"]}}


def relu_layers(model: nn.Module) -> list[str]:
    """Names of the model's activation modules (ReLU) plus "penultimate" and "logits", in forward order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    return names + ["penultimate", "logits"]


def do_cka(model, test: Dataset, n: int, others: dict[str, nn.Module] | None = None,
           layers: Sequence[str] | None = None) -> dict:
    x = test.x[:n]
    layers = list(layers or relu_layers(model))
    reps: dict[str, torch.Tensor] = {}
    for l in layers:  # drop a layer identical to one already taken (the ReLU that is the penultimate input)
        r = features(model, x, l)
        same = [k for k, v in reps.items() if v.shape == r.shape and torch.equal(v, r)]
        if same and l == "penultimate":
            reps.pop(same[0])
        elif same:
            continue
        reps[l] = r
    layers = list(reps)
    within = [[linear_cka(reps[a], reps[b]) for b in layers] for a in layers]
    out = {"n": int(x.shape[0]), "layers": layers, "layer_matrix": within}
    if others:
        pen = reps["penultimate"]
        out["vs_runs"] = {name: linear_cka(pen, features(m, x, "penultimate")) for name, m in others.items()}
    return out


def do_probe(model, test_shape: tuple[int, ...], seed: int = 0, finetune: bool = True, epochs: int = 3,
             lr: float = 1e-4) -> dict:
    """Linear probe of the penultimate layer on `digits` resized to the run's input size and, with
    ``finetune``, the network + probe head fine-tuned on it (a copy; the run's model is unchanged)."""
    c, h, w = test_shape
    tr = resize(load_dataset("digits", "train", seed=seed), (h, w), c)
    te = resize(load_dataset("digits", "test", seed=seed), (h, w), c)
    res = linear_probe(model, tr, te, seed=seed, finetune=finetune, finetune_epochs=epochs, finetune_lr=lr)
    return {"task": f"digits resized to {h}x{w}", **res.to_dict()}


def do_manifold(model, test: Dataset, n: int, eta: float = 0.5, eps: float = 0.1, conditional: bool = True) -> dict:
    if tuple(test.input_shape) != (1, 28, 28):
        raise InputError("the manifold analysis uses the cached MNIST VAE: it needs 1x28x28 inputs")
    vae = pretrained_vae(VAEConfig(conditional=conditional)).to(device_of(model))
    return on_off_manifold(model, vae, test.subset(n), eta=eta, eps=eps)


def analyse(model: nn.Module, test: Dataset, train: Dataset, analyses: Sequence[str], fig_dir: Path, n: int = 500,
            others: dict[str, nn.Module] | None = None, tag: str = "", settings: dict | None = None) -> dict:
    """Run the named analyses on a model; returns {analysis: numbers} (figures written to fig_dir)."""
    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        raise InputError(f"unknown analyses {', '.join(bad)}; known: {', '.join(ANALYSES)}")
    s = settings or {}
    fig_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    with eval_mode(model):
        for a in analyses:
            t0 = time.perf_counter()
            if a == "saliency":
                out[a] = do_saliency(model, test, fig_dir, tag=tag)
            elif a == "alignment":
                out[a] = do_alignment(model, test, n)
            elif a == "interpolation":
                out[a] = do_interpolation(model, test, fig_dir, s.get("interpolation_eps", (0, 1, 2, 3, 4, 6, 8)),
                                          tag=tag)
            elif a == "inversion":
                out[a] = do_inversion(model, test, train, fig_dir, steps=s.get("inversion_steps", 300), tag=tag,
                                      judges=s.get("judges"))
            elif a == "cka":
                out[a] = do_cka(model, test, n, others)
            elif a == "probe":
                out[a] = do_probe(model, test.input_shape, finetune=s.get("finetune", True),
                                  epochs=s.get("finetune_epochs", 3), lr=s.get("finetune_lr", 1e-4))
            elif a == "manifold":
                out[a] = do_manifold(model, test, min(n, 500), s.get("eta", 0.5), s.get("manifold_eps", 0.1),
                                     s.get("conditional_vae", True))
            out[a]["time_s"] = time.perf_counter() - t0
            log.info("%s: %s done in %.1fs", tag or "model", a, out[a]["time_s"])
    return out


def represent_run(run_dir: str | Path, analyses: Sequence[str] = DEFAULT_ANALYSES, n: int = 500,
                  compare: Sequence[str | Path] = (), which: str = "best", settings: dict | None = None,
                  trust_code: bool = False, device: Any = "auto") -> dict:
    """Run the analyses on a model run, its models and points on `device`; writes representations.json
    (which records the device), figures and representations.html.

    Creates nothing unless the run (and every ``compare`` run) loads; holds the run's lock while writing.
    ``trust_code`` allows configs naming a ``module:callable`` model (``--trust-code``)."""
    device = resolve_device(device)
    model, config = load_model_from_run(run_dir, which, trust_code=trust_code, device=device)
    others = {Path(c).name: load_model_from_run(c, which, trust_code=trust_code, device=device)[0] for c in compare}
    spec = parse_data_spec(config["data"])
    test, train = (on_device(in_memory(load_split(spec, s), what="robustlab represent"), device) for s in ("test", "train"))
    with Run.writing(*split_run_dir(run_dir), "model", create=False) as run:
        run.figures.mkdir(exist_ok=True)
        result = analyse(model, test, train, list(analyses), run.figures, n, others, settings=settings)
        out = {"run": str(run.path), "weights": which, "data": spec, "n": min(n, len(test)), "analyses": result,
               **device_record(device)}
        atomic_write_json(run.path / "representations.json", out)
        run.log_metrics({"kind": "representations", "analyses": list(analyses)})
        atomic_write_text(run.path / "representations.html", _html(out))
    return out


def _html(out: dict) -> str:
    import json

    figs = []
    for a in out["analyses"].values():
        figs += [a["figure"]] if "figure" in a else list(a.get("figures", []))
    imgs = "\n".join(f'<p><img src="figures/{html.escape(f)}" style="max-width:100%"></p>' for f in figs)
    body = html.escape(json.dumps(out["analyses"], indent=1, default=str))
    return (f"<!doctype html><meta charset='utf-8'><title>representations: {html.escape(out['run'])}</title>"
            f"<h1>Representations of {html.escape(out['run'])}</h1>{imgs}<pre>{body}</pre>")
