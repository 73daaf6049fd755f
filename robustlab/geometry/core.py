"""The shared machinery of every geometry measure: which parameters, which data, which loss.

A measure never touches the model it is given: parameters live in a separate dict (optionally in
float64) and the model is run with ``torch.func.functional_call``. Module training flags are set
for a call and restored afterwards; batch-norm running statistics are copies, so batch-statistics
and recalibration policies never write into the model.

The loss is ``L(w) = 1/N sum_i objective.loss(f_w(x_i), t_i)`` over all of ``data`` (an ``(x, y)``
pair, a robustlab Dataset or an iterable of ``(x, target)`` batches). Robust variants pass an
``attack``: the loss is then taken at ``x_adv`` crafted against ``f_w`` (``robust="recraft"``: at
every evaluated weight vector) or crafted once at the original weights (``robust="fixed"``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from ..data.batches import batch_list
from ..errors import InputError
from ..objectives import CrossEntropy, Objective, get_objective
from .convgrad import hvp_convolutions

log = logging.getLogger(__name__)

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
PARAM_SETS = ("all", "weights", "no_norm")
NORMALIZATIONS = ("none", "filter", "layer", "adaptive")
BN_POLICIES = ("eval", "batch", "recalibrate")
ROBUST_MODES = ("recraft", "fixed")


@dataclass(frozen=True)
class ParameterGeometry:
    """Which parameters a measure sees and how random directions are scaled.

    Args:
        params: "all", "weights" (tensors with dim > 1, i.e. no biases and no norm affines),
            "no_norm" (everything but normalisation layers), or an explicit list of names.
        normalization: direction scaling. "none"; "filter" (Li et al. 2018: each output filter
            d[i] of a tensor with dim > 1 is scaled to ||w[i]||); "layer" (each tensor to ||w||);
            "adaptive" (elementwise by |w| + eta, Kwon et al. 2021).
        bias: what filter/layer normalisation does with 1-D tensors: "zero" or "copy" (d = w).
        bn: batch-norm statistics: "eval" (running statistics), "batch" (statistics of each
            batch) or "recalibrate" (running statistics recomputed over the data at each
            evaluated weight vector, then eval mode).
        eta: the additive constant of adaptive scaling.
    """

    params: str | tuple[str, ...] = "all"
    normalization: str = "filter"
    bias: str = "zero"
    bn: str = "eval"
    eta: float = 0.0

    def __post_init__(self):
        if isinstance(self.params, str):
            if self.params not in PARAM_SETS:
                raise InputError(f"params must be one of {PARAM_SETS} or a list of parameter names, got {self.params!r}")
        else:
            object.__setattr__(self, "params", tuple(self.params))
        if self.normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.bias not in ("zero", "copy"):
            raise InputError(f"bias must be 'zero' or 'copy', got {self.bias!r}")
        if self.bn not in BN_POLICIES:
            raise InputError(f"bn must be one of {BN_POLICIES}, got {self.bn!r}")

    def select(self, model: nn.Module) -> list[str]:
        """Names of the parameters this geometry covers, in model order."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not isinstance(self.params, str):
            known = {n for n, _ in named}
            missing = [n for n in self.params if n not in known]
            if missing:
                raise InputError(f"unknown parameter names {missing[:5]}; the model has {sorted(known)[:8]}...")
            return [n for n, _ in named if n in self.params]
        if self.params == "all":
            return [n for n, _ in named]
        if self.params == "weights":
            return [n for n, p in named if p.dim() > 1]
        norm_names = {f"{m}.{n}" if m else n for m, mod in model.named_modules() if isinstance(mod, NORM_LAYERS)
                      for n, _ in mod.named_parameters(recurse=False)}
        return [n for n, _ in named if n not in norm_names]

    def normalize(self, direction: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scale a direction as this geometry says (a new dict)."""
        out = {}
        for n, d in direction.items():
            w = weights[n]
            if self.normalization == "none":
                out[n] = d.clone()
            elif self.normalization == "adaptive":
                out[n] = d * (w.abs() + self.eta)
            elif w.dim() <= 1:
                out[n] = torch.zeros_like(d) if self.bias == "zero" else w.clone()
            elif self.normalization == "filter":
                wn = w.flatten(1).norm(dim=1)
                dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                out[n] = d * (wn / dn).view(-1, *([1] * (d.dim() - 1)))
            else:
                out[n] = d * (w.norm() / d.norm().clamp_min(1e-12))
        return out


def as_geometry(spec: Any = None, **overrides) -> ParameterGeometry:
    """A ParameterGeometry from None, a string (param set), a list of names or a geometry."""
    if isinstance(spec, ParameterGeometry):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    if spec is None:
        return ParameterGeometry(**overrides)
    return ParameterGeometry(**{"params": spec, **overrides})


def _to(t: Any, device, dtype) -> Any:
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=dtype if t.is_floating_point() and dtype is not None else t.dtype)
    if isinstance(t, tuple):
        return tuple(_to(v, device, dtype) for v in t)
    return t


def flat(tensors: dict[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    vals = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(-1) for t in vals])


def unflat(vec: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, t in like.items():
        out[n] = vec[i:i + t.numel()].view_as(t)
        i += t.numel()
    return out


def add(a: dict, b: dict, scale: float = 1.0) -> dict:
    return {n: a[n] + scale * b[n] for n in a}


class LossFunction:
    """``L(w)`` of a model over data, with ``w`` the selected parameters (everything else fixed).

    Counts ``passes``: full sweeps over the data (a loss evaluation, a gradient or a
    Hessian-vector product each count one), and ``calls``: model invocations on one batch.
    """

    def __init__(self, model: nn.Module, data: Any, objective: Objective | str | None = None,
                 geometry: ParameterGeometry | Any = None, dtype: torch.dtype | None = None,
                 attack: Any = None, robust: str = "recraft", batch_size: int = 512,
                 cache_graphs: bool | None = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if robust not in ROBUST_MODES:
            raise InputError(f"robust must be one of {ROBUST_MODES}, got {robust!r}")
        self.model = model
        self.objective = CrossEntropy() if objective is None else get_objective(objective)
        self.geometry = as_geometry(geometry)
        self.attack = attack
        self.robust = robust
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = dtype
        self.batches = [(_to(x, self.device, dtype), _to(t, self.device, None)) for x, t in batch_list(data, batch_size)]
        self.n = sum(int(x.shape[0]) for x, _ in self.batches)
        self.names = self.geometry.select(model)
        if not self.names:
            raise InputError("the parameter selection is empty; choose params='all'")
        sel = set(self.names)
        self.params = {n: _to(p.detach(), self.device, dtype).clone() for n, p in model.named_parameters() if n in sel}
        self.frozen = {n: _to(p.detach(), self.device, dtype).clone() for n, p in model.named_parameters() if n not in sel}
        self.buffers = {n: _to(b.detach(), self.device, dtype).clone() for n, b in model.named_buffers()}
        self.has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.passes = 0
        self.calls = 0
        self.fixed_adv: list | None = None
        self._graph_cache: list | None = None
        self.cache_graphs = cache_graphs

    # -- running the model -----------------------------------------------------------------------
    @contextlib.contextmanager
    def mode(self, train_bn: bool, cumulative: bool = False):
        """Set BN layers to train (batch statistics) or eval; everything else eval. Restored after."""
        saved = [(m, m.training, getattr(m, "momentum", None)) for m in self.model.modules()]
        try:
            for m in self.model.modules():
                is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
                m.training = bool(train_bn and is_bn)
                if is_bn and cumulative:
                    m.momentum = None
            yield
        finally:
            for m, t, mom in saved:
                m.training = t
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = mom

    def buffers_for(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Buffers to use at ``params``: copies, recalibrated if the BN policy says so."""
        buffers = {n: b.clone() for n, b in self.buffers.items()}
        if self.geometry.bn != "recalibrate" or not self.has_bn:
            return buffers
        for n in buffers:
            if n.endswith("running_mean") or n.endswith("num_batches_tracked"):
                buffers[n].zero_()
            elif n.endswith("running_var"):
                buffers[n].fill_(1.0)
        with torch.no_grad(), self.mode(train_bn=True, cumulative=True):
            for x, _ in self.batches:
                functional_call(self.model, ({**self.frozen, **params}, buffers), (x,))
                self.calls += 1
        self.passes += 1
        return buffers

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor, buffers: dict | None = None) -> torch.Tensor:
        buffers = self.buffers_for(params) if buffers is None else buffers
        with self.mode(train_bn=self.geometry.bn == "batch"):
            self.calls += 1
            return functional_call(self.model, ({**self.frozen, **params}, buffers), (x,))

    def predictor(self, params: dict[str, torch.Tensor], buffers: dict | None = None) -> Callable:
        """A plain ``x -> output`` callable at ``params`` (no gradient to the weights), for attacks."""
        p = {n: v.detach() for n, v in params.items()}
        b = self.buffers_for(p) if buffers is None else buffers

        def f(x):
            return self.forward(p, x, b)

        return f

    def inputs(self, params: dict[str, torch.Tensor], buffers: dict | None = None) -> list[torch.Tensor]:
        """The inputs the loss is taken at: clean, or adversarial per the robust policy."""
        if self.attack is None:
            return [x for x, _ in self.batches]
        if self.robust == "fixed":
            if self.fixed_adv is None:
                self.fixed_adv = self._craft(self.params, None)
            return self.fixed_adv
        return self._craft(params, buffers)

    def _craft(self, params, buffers) -> list[torch.Tensor]:
        f = self.predictor(params, buffers)
        out = []
        for x, t in self.batches:
            with torch.enable_grad():
                res = self.attack(f, x, t)
            out.append(res.x_adv.detach().to(x.dtype))
            self.calls += int(res.queries.float().mean().item()) if res.queries.numel() else 0
        self.passes += 1
        return out

    # -- the loss --------------------------------------------------------------------------------
    def loss(self, params: dict[str, torch.Tensor] | None = None, grad: bool = False):
        """L(params) (a float), or (L, dL/dparams dict) with ``grad=True``."""
        params = self.params if params is None else params
        buffers = self.buffers_for(params)
        xs = self.inputs(params, buffers)
        total = 0.0
        grads = None
        if grad:
            p = {n: v.detach().requires_grad_(True) for n, v in params.items()}
            grads = {n: torch.zeros_like(v) for n, v in params.items()}
        for x, (_, t) in zip(xs, self.batches):
            if grad:
                with torch.enable_grad():
                    lsum = self.objective.loss(self.forward(p, x, buffers), t).sum()
                    g = torch.autograd.grad(lsum, list(p.values()))
                for n, gi in zip(p, g):
                    grads[n] += gi
            else:
                with torch.no_grad():
                    lsum = self.objective.loss(self.forward(params, x, buffers), t).sum()
            total += float(lsum.detach())
        self.passes += 1
        if grad:
            return total / self.n, {n: g / self.n for n, g in grads.items()}
        return total / self.n

    def per_sample(self, params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses and success flags (the objective's, e.g. misclassification) at params."""
        params = self.params if params is None else params
        buffers = self.buffers_for(params)
        xs = self.inputs(params, buffers)
        losses, succ = [], []
        with torch.no_grad():
            for x, (_, t) in zip(xs, self.batches):
                out = self.forward(params, x, buffers)
                losses.append(self.objective.loss(out, t))
                try:
                    succ.append(self.objective.success(out, t))
                except (NotImplementedError, InputError):
                    succ = None
        self.passes += 1
        return torch.cat(losses), (torch.cat(succ) if succ else None)

    def hvp(self, v: dict[str, torch.Tensor] | torch.Tensor, batched: bool = False) -> torch.Tensor:
        """H v at the base parameters (flat result). With ``batched=True`` ``v`` is [K, D] -> [K, D].

        Double back-propagation (Pearlmutter 1994). The adversarial inputs of a robust loss are
        held at those crafted for the base weights (Danskin: the gradient of the max is the
        gradient at the maximiser). The gradient graphs are built once and reused for every
        product when the data has at most 8192 points (``cache_graphs``), with the convolutions
        and ReLUs of :mod:`.convgrad` (same values; about 0.7x autograd's time per product on CPU).
        """
        vflat = flat(v) if isinstance(v, dict) else v
        if self._graph_cache is None:
            self._prepare_hvp()
        out = torch.zeros_like(vflat)
        if batched:
            vs = [vflat[:, i:i + t.numel()].reshape(vflat.shape[0], *t.shape)
                  for i, t in zip(_offsets(self.params), self.params.values())]
        else:
            vs = list(unflat(vflat, self.params).values())
        for item in self._graph_cache:
            p, g = item if isinstance(item[0], dict) else self._graph(*item)
            hv = torch.autograd.grad(g, list(p.values()), vs, retain_graph=True, is_grads_batched=batched)
            out += torch.cat([h.reshape(vflat.shape[0], -1) for h in hv], 1) if batched else flat(hv)
        self.passes += vflat.shape[0] if batched else 1
        return out / self.n

    def _graph(self, x, t):
        p = {n: v.detach().requires_grad_(True) for n, v in self.params.items()}
        with torch.enable_grad(), hvp_convolutions():
            lsum = self.objective.loss(self.forward(p, x, self._hvp_buffers), t).sum()
            g = torch.autograd.grad(lsum, list(p.values()), create_graph=True)
        return p, g

    def _prepare_hvp(self):
        """Inputs (and BN buffers) of the Hessian, once; gradient graphs kept when the data is small."""
        self._hvp_buffers = self.buffers_for(self.params)
        xs = self.inputs(self.params, self._hvp_buffers)
        items = [(x, t) for x, (_, t) in zip(xs, self.batches)]
        keep = self.cache_graphs if self.cache_graphs is not None else self.n <= 8192
        self._graph_cache = [self._graph(x, t) for x, t in items] if keep else items


def _offsets(like: dict[str, torch.Tensor]) -> list[int]:
    out, i = [], 0
    for t in like.values():
        out.append(i)
        i += t.numel()
    return out


def random_direction(params: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Gaussian N(0, I) direction shaped like ``params``."""
    return {n: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for n, p in params.items()}


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of parameters and buffers (for the "unchanged afterwards" checks)."""
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}


def blocks_of(names: Iterable[str]) -> dict[str, list[str]]:
    """Group parameter names by their module (``layer.weight``, ``layer.bias`` -> ``layer``)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(n.rsplit(".", 1)[0] if "." in n else n, []).append(n)
    return out


def stderr(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)
