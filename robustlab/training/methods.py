"""Training methods: each is a small function computing the training loss of one batch, for any
task: the loss is the task's objective (``ctx.objective``: cross-entropy for classifiers, a disparity
error for stereo), whose per-sample ``loss`` training minimises and attacks maximise.

``method(model, x, target, ctx) -> (loss, outputs_on_training_inputs)`` where ``ctx`` carries the
objective, the current eps, the threat model, the settings (``ctx.settings``: the run's
``TrainConfig``, whose fields include every method's own settings) and the batch's random numbers.
New methods register in ``METHODS`` with their settings model (``METHODS.register("trades", trades,
settings=TradesSettings)``): its fields join ``TrainConfig`` under their own flat names
(``trades_beta``, ``--trades-beta``). A ``regularizer(model, x, target, outputs, ctx) -> scalar``
passed to ``train`` adds its own term to any method.

The methods: ``standard``, ``pgd`` (PGD-AT), ``fgsm_rs`` (FGSM-RS, optionally GradAlign),
``trades``, ``llr`` (local linearity regularisation) and ``on_manifold`` (latent-space adversarial
examples of a VAE, Stutz et al. 2019).

Which methods are defined for which objectives: standard, PGD-AT, FGSM-RS (+GradAlign) and LLR need
only a differentiable per-sample loss and work for every task; TRADES needs the objective's output
divergence (KL for classifiers, mean squared output difference for regression; not defined for
objectives without one, e.g. sequence losses).

Random starts come from ``ctx.random_start``: the threat model's one random draw (``random_delta``),
made for the whole global batch and sliced to this rank's part, so 2 ranks with batch B see exactly
the numbers that 1 process with batch 2B sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, create_model

from ..attacks import PGD, ParametricPGD, local_linearity
from ..models.vae import VAE, VAEConfig, pretrained_vae
from ..objectives import CrossEntropy, Objective
from ..registry import Registry
from ..runtime import eval_mode
from ..settings import StrictSettings
from ..threat import LatentThreat, ThreatModel


# ----- each method's own settings (their fields join TrainConfig under the same flat names) -----------
class PGDSettings(StrictSettings):
    """The inner PGD of PGD-AT (and of TRADES)."""

    attack_steps: int = Field(10, ge=1, description="inner attack steps of PGD-AT and TRADES")
    attack_step_size: Optional[float] = Field(None, gt=0, description="inner attack step size (default: 2.5 eps / attack_steps)")


class FGSMRSSettings(StrictSettings):
    """FGSM-RS and its GradAlign regulariser."""

    fgsm_alpha: Optional[float] = Field(None, gt=0, description="FGSM-RS step (default: 1.25 eps)")
    grad_align: float = Field(0.0, ge=0, description="GradAlign weight for fgsm_rs (0: off)")


class TradesSettings(PGDSettings):
    """TRADES: the inner steps of PGDSettings and the weight of the divergence term."""

    trades_beta: float = Field(1.0, ge=0, description="TRADES weight beta of the divergence term")


class LLRSettings(StrictSettings):
    """Local linearity regularisation."""

    llr_lambda: float = Field(4.0, ge=0, description="LLR weight lambda of the local linearity gamma")
    llr_mu: float = Field(3.0, ge=0, description="LLR weight mu of the gradient term |delta^T grad l(x)|")
    llr_steps: int = Field(10, ge=1, description="LLR inner maximisation steps")


def _default_settings():
    return MethodSettings()


@dataclass
class BatchContext:
    """What a method needs besides the batch: the threat model with the current eps, the settings,
    the objective and the batch's random numbers (seeded per batch, drawn for the global batch)."""

    threat: ThreatModel      # with the current (possibly warmed-up) eps
    seed: int                # per-batch seed (the same on every rank)
    settings: Any = field(default_factory=_default_settings)  # the TrainConfig (default: every method's defaults)
    attack_model: nn.Module | None = None  # the unwrapped model for inner maximisations (not the DDP wrapper)
    global_size: int | None = None    # size of the global batch (all ranks)
    offset: int = 0                   # where this rank's samples start in the global batch
    objective: Objective = field(default_factory=CrossEntropy)  # the task's training loss
    _gen: torch.Generator | None = field(default=None, repr=False)

    def loss(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        """The mean training loss of a batch."""
        return self.objective.loss(output, target).mean()

    def rand(self, x: torch.Tensor, kind: str = "rand") -> torch.Tensor:
        """Random numbers shaped like x, drawn for the global batch and sliced to this rank."""
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        n = self.global_size or x.shape[0]
        fn = torch.rand if kind == "rand" else torch.randn
        full = fn((n, *x.shape[1:]), generator=self._gen, dtype=x.dtype)
        return full[self.offset:self.offset + x.shape[0]].to(x.device)

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """A uniform random point of the threat's ball around x (and in the bounds), drawn for the
        global batch with the threat model's own ``random_delta`` and sliced to this rank."""
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        n = self.global_size or x.shape[0]
        full = self.threat.random_delta((n, *x.shape[1:]), self._gen, x.dtype)
        return self.threat.project(x, x + full[self.offset:self.offset + x.shape[0]].to(x.device))


class _UnitGradPerSample(torch.autograd.Function):
    """Identity forward; backward rescales each sample's output gradient to max-abs 1 (in float32)."""

    @staticmethod
    def forward(ctx, out):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        peak = grad.abs().flatten(1).amax(1).reshape(-1, *([1] * (grad.dim() - 1)))
        return torch.where(peak > 0, grad / peak.clamp_min(torch.finfo(grad.dtype).tiny), grad)


class Float32Gradients(nn.Module):
    """The model of an inner attack under mixed precision: outputs cast to float32 before the loss,
    and each sample's gradient with respect to them rescaled to max-abs 1 before it enters the
    low-precision backward pass.

    Why: in fp16 (smallest normal 6e-5, subnormal 6e-8) the output gradient of a confidently
    classified point (softmax(z) - onehot(y), entries ~ exp(-margin)) flushes to zero, the input
    gradient becomes 0 and ``sign(0) = 0``: the attack takes no step and the model looks robust.
    Rescaling sample i's output gradient g_i by 1 / max|g_i| > 0 keeps the loss and the outputs as
    they are and scales sample i's input gradient by the same positive factor, so the direction of
    every steepest-ascent step is unchanged (linf: sign(g); l2: g / ||g||; l1: top-k of |g|) while the
    numbers in the backward pass stay near 1. bf16 has float32's exponent range and does not
    underflow; it gets the same treatment (float32 loss, O(1) backward). Outputs are batch-first
    (row i is sample i); in eval mode (as inner attacks run) samples do not interact, so the
    rescaling is exact. The wrapped model is ``.module`` (the engine's eval mode reaches it)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        out = self.module(x)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() == 0:
            return out
        return _UnitGradPerSample.apply(out.float())


def for_inner_attack(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The model an inner attack should differentiate: ``Float32Gradients(model)`` while autocast is on
    for `x`'s device (mixed-precision training), else `model` itself (float32: bit-identical)."""
    return Float32Gradients(model) if torch.is_autocast_enabled(x.device.type) else model


def standard(model: nn.Module, x, y, ctx: BatchContext):
    """Empirical risk minimisation: the mean objective loss l(f(x), y) (CE for classifiers)."""
    logits = model(x)
    return ctx.loss(logits, y), logits


def pgd_at(model: nn.Module, x, y, ctx: BatchContext):
    """PGD adversarial training (Madry et al. 2018): l(f(x'), y), x' = the last PGD iterate on the
    same objective from a random start (``PGD.for_training``: no early stopping, no extra forward
    passes: the cost of the hand-written loop)."""
    if ctx.threat.eps == 0:
        return standard(model, x, y, ctx)
    s = ctx.settings
    step = s.attack_step_size if s.attack_step_size is not None else 2.5 * ctx.threat.eps / s.attack_steps
    attack = PGD.for_training(ctx.threat, ctx.objective, steps=s.attack_steps, step_size=step,
                              starting_points=ctx.random_start(x), seed=ctx.seed)
    inner = for_inner_attack(ctx.attack_model or model, x)
    with eval_mode(inner):
        x_adv = attack(inner, x, y).x_adv.detach()
    logits = model(x_adv)
    return ctx.loss(logits, y), logits


def _input_grad(model, x, y, objective: Objective, create_graph: bool = False):
    x = x.detach().requires_grad_(True) if not x.requires_grad else x
    loss = objective.loss(model(x), y).mean()
    grad, = torch.autograd.grad(loss, x, create_graph=create_graph)
    return grad


def fgsm_rs(model: nn.Module, x, y, ctx: BatchContext):
    """FGSM with a random start (Wong et al. 2020): delta0 ~ U(-eps, eps),
    delta = clip_eps(delta0 + alpha * sign(grad)), alpha = 1.25 eps by default.

    Trains on the point after the step. With ``grad_align > 0`` adds the GradAlign regulariser
    (Andriushchenko & Flammarion 2020): lambda * (1 - cos(grad_x l(x), grad_x l(x + eta))),
    eta ~ U[-eps, eps], differentiated through both gradients (double backprop).
    """
    threat = ctx.threat
    if threat.eps == 0:
        return standard(model, x, y, ctx)
    alpha = ctx.settings.fgsm_alpha if ctx.settings.fgsm_alpha is not None else 1.25 * threat.eps
    x0 = ctx.random_start(x)
    inner = for_inner_attack(ctx.attack_model or model, x)
    with eval_mode(inner):
        grad = _input_grad(inner, x0, y, ctx.objective)
    x_adv = threat.project(x, x0 + threat.step(grad, alpha)).detach()
    logits = model(x_adv)
    loss = ctx.loss(logits, y)
    if ctx.settings.grad_align > 0:
        eta_point = ctx.random_start(x)
        g1 = _input_grad(model, x.detach().requires_grad_(True), y, ctx.objective, create_graph=True).flatten(1)
        g2 = _input_grad(model, eta_point.detach().requires_grad_(True), y, ctx.objective, create_graph=True).flatten(1)
        cos = F.cosine_similarity(g1, g2, dim=1, eps=1e-12)
        loss = loss + ctx.settings.grad_align * (1 - cos).mean()
    return loss, logits


def trades(model: nn.Module, x, y, ctx: BatchContext):
    """TRADES (Zhang et al. 2019): l(f(x), y) + beta * D(f(x'), f(x)), x' from x + 0.001 N(0, I) by
    ``attack_steps`` projected steepest-ascent steps on D (model in eval mode). D is the objective's
    ``divergence``: KL(p(x) || p(x')) for classifiers, the mean squared output difference for regression."""
    threat = ctx.threat
    if threat.eps == 0:
        return standard(model, x, y, ctx)
    objective, s = ctx.objective, ctx.settings
    step = s.attack_step_size if s.attack_step_size is not None else 2.5 * threat.eps / s.attack_steps
    inner = for_inner_attack(ctx.attack_model or model, x)
    with eval_mode(inner):
        with torch.no_grad():
            out_clean = inner(x)
        x_adv = threat.project(x, x + 0.001 * ctx.rand(x, "randn"))
        for _ in range(s.attack_steps):
            x_req = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                div = objective.divergence(inner(x_req), out_clean, y).sum()
                grad, = torch.autograd.grad(div, x_req)
            x_adv = threat.project(x, x_adv.detach() + threat.step(grad, step))
    # one forward over clean and adversarial points (DDP allows one forward per backward)
    both = model(torch.cat([x, x_adv.detach()]))
    logits, logits_adv = both[: x.shape[0]], both[x.shape[0]:]
    div = objective.divergence(logits_adv, logits, y).mean()
    return ctx.loss(logits, y) + s.trades_beta * div, logits


def llr(model: nn.Module, x, y, ctx: BatchContext):
    """Local linearity regularisation (Qin et al. 2019):
    l(x) + lambda * gamma(eps, x) + mu * |delta_LLR^T grad_x l(x)|, with double backprop."""
    if ctx.threat.eps == 0:
        return standard(model, x, y, ctx)
    s = ctx.settings
    gamma, delta, grad, loss_x = local_linearity(model, x, y, ctx.threat, ctx.objective, ctx.random_start(x),
                                                 s.llr_steps, create_graph=True)
    lin = (delta * grad).flatten(1).sum(1).abs()
    loss = loss_x.mean() + s.llr_lambda * gamma.mean() + s.llr_mu * lin.mean()
    with torch.no_grad():
        logits = model(x)
    return loss, logits


# ----- on-manifold adversarial training (Stutz et al. 2019) ------------------------------------------
DEFAULT_ETA = 0.5


def make_on_manifold_method(vae: VAE | None = None, eta: float = DEFAULT_ETA, steps: int = 10,
                            rel_step: float = 0.25, clean_weight: float = 0.5, conditional: bool = True) -> Callable:
    """On-manifold adversarial training (Stutz et al. 2019): train on latent-space adversarial examples
    x~ = decode(mu(x) + zeta), ||zeta||_inf <= eta, found by PGD on zeta through a VAE's decoder, mixed
    with clean examples: loss = w CE(f(x), y) + (1 - w) CE(f(x~), y), x~ the last latent PGD iterate
    (``steps`` sign steps of ``rel_step * eta`` from a random start in the latent box). It improves
    generalisation (on-manifold robustness behaves like generalisation) without buying pixel robustness.

    ``ctx.threat.eps`` is not used (the latent radius is ``eta``); ``eta = 0`` is standard training.
    With a class-conditional VAE the latent attack encodes and decodes with the batch's labels (the
    class-y model, as Stutz et al.'s class-specific VAE-GANs), so the adversarial example keeps its
    class. ``vae`` None: the cached MNIST VAE (``robustlab.models.vae.pretrained_vae``, trained on first
    use), class-conditional if ``conditional`` (the unconditional variant did not reproduce Stutz et
    al.: a latent step can change the digit); a given ``vae`` decides by itself."""
    if vae is None:
        vae = pretrained_vae(VAEConfig(conditional=conditional))
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)

    def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
        if eta == 0:
            return standard(model, x, y, ctx)
        threat = LatentThreat(vae, eta, labels=y if vae.conditional else None)
        attack = ParametricPGD.for_training(threat, "ce", steps=steps, rel_step=rel_step, random_start=True,
                                            seed=ctx.seed)
        inner = for_inner_attack(ctx.attack_model or model, x)
        with eval_mode(inner):
            x_adv = attack(inner, x, y).x_adv.detach()
        both = model(torch.cat([x, x_adv]))
        logits, logits_adv = both[: x.shape[0]], both[x.shape[0]:]
        loss = clean_weight * F.cross_entropy(logits, y) + (1 - clean_weight) * F.cross_entropy(logits_adv, y)
        return loss, logits

    return on_manifold


