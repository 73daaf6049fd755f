"""The one training loop: standard, PGD-AT, FGSM-RS (+GradAlign), TRADES and LLR, on one process
or many (torch.distributed DDP under torchrun), with per-epoch clean/robust train/val accuracy and
loss, the robust generalisation gap, best-checkpoint selection on robust validation accuracy,
catastrophic-overfitting detection, local linearity, weight norm, optional parameter snapshots,
and exact resume from the last epoch checkpoint.

Determinism: every random draw of epoch e (shuffling, random starts) comes from generators seeded
by (seed, epoch, step) and drawn for the global batch, so a resumed run, and a run on 2 ranks with
batch B, end with the same weights as an uninterrupted single-process run with batch 2B.

Devices: the loop runs where the model it is given lives (``runtime.device_of``); batches travel there
with non-blocking copies from pinned memory on CUDA, the optimiser is built for the parameters there,
DDP gets ``device_ids=[index]`` on CUDA, and the epoch's sums stay on the device until the epoch ends
(one host read per epoch, not per step). Mixed precision (``amp``: bf16, or fp16 with a gradient
scaler whose state is resumed) covers the training forward/backward passes, the inner attacks
included (see ``methods.Float32Gradients``); the per-epoch measurements run in float32.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from ..progress import TENSORBOARD_DIR, postfix_due, progress_bar, tensorboard_writer, write_scalars

from ..attacks import FGSM, PGD, local_linearity
from ..data import Dataset
from ..errors import InputError
from ..objectives import CrossEntropy, Objective, labels_checked
from .. import runtime
from ..threat import ThreatModel
from .checkpoints import check_compatible, load_state, save_state, save_weights
from .config import TrainConfig
from .methods import METHODS, BatchContext, get_method

log = logging.getLogger(__name__)


def lr_at(cfg: TrainConfig, progress: float, world_size: int = 1, warmup_fraction: float = 0.0) -> float:
    """Learning rate at `progress` in [0, 1] of training (after linear scaling and warm-up)."""
    base = cfg.lr * (world_size if cfg.lr_scaling == "linear" else 1)
    if cfg.schedule == "cyclic":  # one cycle: 0 -> lr at 2/5 of training -> 0 (Wong et al. 2020)
        peak = 0.4
        lr = base * (progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak)))
    elif cfg.schedule == "step":
        lr = base * 0.1 ** sum(progress >= m for m in cfg.step_milestones)
    else:
        lr = base
    if warmup_fraction > 0 and progress < warmup_fraction:
        start = cfg.lr if cfg.lr_scaling == "linear" else 0.0
        lr = start + (lr - start) * progress / warmup_fraction
    return lr


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _seed(cfg: TrainConfig, epoch: int, step: int = 0) -> int:
    return (cfg.seed * 1_000_003 + epoch * 10_007 + step) % (2 ** 62)


def is_catastrophic_overfitting(best_pgd_acc: float, pgd_acc: float, fgsm_acc: float) -> bool:
    """Catastrophic overfitting (Wong et al. 2020): PGD accuracy on training points falls below half
    of its best value so far while FGSM accuracy stays at least 0.3 above it."""
    return best_pgd_acc > 0.2 and pgd_acc < 0.5 * best_pgd_acc and fgsm_acc - pgd_acc > 0.3


def _selection_score(cfg: TrainConfig, record: dict) -> tuple:
    """Checkpoint selection on held-out validation data (never test data): robust accuracy first
    (clean accuracy breaks ties) for adversarial methods, clean accuracy for standard training and for
    methods registered with ``select_on="clean"`` (their adversary is not the pixel threat, e.g. on_manifold)."""
    split = "val" if "val_acc" in record else "train"
    meta = METHODS.metadata(cfg.method)
    if not meta.get("adversarial", True) or meta.get("select_on") == "clean":
        return (record[f"{split}_acc"],)
    return (record[f"{split}_robust_acc"], record[f"{split}_acc"])


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _all_sum(values: torch.Tensor) -> list[float]:
    """The float64 sums `values` added over every rank, read on the host once. The all-reduce runs on the
    device the process group's backend needs (NCCL: this rank's CUDA device; gloo and others: the CPU)."""
    rank, world = runtime.world()
    if world > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        values = values.to(device)
        dist.all_reduce(values)
    return values.tolist()


def _to_device(xb: torch.Tensor, yb: Any, device: torch.device) -> tuple[torch.Tensor, Any]:
    """A batch on `device`: unchanged when it is there already; to CUDA through pinned memory with
    non-blocking copies (a batch from a pinning DataLoader is not pinned again)."""
    cuda = device.type == "cuda"

    def move(t):
        if not isinstance(t, torch.Tensor) or t.device == device:
            return t
        if cuda and t.device.type == "cpu" and not t.is_pinned():
            t = t.pin_memory()
        return t.to(device, non_blocking=cuda)

    if isinstance(yb, tuple):
        return move(xb), tuple(move(t) for t in yb)
    return move(xb), move(yb)


def measure(model: nn.Module, data: Dataset, threat: ThreatModel, steps: int, seed: int,
            fgsm: bool = False, linearity: bool = False, batch_size: int = 500,
            objective: Objective | None = None) -> dict:
    """For any task's objective: clean accuracy (the share of points where the objective does not
    succeed; for a classifier, correctly classified) and mean objective loss, the same under PGD,
    optionally under FGSM, local linearity gamma and the input-gradient cosine of GradAlign, on
    `data` (this rank's shard; sums are all-reduced across ranks)."""
    objective = objective if objective is not None else CrossEntropy()
    was = model.training
    model.eval()
    rank, world = runtime.world()
    device = runtime.device_of(model)
    shard = data.take(torch.arange(rank, len(data), world))
    keys = ("n", "correct", "loss", "robust", "robust_loss", "fgsm", "gamma", "cos")
    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)  # read once, after the last batch
    s = {k: sums[i] for i, k in enumerate(keys)}  # views: adding to one adds to `sums`
    try:
        with torch.autocast(device.type, enabled=False):  # float32, whatever the caller's autocast
            for i, (xb, yb) in enumerate(shard.batches(batch_size)):
                xb, yb = _to_device(xb, yb, device)
                _measure_batch(s, model, xb, yb, threat, objective, steps, seed, seed + i, fgsm, linearity)
    finally:
        model.train(was)
    s = dict(zip(keys, _all_sum(sums)))
    n = max(s["n"], 1)
    out = {"acc": s["correct"] / n, "loss": s["loss"] / n, "robust_acc": s["robust"] / n, "robust_loss": s["robust_loss"] / n}
    if fgsm:
        out["fgsm_acc"] = s["fgsm"] / n
    if linearity and threat.eps > 0:
        out["local_linearity"] = s["gamma"] / n
        out["grad_cosine"] = s["cos"] / n
    return out


