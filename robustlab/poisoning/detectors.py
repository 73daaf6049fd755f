"""Detectors of poisoned training samples and defences against backdoors.

Every detector has ``detect(model, x, y) -> DetectionReport`` (``is_poison`` bool[N], ``scores`` float[N],
larger = more suspicious, ``details``), reads the data batch by batch through ``features`` (flattened
activations of every channel, per-class running moments; nothing holds the whole set of images or
activations) and is registered in ``DETECTORS``:

- ``ActivationClustering`` (Chen et al. 2018, "Detecting backdoor attacks on deep neural networks by
  activation clustering"): per class, the flattened penultimate activations reduced to 10 dimensions (ICA as
  in the paper, or PCA), 2-means; the smaller cluster is poison when its share is below 0.35 (the relative
  size rule) or when the 2-means split is good (silhouette rule).
- ``SpectralSignatures`` (Tran et al. 2018, "Spectral signatures in backdoor attacks"): per class, the
  *centred* features' squared projection on the top right singular vector; the top 1.5 x expected rate of
  each class is removed.
- ``STRIP`` (Gao et al. 2019, "STRIP: a defence against trojan attacks on deep neural networks"): entropy of
  the predictions over 20 superimpositions with held-out clean images; low entropy is poison.
- ``NeuralCleanse`` (Wang et al. 2019, "Neural Cleanse: identifying and mitigating backdoor attacks"):
  a minimal mask and pattern per class, MAD anomaly index of the masks' L1 norms.
- ``FinePruning`` (Liu et al. 2018, "Fine-Pruning: defending against backdooring attacks"): a defence, not a
  sample detector: prunes the channels dormant on clean data, then fine-tunes through a callable.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..progress import progress_bar
from ..runtime import device_of, eval_mode
from .base import DETECTORS, DetectionReport, Detector, as_xy
from .features import class_moments, class_projections, input_batches

#: MAD -> standard deviation of a normal distribution (Wang et al. 2019's consistency constant)
MAD_CONSISTENCY = 1.4826


def _labels(x: Any, y: Any, what: str) -> torch.Tensor:
    """`y` as int64 labels on the CPU, one per input of `x` (a tensor or a Dataset)."""
    y = torch.as_tensor(y).cpu()
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32) or len(y) != len(x):
        raise InputError(f"{what} needs one integer label per input: {len(x)} inputs, labels {tuple(y.shape)}")
    return y.long()


def _flag_top(scores: torch.Tensor, y: torch.Tensor, share: float) -> torch.Tensor:
    """Per class, the ``ceil(share * n_c)`` samples with the largest scores."""
    flag = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique().tolist():
        idx = torch.nonzero(y == c).flatten()
        k = min(len(idx), math.ceil(share * len(idx) - 1e-9))
        flag[idx[scores[idx].topk(k).indices]] = True
    return flag


@DETECTORS.register("spectral-signatures", aliases=("ss", "spectral"), paper="Tran et al. 2018")
class SpectralSignatures(Detector):
    """Spectral Signatures (Tran et al. 2018). For each class c with features f_i (flattened activations of
    ``layer``, the penultimate one by default), mean mu_c and centred matrix M_c = [f_i - mu_c]_i, the score of
    sample i is ``((f_i - mu_c) . v_c)^2`` with v_c the top right singular vector of M_c (the top eigenvector of
    the streamed scatter matrix M_c^T M_c). The ``ceil(1.5 * expected_rate * n_c)`` largest scores of every
    class are flagged. ``expected_rate`` is the expected poisoned share of a class (Tran et al.'s epsilon);
    ``None`` means 0.1, their largest setting (poisons = 10% of the target class). Scoring the *centred*
    features is what keeps clean data from being flagged wholesale (ART #1188 scored uncentred ones)."""

    name = "spectral-signatures"
    DEFAULT_RATE = 0.1

    def __init__(self, expected_rate: float | None = None, layer: str | None = None, batch_size: int = 256,
                 progress: bool = False):
        rate = self.DEFAULT_RATE if expected_rate is None else float(expected_rate)
        if not 0.0 < rate * 1.5 <= 1.0:
            raise InputError(f"SpectralSignatures: expected_rate must be in (0, 2/3]; got {expected_rate}")
        self.expected_rate, self.layer, self.batch_size, self.progress = rate, layer, int(batch_size), progress

    def detect(self, model: nn.Module, x: Any, y: Any) -> DetectionReport:
        y = _labels(x, y, "SpectralSignatures")
        moments = class_moments(model, x, y, self.layer, self.batch_size, self.progress)
        proj = class_projections(model, x, y, moments, 1, self.layer, self.batch_size, self.progress)
        scores = proj[:, 0] ** 2
        flag = _flag_top(scores, y, 1.5 * self.expected_rate)
        return DetectionReport(flag, scores.float(), {"detector": self.name, "expected_rate": self.expected_rate,
                                                      "removed_share": 1.5 * self.expected_rate, "layer": self.layer})


@DETECTORS.register("activation-clustering", aliases=("ac",), paper="Chen et al. 2018")
class ActivationClustering(Detector):
    """Activation Clustering (Chen et al. 2018). Per class: the flattened activations of ``layer`` (the
    penultimate one by default) reduced to ``dims`` = 10 dimensions, by ICA as in the paper (FastICA on the
    top-10 principal subspace, which is the subspace FastICA's own PCA whitening keeps) or by PCA
    (``reduce="pca"``), then 2-means. ``rule="size"``: the smaller cluster is poison when it holds less than
    ``size_threshold`` (0.35) of the class; ``rule="silhouette"``: when the 2-means silhouette score exceeds
    ``silhouette_threshold`` (0.15, our choice; the paper compares silhouette scores without a fixed value).
    Score of a sample: its relative margin towards the smaller cluster, ``(d_large - d_small) / (d_large +
    d_small)`` in [-1, 1] (positive: nearer the smaller cluster)."""

    name = "activation-clustering"

    def __init__(self, dims: int = 10, reduce: str = "ica", rule: str = "size", size_threshold: float = 0.35,
                 silhouette_threshold: float = 0.15, layer: str | None = None, batch_size: int = 256, seed: int = 0,
                 progress: bool = False):
        if reduce not in ("ica", "pca") or rule not in ("size", "silhouette"):
            raise InputError(f"ActivationClustering: reduce is 'ica' or 'pca' and rule 'size' or 'silhouette'; "
                             f"got {reduce!r}, {rule!r}")
        self.dims, self.reduce, self.rule = int(dims), reduce, rule
        self.size_threshold, self.silhouette_threshold = float(size_threshold), float(silhouette_threshold)
        self.layer, self.batch_size, self.seed, self.progress = layer, int(batch_size), int(seed), progress

    def detect(self, model: nn.Module, x: Any, y: Any) -> DetectionReport:
        y = _labels(x, y, "ActivationClustering")
        moments = class_moments(model, x, y, self.layer, self.batch_size, self.progress)
        z = class_projections(model, x, y, moments, self.dims, self.layer, self.batch_size, self.progress)
        flag, scores, classes = torch.zeros(len(y), dtype=torch.bool), torch.zeros(len(y)), {}
        for c in y.unique().tolist():
            idx = torch.nonzero(y == c).flatten()
            small, margin, classes[c] = self.cluster(z[idx].numpy())
            scores[idx] = torch.as_tensor(margin, dtype=torch.float32)
            flag[idx] = torch.as_tensor(small) & classes[c]["flagged"]
        return DetectionReport(flag, scores, {"detector": self.name, "rule": self.rule, "reduce": self.reduce,
                                              "classes": classes, "layer": self.layer})

    def cluster(self, z) -> tuple[Any, Any, dict]:
        """2-means of one class's reduced features `z` [n, dims]: (in the smaller cluster, margin, numbers)."""
        import numpy as np
        from sklearn.cluster import KMeans
        from sklearn.decomposition import FastICA
        from sklearn.metrics import silhouette_score

        n = len(z)
        if n < 4:
            return np.zeros(n, bool), np.zeros(n), {"n": n, "flagged": False, "share": None, "silhouette": None}
        z = z[:, :min(self.dims, n - 1)]
        if self.reduce == "ica":
            with warnings.catch_warnings():  # FastICA's ConvergenceWarning: the rotation is still a valid basis
                warnings.simplefilter("ignore")
                z = FastICA(n_components=z.shape[1], whiten="unit-variance", random_state=self.seed,
                            max_iter=400, tol=1e-3).fit_transform(z)
        km = KMeans(2, n_init=10, random_state=self.seed).fit(z)
        sizes = np.bincount(km.labels_, minlength=2)
        small = int(sizes.argmin())
        dist = km.transform(z)
        margin = (dist[:, 1 - small] - dist[:, small]) / (dist.sum(1) + 1e-12)
        share = float(sizes[small] / n)
        sil = float(silhouette_score(z, km.labels_, sample_size=min(n, 2000), random_state=self.seed)) \
            if sizes.min() > 0 else 0.0
        flagged = share < self.size_threshold if self.rule == "size" else sil > self.silhouette_threshold
        return km.labels_ == small, margin, {"n": n, "share": share, "silhouette": sil, "flagged": bool(flagged)}


def _clean_inputs(clean: Any, what: str) -> torch.Tensor:
    """The held-out clean images of `clean` (a tensor, a Dataset or an (x, y) pair)."""
    clean = _require(clean, what)
    if isinstance(clean, torch.Tensor):
        return clean
    return as_xy(clean, what)[0]


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the softmax of each row of `logits`."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


@DETECTORS.register("strip", paper="Gao et al. 2019")
class STRIP(Detector):
    """STRIP (Gao et al. 2019). Each input is superimposed with ``n`` = 20 random held-out clean images; its
    score is minus the mean prediction entropy over the superimpositions: a trigger that dominates the
    prediction keeps the entropy low. Superimposition as in the paper, the sum of the two images clipped to
    [0, 1] (``alpha=None``), or the blend ``alpha * x + (1 - alpha) * x_clean``. The threshold is the ``frr``
    quantile of the held-out clean images' own entropies (their superimpositions with other clean images): a
    share ``frr`` of clean inputs is rejected (the paper's false-rejection rate fixes the threshold from clean
    data alone; the false-acceptance rate is what it gives on poisons)."""

    name = "strip"

    def __init__(self, clean: Any = None, n: int = 20, frr: float = 0.01, alpha: float | None = None,
                 batch_size: int = 128, seed: int = 0, progress: bool = False):
        if not 0.0 < frr < 1.0 or not (alpha is None or 0.0 < alpha < 1.0) or n < 1:
            raise InputError(f"STRIP: frr and alpha in (0, 1), n >= 1; got frr={frr}, alpha={alpha}, n={n}")
        self.clean, self.n, self.frr, self.alpha = clean, int(n), float(frr), alpha
        self.batch_size, self.seed, self.progress = int(batch_size), int(seed), progress

    def entropies(self, model: nn.Module, x: Any, overlays: torch.Tensor, seed: int) -> torch.Tensor:
        """Mean prediction entropy of each input of `x` over ``n`` superimpositions with random `overlays`."""
        device, gen = device_of(model), torch.Generator().manual_seed(seed)
        out = []
        with eval_mode(model), torch.no_grad():
            for xb in progress_bar(input_batches(x, self.batch_size), total=-(-len(x) // self.batch_size),
                                   desc="STRIP", unit="batch", disable=not self.progress):
                pick = torch.randint(len(overlays), (len(xb), self.n), generator=gen)
                h = prediction_entropy(model(self.superimpose(xb.to(device), overlays[pick].to(device))))
                out.append(h.view(len(xb), self.n).mean(1).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def superimpose(self, x: torch.Tensor, overlays: torch.Tensor) -> torch.Tensor:
        """Each input of `x` [B, ...] with each of its `overlays` [B, n, ...]: [B * n, ...]."""
        x = x[:, None]
        mixed = (x + overlays).clamp(0, 1) if self.alpha is None else self.alpha * x + (1 - self.alpha) * overlays
        return mixed.flatten(0, 1)

    def detect(self, model: nn.Module, x: Any, y: Any = None) -> DetectionReport:
        clean = _clean_inputs(self.clean, "STRIP")
        reference = self.entropies(model, clean, clean, self.seed + 1)
        threshold = float(torch.quantile(reference.double(), self.frr))
        h = self.entropies(model, x, clean, self.seed)
        return DetectionReport(h < threshold, -h, {"detector": self.name, "threshold_entropy": threshold,
                                                   "frr": self.frr, "n": self.n, "alpha": self.alpha,
                                                   "clean_entropy_mean": float(reference.mean())})


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s anomaly index of each value: ``(median - v) / (1.4826 * MAD)`` with ``MAD = median |v -
    median|``; positive below the median (a small trigger norm is the anomaly). A zero MAD gives +-inf for values
    off the median and 0 on it."""
    norms = torch.as_tensor(norms, dtype=torch.float64)
    med = norms.quantile(0.5)
    mad = MAD_CONSISTENCY * (norms - med).abs().quantile(0.5)
    if mad == 0:
        return torch.where(norms == med, 0.0, torch.sign(med - norms) * math.inf)
    return (med - norms) / mad


def reverse_trigger(model: nn.Module, clean: torch.Tensor, target: int, steps: int = 300, lr: float = 0.1,
                    cost: float = 1e-3, batch_size: int = 128, seed: int = 0) -> dict:
    """Wang et al.'s trigger reverse-engineering for class `target`: the mask m [1, H, W] and pattern p [C, H, W]
    (both through a sigmoid, so in [0, 1]) minimising ``CE(model((1 - m) x + m p), target) + lambda |m|_1`` over
    clean images x, with Adam (lr 0.1, betas (0.5, 0.9)) on random batches. ``lambda`` starts at `cost` and
    follows the paper's schedule: every 10 steps, x1.5 while the reversed trigger sends >= 99% of the batch to
    the target, else /1.5^1.5. Keeps the smallest mask that reached 99%. A short optimisation of its own
    because the engine's threat models perturb each input separately, while this is one mask and pattern
    shared by all inputs with a penalty on the mask's size. Returns mask, pattern, norm (L1 of the mask) and
    success (the share of the last batch sent to the target)."""
    device, gen = device_of(model), torch.Generator().manual_seed(seed)
    c, h, w = clean.shape[1:]
    m_raw = torch.zeros(1, h, w, device=device, requires_grad=True)
    p_raw = torch.zeros(c, h, w, device=device, requires_grad=True)
    opt = torch.optim.Adam([m_raw, p_raw], lr=lr, betas=(0.5, 0.9))
    lam, best, hits = cost, None, []
    for step in range(steps):
        xb = clean[torch.randint(len(clean), (min(batch_size, len(clean)),), generator=gen)].to(device)
        mask, pattern = torch.sigmoid(m_raw), torch.sigmoid(p_raw)
        logits = model((1 - mask) * xb + mask * pattern)
        tgt = torch.full((len(xb),), target, device=device)
        l1 = mask.sum()
        opt.zero_grad()
        m_raw.grad, p_raw.grad = torch.autograd.grad(F.cross_entropy(logits, tgt) + lam * l1, [m_raw, p_raw])
        opt.step()
        success = float((logits.argmax(1) == tgt).float().mean())
        hits.append(success >= 0.99)
        if success >= 0.99 and (best is None or float(l1.detach()) < best["norm"]):
            best = {"mask": mask.detach().clone(), "pattern": pattern.detach().clone(), "norm": float(l1.detach()),
                    "success": success}
        if (step + 1) % 10 == 0:
            lam = lam * 1.5 if all(hits[-10:]) else lam / 1.5 ** 1.5
    if best is None:
        mask, pattern = torch.sigmoid(m_raw).detach(), torch.sigmoid(p_raw).detach()
        best = {"mask": mask, "pattern": pattern, "norm": float(mask.sum()), "success": success}
    return best


def trigger_similarity(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """How much each input of `x` carries a reversed trigger: ``1 - sum m |x - p| / (C sum m)`` in [0, 1]
    (1: equal to the pattern wherever the mask is on)."""
    gap = (mask * (x - pattern).abs()).flatten(1).sum(1)
    return 1 - gap / (x.shape[1] * mask.sum().clamp_min(1e-12))


@DETECTORS.register("neural-cleanse", aliases=("nc",), paper="Wang et al. 2019")
class NeuralCleanse(Detector):
    """Neural Cleanse (Wang et al. 2019): a model-level detector. For every class t, ``reverse_trigger`` finds
    the smallest mask that sends held-out clean images to t; a backdoor target needs an anomalously small one.
    The anomaly index of each class's mask L1 norm is ``(median - norm) / (1.4826 MAD)``; classes with index >
    ``threshold`` = 2 on the small side are flagged targets. Per sample, NC says nothing by itself; here
    ``scores`` is each training sample's similarity to its own label's reversed trigger
    (``trigger_similarity``), and ``is_poison`` flags the samples labelled with a flagged target whose
    similarity exceeds the ``1 - fpr`` quantile of the other classes' samples' similarity to that trigger (the
    other classes carry no trigger of an all-to-one backdoor). No flagged class: nothing is flagged."""

    name = "neural-cleanse"

    def __init__(self, clean: Any = None, steps: int = 300, lr: float = 0.1, cost: float = 1e-3,
                 threshold: float = 2.0, fpr: float = 0.01, batch_size: int = 128, seed: int = 0,
                 progress: bool = False):
        self.clean, self.steps, self.lr, self.cost = clean, int(steps), float(lr), float(cost)
        self.threshold, self.fpr, self.batch_size, self.seed = float(threshold), float(fpr), int(batch_size), int(seed)
        self.progress = progress

    def reverse_all(self, model: nn.Module, num_classes: int) -> list[dict]:
        clean = _clean_inputs(self.clean, "NeuralCleanse")
        with eval_mode(model):
            return [reverse_trigger(model, clean, t, self.steps, self.lr, self.cost, self.batch_size, self.seed + t)
                    for t in progress_bar(range(num_classes), total=num_classes, desc="Neural Cleanse",
                                          unit="class", disable=not self.progress)]

    def detect(self, model: nn.Module, x: Any, y: Any) -> DetectionReport:
        y = _labels(x, y, "NeuralCleanse")
        triggers = self.reverse_all(model, int(y.max()) + 1)
        norms = torch.tensor([t["norm"] for t in triggers])
        index = anomaly_index(norms)
        flagged = [int(c) for c in torch.nonzero(index > self.threshold).flatten()]
        sim = torch.cat([torch.stack([trigger_similarity(xb, t["mask"].cpu(), t["pattern"].cpu()) for t in triggers], 1)
                         for xb in input_batches(x, self.batch_size)])  # [N, K]: K numbers per sample
        scores = sim.gather(1, y[:, None]).flatten().float()
        flag, thresholds = torch.zeros(len(y), dtype=torch.bool), {}
        for t in flagged:
            others = sim[y != t, t]
            thresholds[t] = float(others.double().quantile(1 - self.fpr)) if len(others) else 0.0
            flag |= (y == t) & (sim[:, t] > thresholds[t])
        return DetectionReport(flag, scores, {
            "detector": self.name, "norms": norms.tolist(), "anomaly_index": index.tolist(), "flagged_targets": flagged,
            "success": [t["success"] for t in triggers], "similarity_thresholds": thresholds})


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    device, right = device_of(model), 0
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(x), batch_size):
            right += int((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return right / max(len(x), 1)


@DETECTORS.register("fine-pruning", aliases=("fp",), paper="Liu et al. 2018", kind="defence")
class FinePruning:
    """Fine-Pruning (Liu et al. 2018), a defence: the channels of ``layer`` (by default the last ``nn.Conv2d``,
    else the last hidden ``nn.Linear``) are ranked by their mean activation on clean data (the output clamped
    at 0, i.e. after the ReLU that follows), and the most dormant are pruned, in steps of ``ceil(C / 64)``
    channels, as long as clean accuracy stays within ``max_drop`` (0.04) of the unpruned model's; the backdoor
    tends to live in channels clean data leaves dormant. Pruning zeroes the channels through
    ``torch.nn.utils.prune`` masks on every parameter of the layer indexed by channel (weight rows, bias),
    which keeps them at zero during fine-tuning; ``defend`` then calls ``fine_tune(model)`` (e.g. the training
    loop on clean data, in ``robustlab.experiments.poisoning``) and makes the pruning permanent."""

    name = "fine-pruning"

    def __init__(self, clean: Any = None, max_drop: float = 0.04, layer: str | None = None, batch_size: int = 256):
        self.clean, self.max_drop, self.layer, self.batch_size = clean, float(max_drop), layer, int(batch_size)

    def detect(self, model, x, y) -> DetectionReport:
        raise InputError("Fine-Pruning is a defence, not a sample detector: use FinePruning(...).defend(model)")

    def target_layer(self, model: nn.Module) -> tuple[str, nn.Module]:
        named = list(model.named_modules())
        if self.layer is not None:
            found = dict(named).get(self.layer)
            if found is None:
                raise InputError(f"the model has no layer {self.layer!r}")
            return self.layer, found
        convs = [(k, m) for k, m in named if isinstance(m, nn.Conv2d)]
        linears = [(k, m) for k, m in named if isinstance(m, nn.Linear)]
        if convs or len(linears) >= 2:
            return convs[-1] if convs else linears[-2]
        raise InputError("Fine-Pruning needs a convolution or a hidden linear layer; name one (layer='...')")

    def activity(self, model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean clamped-at-0 activation of each output channel of `module` over `x` (streamed, dim 1 = channel)."""
        total, count = 0.0, 0
        with captured_output(module) as box, eval_mode(model), torch.no_grad():
            for xb in input_batches(x, self.batch_size):
                model(xb.to(device_of(model)))
                a = box["out"].clamp_min(0).transpose(0, 1).flatten(1)
                total, count = total + a.double().sum(1), count + a.shape[1]
        return (total / count).cpu()

    def prune(self, model: nn.Module) -> dict:
        """Prune `model`'s dormant channels in place (``torch.nn.utils.prune`` masks); returns what was done."""
        x, y, _, _ = as_xy(_require(self.clean, "FinePruning"), "FinePruning")
        name, module = self.target_layer(model)
        order = self.activity(model, module, x).argsort()
        channels, base = len(order), _accuracy(model, x, y, self.batch_size)
        keep = torch.ones(channels, device=device_of(model))
        handle = module.register_forward_hook(lambda m, a, out: out * keep.view(1, -1, *([1] * (out.dim() - 2))))
        pruned, acc, step = 0, base, math.ceil(channels / 64)
        try:
            for k in range(step, channels, step):
                keep.fill_(1.0)
                keep[order[:k].to(keep.device)] = 0.0
                trial = _accuracy(model, x, y, self.batch_size)
                if base - trial > self.max_drop:
                    break
                pruned, acc = k, trial
        finally:
            handle.remove()
        _mask_channels(module, order[:pruned])
        return {"layer": name, "channels": channels, "pruned": pruned, "pruned_channels": order[:pruned].tolist(),
                "clean_accuracy_before": base, "clean_accuracy_pruned": acc, "max_drop": self.max_drop}

    def defend(self, model: nn.Module, fine_tune: Callable[[nn.Module], Any] | None = None) -> dict:
        """Prune, then ``fine_tune(model)`` with the pruned channels held at zero, then make the pruning permanent
        (plain parameters again, so the weights save as usual). Returns ``prune``'s record."""
        record = self.prune(model)
        if fine_tune is not None:
            fine_tune(model)
        _, module = self.target_layer(model)
        for pname, _ in list(module.named_parameters(recurse=False)):
            if pname.endswith("_orig"):
                torch.nn.utils.prune.remove(module, pname[:-5])
        record["clean_accuracy_after"] = _accuracy(model, *as_xy(self.clean, "FinePruning")[:2], self.batch_size)
        return record


def _require(value: Any, what: str) -> Any:
    if value is None:
        raise InputError(f"{what} needs held-out clean data (clean=Dataset or (x, y))")
    return value


def _mask_channels(module: nn.Module, channels: torch.Tensor) -> None:
    """Zero the output `channels` of `module` for good: a ``torch.nn.utils.prune`` mask on each of its
    parameters whose first dimension is the channel (conv/linear weight rows, biases, norm scales)."""
    import torch.nn.utils.prune as tprune

    for pname, p in list(module.named_parameters(recurse=False)):
        mask = torch.ones_like(p)
        mask[channels.to(p.device)] = 0
        tprune.custom_from_mask(module, pname, mask)


@contextlib.contextmanager
def captured_output(module: nn.Module) -> Iterator[dict]:
    """A dict whose ``"out"`` is `module`'s output after each forward pass (unflattened)."""
    box: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, a, out: box.__setitem__("out", out.detach()))
    try:
        yield box
    finally:
        handle.remove()