_DEFAULT: dict[str, Callable] = {}


def on_manifold(model: nn.Module, x, y, ctx: BatchContext):
    """On-manifold adversarial training with the cached class-conditional MNIST VAE and eta = 0.5
    (``make_on_manifold_method``; the VAE is trained and cached on first use). The latent radius is
    fixed; ``ctx.threat.eps`` is not used."""
    if "method" not in _DEFAULT:
        _DEFAULT["method"] = make_on_manifold_method(None, DEFAULT_ETA, conditional=True)
    return _DEFAULT["method"](model, x, y, ctx)

# adversarial: trains against an adversary (catastrophic-overfitting checks; checkpoints selected on
# robust accuracy unless select_on="clean"); settings: the method's own settings model;
# distributed=False: not supported under DDP.
METHODS = Registry("training method")
METHODS.register("standard", standard, adversarial=False, objectives="any")
METHODS.register("pgd", pgd_at, aliases=("pgd_at",), adversarial=True, settings=PGDSettings, objectives="any")
METHODS.register("fgsm_rs", fgsm_rs, adversarial=True, settings=FGSMRSSettings, objectives="any")
METHODS.register("trades", trades, adversarial=True, settings=TradesSettings,
                 objectives="with a divergence (classification, regression)")
METHODS.register("llr", llr, adversarial=True, settings=LLRSettings, distributed=False, objectives="any")
METHODS.register("on_manifold", on_manifold, adversarial=True, select_on="clean",
                 objectives="classification (1x28x28 inputs: the MNIST VAE)")


def get_method(name: str) -> Callable:
    return METHODS.get(name)


def list_methods(**where) -> list[str]:
    return METHODS.names(**where)


def method_settings_fields() -> dict[str, tuple]:
    """The fields of every registered method's settings model, by name, as ``create_model`` takes
    them. Two methods may share a field (PGD-AT and TRADES: ``attack_steps``) only with the same
    declaration."""
    fields: dict[str, tuple] = {}
    for name, meta in METHODS.items():
        model = meta.get("settings")
        for key, info in (model.model_fields.items() if model is not None else ()):
            if key in fields and repr(fields[key][1]) != repr(info):
                raise TypeError(f"method {name!r} declares setting {key!r} differently from another method")
            fields[key] = (info.annotation, info)
    return fields


#: every method's settings with their defaults (the settings of a BatchContext built without a TrainConfig)
MethodSettings = create_model("MethodSettings", __base__=StrictSettings, __module__=__name__, **method_settings_fields())