def _measure_batch(s: dict, model: nn.Module, xb, yb, threat: ThreatModel, objective: Objective, steps: int,
                   seed: int, batch_seed: int, fgsm: bool, linearity: bool) -> None:
    """Add one batch's sums to `s` (float64 views on the model's device; nothing is read on the host):
    clean, PGD (and FGSM) successes and losses, and local linearity with the GradAlign cosine from the
    batch's random starts (seeded by `batch_seed`)."""
    def add(key: str, t: torch.Tensor) -> None:
        s[key] += t.sum().to(s[key])

    with torch.no_grad():
        out = model(xb)
    s["n"] += xb.shape[0]
    add("correct", ~objective.success(out, yb))
    add("loss", objective.loss(out, yb))
    if threat.eps == 0:
        for k in ("robust", "fgsm"):
            add(k, ~objective.success(out, yb))
        add("robust_loss", objective.loss(out, yb))
        return
    res = PGD(threat, objective, steps=steps, step_size=2.5 * threat.eps / steps, early_stop=False, seed=seed)(model, xb, yb)
    with torch.no_grad():
        out_adv = model(res.x_adv)
    add("robust", ~objective.success(out_adv, yb))
    add("robust_loss", objective.loss(out_adv, yb))
    if fgsm:
        add("fgsm", ~FGSM(threat, objective, seed=seed)(model, xb, yb).success)
    if linearity:
        ctx = BatchContext(threat, batch_seed, objective=objective)
        with torch.enable_grad():
            gamma, _, g1, _ = local_linearity(model, xb, yb, threat, objective, ctx.random_start(xb), steps=10)
            x_noisy = ctx.random_start(xb).requires_grad_(True)
            g2, = torch.autograd.grad(objective.loss(model(x_noisy), yb).sum(), x_noisy)
        add("gamma", gamma.detach())
        add("cos", F.cosine_similarity(g1.flatten(1), g2.flatten(1), dim=1, eps=1e-12).detach())


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_robust_acc: float | None = None
    best_score: tuple | None = None
    catastrophic_overfitting_epoch: int | None = None
    time_s: float = 0.0
    stopped_early: bool = False
    checkpoint_selection: str = ""  # how best.safetensors was chosen (``_selection_data``)


MIN_VALIDATION_SAMPLES = 1  # a smaller validation split cannot choose a checkpoint: the last one is kept
KEEP_LAST = "last: the validation split is empty, too small to choose a checkpoint"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class _TrainingState:
    """What the parts of ``train`` share: the model (``net``: wrapped in DDP on several processes;
    ``base``: unwrapped), its optimiser, the threat at the full eps, the objective, this process's
    place in the world, the checkpoint folder and the result so far."""

    cfg: TrainConfig
    net: nn.Module
    base: nn.Module
    optimizer: torch.optim.Optimizer
    averager: Any
    threat: ThreatModel
    objective: Objective
    method: Callable
    rank: int
    world: int
    ckpt: Path | None
    steps_per_epoch: int
    device: torch.device = torch.device("cpu")   # where the model lives: batches and sums go there
    scaler: Any = None   # torch.amp.GradScaler (enabled for fp16 only)
    labels_fit: bool = False   # every training label is a class of the model's outputs (``_labels_fit``, checked once)
    result: TrainResult = field(default_factory=TrainResult)
    start_epoch: int = 0
    best_train_pgd: float = 0.0   # best PGD accuracy on training points so far (catastrophic overfitting)

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.world


def train(model: nn.Module, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig,
          checkpoint_dir: str | Path | None = None, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
          regularizer: Callable | None = None, objective: Objective | None = None,
          threat: ThreatModel | None = None, tensorboard_dir: str | Path | None = None) -> TrainResult:
    """Train `model` in place (on every rank when torch.distributed is initialised).

    With `checkpoint_dir`, rank 0 writes ``last.safetensors``, ``best.safetensors`` (best robust
    validation accuracy) and ``state.pt`` after every epoch; ``resume=True`` continues from
    ``state.pt`` on every rank. ``regularizer(model, x, y, logits, ctx) -> scalar`` adds a term
    to the loss of any method. ``objective``: the task's training loss (default cross-entropy);
    training minimises its per-sample ``loss``, the inner attacks and the per-epoch measurements use
    it too, and "accuracy" is the share of points where it does not succeed. ``threat``: the
    threat model of the inner attacks (default: ``ThreatModel(cfg.norm, cfg.eps)``), e.g. one with
    a mask (the left view only); its eps is set from ``cfg.eps``. With ``cfg.tensorboard`` rank 0 writes
    every epoch's record as TensorBoard scalars (``epoch/<key>`` at step = epoch) into `tensorboard_dir`
    (default: ``tensorboard/`` beside `checkpoint_dir`, i.e. in the run folder).
    """
    state = _start(model, train_data, cfg, checkpoint_dir, objective, threat)
    if resume:
        _restore(state)
    train_eval = train_data.subset(cfg.eval_n)
    val_eval = _selection_data(state, val_data)
    state.best_train_pgd = max((h.get("train_robust_acc", 0.0) for h in state.result.history), default=0.0)
    if cfg.snapshot_steps and state.ckpt is not None and state.rank == 0 and state.start_epoch == 0:
        save_weights(state.base, state.ckpt / "snapshots" / "step_0000000.safetensors", {"step": "0"})
    with _tensorboard(cfg, checkpoint_dir, tensorboard_dir) as writer:
        _epochs(state, train_data, train_eval, val_eval, on_epoch, progress, regularizer, writer)
    return state.result


def _tensorboard(cfg: TrainConfig, checkpoint_dir, tensorboard_dir):
    """The TensorBoard writer of a run (rank 0, ``cfg.tensorboard``) as a context, else an empty context."""
    if not cfg.tensorboard:
        return contextlib.nullcontext(None)
    if tensorboard_dir is None and checkpoint_dir is None:
        raise InputError("tensorboard=True needs a folder for the event files: pass tensorboard_dir= (or checkpoint_dir=)")
    folder = Path(tensorboard_dir) if tensorboard_dir is not None else Path(checkpoint_dir).parent / TENSORBOARD_DIR
    writer = tensorboard_writer(folder)
    return writer if writer is not None else contextlib.nullcontext(None)


def _epochs(state: _TrainingState, train_data: Dataset, train_eval: Dataset, val_eval: Dataset | None, on_epoch,
            progress: bool, regularizer, writer) -> None:
    """The epochs still to run: train, measure, select, save, report (and the TensorBoard scalars)."""
    cfg = state.cfg
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        sums, lr, eps = _run_epoch(state, epoch, train_data, regularizer, progress)
        train_time = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "lr": lr, "eps": eps, "train_time_s": train_time, "world_size": state.world,
                  "train_objective": sums[0] / max(sums[2], 1), "train_objective_acc": sums[1] / max(sums[2], 1)}
        tr = _measure_epoch(state, epoch, record, train_eval, val_eval)
        co = _overfitting(state, record, tr)
        state.result.time_s += time.perf_counter() - t0
        record["elapsed_s"] = state.result.time_s
        is_best = _select(state, epoch, record)
        state.result.history.append(record)
        _save_epoch(state, epoch, is_best)
        if state.world > 1:
            dist.barrier()
        if on_epoch is not None and state.rank == 0:
            on_epoch(record)
        if writer is not None:
            write_scalars(writer, "epoch", record, epoch + 1)
        _log_epoch(state, epoch, record, tr, train_time, co)
        if co:
            state.result.catastrophic_overfitting_epoch = state.result.catastrophic_overfitting_epoch or epoch + 1
            if cfg.co_action == "stop":
                state.result.stopped_early = True
                break


def _start(model: nn.Module, train_data: Dataset, cfg: TrainConfig, checkpoint_dir, objective, threat) -> _TrainingState:
    """Check the settings against the world, wrap the model for DDP and build the optimiser."""
    objective = objective if objective is not None else CrossEntropy()
    method = get_method(cfg.method)
    rank, world = runtime.world()
    if world > 1 and not METHODS.metadata(cfg.method).get("distributed", True):
        raise InputError(f"training method {cfg.method!r} is not supported under DDP yet (LLR: double backprop); "
                         "train it on one process")
    device = runtime.device_of(model)
    scaler = _grad_scaler(cfg, device)
    if cfg.channels_last:
        model = runtime.to_channels_last(model)  # in place: the same parameters, another memory format
    net = model
    if world > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    base = _unwrap(net)
    optimizer = _make_optimizer(cfg, base)  # after the model is on its device: the state is created there
    averager = _local_sgd(cfg, net, world)
    net = runtime.compiled_model(net, cfg.compile)  # the training passes; the inner attacks and saving use `base`
    full_threat = ThreatModel(cfg.norm, cfg.eps) if threat is None else threat.with_eps(cfg.eps)
    if full_threat.has_per_sample_state:
        raise InputError("training draws random batches: give a threat model without per-sample state "
                         "(a shared mask, e.g. the views of a stereo pair)")
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and rank == 0:
        ckpt.mkdir(parents=True, exist_ok=True)
    return _TrainingState(cfg, net, base, optimizer, averager, full_threat, objective, method, rank, world, ckpt,
                          steps_per_epoch=math.ceil(len(train_data) / (cfg.batch_size * world)),
                          device=device, scaler=scaler)


def _grad_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of fp16 training (disabled, a pass-through, otherwise). fp16 gradients
    underflow below 6e-8: the loss is multiplied by a scale before the backward pass, the gradients
    divided by it before the step, and steps with inf/NaN gradients are skipped while the scale
    halves (it doubles after 2,000 good steps). bf16 has float32's range and needs no scaler."""
    if cfg.amp != "off":
        with warnings.catch_warnings(record=True) as caught:  # torch warns and turns autocast off for a dtype it lacks
            warnings.simplefilter("always")
            try:
                with torch.autocast(device.type, dtype=AMP_DTYPES[cfg.amp]):
                    pass
                why = next((str(w.message) for w in caught if "not support" in str(w.message)), None)
            except (RuntimeError, ValueError) as e:
                why = str(e)
        if why:
            raise InputError(f"--amp {cfg.amp} is not supported on {device} by this torch ({why.splitlines()[0]}); "
                             f"use --amp off{' or bf16' if cfg.amp == 'fp16' else ''}")
    try:
        return torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    except (RuntimeError, ValueError) as e:
        raise InputError(f"--amp fp16 needs a gradient scaler, which this torch lacks on {device}: {e}") from None


def _restore(state: _TrainingState) -> None:
    """Continue from the checkpoint folder's ``state.pt`` (when there is one): weights, optimiser,
    history, best epoch and time, after checking the settings and the model match."""
    if state.ckpt is None:
        raise InputError("resume=True needs a checkpoint directory")
    saved = load_state(state.ckpt, state.cfg.fingerprint(), ignore=state.cfg.output_only)
    if saved is None:
        return
    result = state.result
    check_compatible(state.base.state_dict(), saved["model"], state.ckpt / "state.pt")
    state.base.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])  # its tensors move to the parameters' device
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.start_epoch = saved["epoch"] + 1
    result.history = saved["history"]
    result.best_epoch, result.best_val_robust_acc = saved["best_epoch"], saved["best_val_robust_acc"]
    result.best_score = tuple(saved["best_score"]) if saved.get("best_score") is not None else None
    result.time_s = saved["time_s"]
    log.info("resuming from epoch %d", state.start_epoch)


def _selection_data(state: _TrainingState, val_data: Dataset | None) -> Dataset | None:
    """The validation points measured each epoch (at most ``eval_n``), and how the best checkpoint is
    chosen (``result.checkpoint_selection``): on them, on training points when there is no validation
    data, or, for a split under ``MIN_VALIDATION_SAMPLES``, the last epoch's weights (logged once)."""
    result = state.result
    if val_data is None:
        result.checkpoint_selection = "best on training points"
        return None
    if len(val_data) < MIN_VALIDATION_SAMPLES:
        result.checkpoint_selection = KEEP_LAST
        if state.rank == 0:
            log.warning("the validation split has %d samples, too few to choose a checkpoint: best.safetensors "
                        "is the last epoch's weights (checkpoint selection: last)", len(val_data))
        return None
    result.checkpoint_selection = "best on validation data"
    return val_data.subset(state.cfg.eval_n)


def _run_epoch(state: _TrainingState, epoch: int, data: Dataset, regularizer, progress: bool) -> tuple[list, float, float]:
    """One epoch of optimiser steps over a permutation seeded by (seed, epoch), each rank taking its
    slice of every global batch; returns the all-reduced (loss * n, correct, n), the last lr and eps.
    The sums stay on the model's device (float64) and are read once, at the end of the epoch."""
    cfg, rank, world = state.cfg, state.rank, state.world
    state.net.train()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(_seed(cfg, epoch)))
    sums = torch.zeros(3, dtype=torch.float64, device=state.device)  # loss * n, correct, n
    finite = _FiniteCheck(state.device, epoch)
    bar = progress_bar(range(state.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs} [{cfg.method}]",
                       unit="step", leave=False, disable=not progress or rank != 0)
    lr, eps = cfg.lr, cfg.eps
    slices = _epoch_slices(order, state)
    batches = data.batches_at((idx for idx, _, _ in slices), pin_memory=state.device.type == "cuda",
                              augment_seed=_seed(cfg, epoch))
    try:
        for step in bar:
            if step >= len(slices):  # too few samples left to give every rank one
                break
            idx, n_global, lo = slices[step]
            xb, yb = _to_device(*next(batches), state.device)
            if cfg.channels_last:
                xb = runtime.to_channels_last(xb)
            global_step = epoch * state.steps_per_epoch + step
            lr, eps = _schedule(state, global_step)
            ctx = BatchContext(state.threat.with_eps(eps), _seed(cfg, epoch, step + 1), cfg, attack_model=state.base,
                               global_size=n_global, offset=lo, objective=state.objective)
            with labels_checked(state.labels_fit):  # once all labels are known to fit, no per-batch check (a GPU stall)
                loss, logits = _step(state, xb, yb, ctx, regularizer, functools.partial(finite.check, step=step))
            state.labels_fit = state.labels_fit or _labels_fit(data, logits)
            if cfg.snapshot_steps and state.ckpt is not None and rank == 0 and (global_step + 1) % cfg.snapshot_steps == 0:
                save_weights(state.base, state.ckpt / "snapshots" / f"step_{global_step + 1:07d}.safetensors",
                             {"step": str(global_step + 1)})
            nb = xb.shape[0]
            sums[0] += loss.detach().double() * nb
            sums[1] += (~state.objective.success(logits.detach(), yb)).sum().double()
            sums[2] += nb
            if postfix_due(bar, step):  # a host read: every 20 steps of a tqdm bar, once per half heartbeat
                bar.set_postfix_str(_running_note(sums, lr))
    finally:
        bar.close()  # also when a step raises: a heartbeat never outlives its loop
    finite.raise_if_failed()
    return _all_sum(sums), lr, eps


def _running_note(sums: torch.Tensor, lr: float) -> str:
    """The epoch bar's postfix: the training loss and accuracy over the steps so far (one host read)."""
    loss, correct, n = (float(v) for v in sums.cpu())
    return f"loss {loss / max(n, 1):.3f}, acc {correct / max(n, 1):.3f}, lr {lr:.2g}"


class _FiniteCheck:
    """Stop on a non-finite training loss (a learning rate too high, an fp16 overflow): at its step where a
    read is free (``runtime.host_reads_are_free``: the CPU); elsewhere the first bad step is kept on the device
    and read once, at the end of the epoch (a read per step stalls a GPU)."""

    def __init__(self, device: torch.device, epoch: int):
        self.each_step = runtime.host_reads_are_free(device)
        self.epoch = epoch
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def check(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        if self.each_step:
            if bad:
                self._raise(float(loss.detach()), step)
        else:
            self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def raise_if_failed(self) -> None:
        if not self.each_step and int(self.first_bad) >= 0:
            self._raise(float("nan"), int(self.first_bad))

    def _raise(self, value: float, step: int) -> None:
        value_text = f"{value}" if value == value else "non-finite"
        raise FloatingPointError(f"training loss became {value_text} at epoch {self.epoch + 1}, step {step}; "
                                 "lower the learning rate")


def _labels_fit(data: Dataset, logits: torch.Tensor) -> bool:
    """Whether every class label of the training data lies in [0, classes) of the model's outputs `logits`:
    checked once, on the labels in host memory (an in-memory split's, or a streamed folder's listing), so no
    GPU stall; the steps after it skip ``labels_of``'s check of each batch (two reads of device tensors). False
    for targets that are not class labels, and for labels that do not fit (each batch is then checked, and the
    first bad one raises its clear error)."""
    labels = data.y if isinstance(data, Dataset) else getattr(data, "labels", None)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or logits.dim() != 2:
        return False
    if labels.numel() == 0:
        return True
    return bool((labels.min() >= 0) & (labels.max() < logits.shape[1]))  # one read, once per training run


def _epoch_slices(order: torch.Tensor, state: _TrainingState) -> list[tuple[torch.Tensor, int, int]]:
    """This rank's (indices, global batch size, offset in the global batch) of each step of an epoch
    over `order` (DistributedSampler semantics): step k's global batch is ``order[k*B:(k+1)*B]``, each
    rank its contiguous slice; the steps stop where too few samples are left to give every rank one."""
    out = []
    for step in range(state.steps_per_epoch):
        idx_global = order[step * state.global_batch:(step + 1) * state.global_batch]
        n_global = idx_global.numel()
        if n_global < state.world:
            break
        lo, hi = _rank_slice(n_global, state.rank, state.world)
        out.append((idx_global[lo:hi], n_global, lo))
    return out


def _schedule(state: _TrainingState, global_step: int) -> tuple[float, float]:
    """Set the learning rate of `global_step` on the optimiser; returns it and the (warmed-up) eps."""
    cfg = state.cfg
    total_steps = state.steps_per_epoch * cfg.epochs
    lr = lr_at(cfg, global_step / total_steps, state.world, cfg.warmup_epochs / cfg.epochs)
    for g in state.optimizer.param_groups:
        g["lr"] = lr
    eps = cfg.eps
    if cfg.eps_warmup_epochs > 0:
        eps = cfg.eps * min(1.0, (global_step + 1) / (cfg.eps_warmup_epochs * state.steps_per_epoch))
    return lr, eps


def _step(state: _TrainingState, xb, yb, ctx: BatchContext, regularizer, check_finite: Callable):
    """One optimiser step on this rank's part of a global batch; returns (loss, outputs). The loss goes
    to `check_finite` before the backward pass (``_FiniteCheck``). With ``amp``
    the method's forward passes (its inner attack included) run under autocast; fp16 scales the loss
    for the backward pass (``_grad_scaler``)."""
    amp = state.cfg.amp
    with torch.autocast(state.device.type, dtype=AMP_DTYPES.get(amp, torch.bfloat16), enabled=amp != "off"):
        loss, logits = state.method(state.net, xb, yb, ctx)
        if regularizer is not None:
            loss = loss + regularizer(state.net, xb, yb, logits, ctx)
    check_finite(loss)
    # DDP averages gradients over ranks; weight each rank by its share of the global batch
    scaled = loss * (xb.shape[0] * state.world / ctx.global_size) if state.world > 1 else loss
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(scaled).backward()
    state.scaler.step(state.optimizer)  # a plain optimizer.step() unless fp16
    state.scaler.update()
    if state.averager is not None:
        state.averager.average_parameters(state.base.parameters())
    return loss, logits


def _measure_epoch(state: _TrainingState, epoch: int, record: dict, train_eval: Dataset, val_eval: Dataset | None) -> dict:
    """Add the epoch's measurements to `record`: clean/PGD/FGSM accuracy and loss on training points,
    local linearity, weight norm, and with validation data its accuracies and the generalisation gaps.
    Returns the training-point measurements."""
    cfg, base = state.cfg, state.base
    seed = _seed(cfg, epoch, 10 ** 6)
    tr = measure(base, train_eval, state.threat, cfg.eval_steps, seed, fgsm=True, linearity=True, objective=state.objective)
    record.update({
        "train_acc": tr["acc"], "train_loss": tr["loss"], "train_robust_acc": tr["robust_acc"],
        "train_robust_loss": tr["robust_loss"], "train_fgsm_acc": tr["fgsm_acc"],
        "weight_norm": float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in base.parameters()))),
    })
    for k in ("local_linearity", "grad_cosine"):
        if k in tr:
            record[k] = tr[k]
    if val_eval is not None:
        va = measure(base, val_eval, state.threat, cfg.eval_steps, seed, objective=state.objective)
        record.update({"val_acc": va["acc"], "val_loss": va["loss"], "val_robust_acc": va["robust_acc"],
                       "val_robust_loss": va["robust_loss"],
                       "generalization_gap": tr["acc"] - va["acc"],
                       "robust_generalization_gap": tr["robust_acc"] - va["robust_acc"]})
    return tr


def _overfitting(state: _TrainingState, record: dict, tr: dict) -> bool:
    """Catastrophic overfitting this epoch (adversarial methods only); records it and the best PGD accuracy."""
    adversarial = METHODS.metadata(state.cfg.method).get("adversarial", True)
    co = adversarial and is_catastrophic_overfitting(state.best_train_pgd, tr["robust_acc"], tr["fgsm_acc"])
    record["catastrophic_overfitting"] = bool(co)
    state.best_train_pgd = max(state.best_train_pgd, tr["robust_acc"])
    return bool(co)


def _select(state: _TrainingState, epoch: int, record: dict) -> bool:
    """Whether this epoch is the best so far (``_selection_score``; always, when the validation split is
    too small to choose: ``KEEP_LAST``); updates the result's best."""
    result = state.result
    if result.checkpoint_selection == KEEP_LAST:
        result.best_epoch, result.best_score, result.best_val_robust_acc = epoch + 1, None, None
        return True
    selection = _selection_score(state.cfg, record)
    is_best = result.best_score is None or selection > tuple(result.best_score)
    if is_best:
        result.best_epoch, result.best_score = epoch + 1, selection
        result.best_val_robust_acc = record.get("val_robust_acc", record["train_robust_acc"])
    return is_best


def _save_epoch(state: _TrainingState, epoch: int, is_best: bool) -> None:
    """Rank 0: last (and best) weights, the epoch snapshot when due, and ``state.pt`` for resuming."""
    if state.ckpt is None or state.rank != 0:
        return
    cfg, base, ckpt, result = state.cfg, state.base, state.ckpt, state.result
    save_weights(base, ckpt / "last.safetensors", {"epoch": str(epoch + 1)})
    if is_best:
        save_weights(base, ckpt / "best.safetensors", {"epoch": str(epoch + 1)})
    if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
        save_weights(base, ckpt / "snapshots" / f"epoch_{epoch + 1:04d}.safetensors", {"epoch": str(epoch + 1)})
    save_state(ckpt, {
        "model": base.state_dict(), "optimizer": state.optimizer.state_dict(), "epoch": epoch,
        "scaler": state.scaler.state_dict() if state.scaler is not None else {},
        "history": result.history, "best_epoch": result.best_epoch,
        "best_val_robust_acc": result.best_val_robust_acc, "best_score": result.best_score,
        "time_s": result.time_s, "fingerprint": cfg.fingerprint(),
    })


def _log_epoch(state: _TrainingState, epoch: int, record: dict, tr: dict, train_time: float, co: bool) -> None:
    if state.rank != 0:
        return
    val = f" | val acc {record['val_acc']:.3f} robust {record['val_robust_acc']:.3f}" if "val_acc" in record else ""
    log.info("epoch %d/%d: train acc %.3f robust %.3f%s (%.1fs)", epoch + 1, state.cfg.epochs, tr["acc"],
             tr["robust_acc"], val, train_time)
    if co:
        log.warning(
            "catastrophic overfitting at epoch %d: PGD accuracy on training points fell to %.3f "
            "(best %.3f) while FGSM accuracy is %.3f; use a smaller FGSM step, GradAlign, or PGD training",
            epoch + 1, tr["robust_acc"], state.best_train_pgd, tr["fgsm_acc"])


def _rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous, nearly equal slices of a global batch of n samples."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _local_sgd(cfg: TrainConfig, net: nn.Module, world: int):
    """Post-local SGD (Lin et al. 2020) with PyTorch's own hook and PeriodicModelAverager: global
    all-reduce for the first step, then each rank takes local steps (its gradients are all-reduced
    only within a subgroup of itself) and the models are averaged over all ranks every
    ``local_sgd_period`` steps."""
    if cfg.local_sgd_period <= 0 or world == 1:
        return None
    from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import PostLocalSGDState, post_localSGD_hook
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    warmup = 1  # steps of global all-reduce before local SGD starts
    local, _ = dist.new_subgroups(group_size=1)  # one rank per subgroup: no gradient exchange after warm-up
    state = PostLocalSGDState(process_group=None, subgroup=local, start_localSGD_iter=warmup)
    net.register_comm_hook(state, post_localSGD_hook)
    group = dist.new_group(list(range(world)))
    return PeriodicModelAverager(period=cfg.local_sgd_period, warmup_steps=warmup, process_group=group)
