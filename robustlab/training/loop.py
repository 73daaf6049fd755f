"""The one training loop: standard, PGD-AT and FGSM-RS training with per-epoch clean/robust
train/val accuracy, best-checkpoint selection on robust validation accuracy, catastrophic
overfitting detection, and exact resume from the last epoch checkpoint.

Determinism: every random draw of epoch e (shuffling, random starts) comes from generators
seeded by (seed, epoch, step), so a resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attacks import FGSM, PGD
from ..data import Dataset
from ..errors import InputError
from ..threat import ThreatModel
from .checkpoints import load_state, save_state, save_weights
from .methods import BatchContext, get_method

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (all serialisable)."""

    method: str = "standard"          # standard | pgd | fgsm_rs
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"           # sgd | adam
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"        # constant | cyclic | step
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training for the step schedule
    norm: str = "linf"
    eps: float = 0.3
    eps_warmup_epochs: float = 0.0    # linear eps ramp from 0
    attack_steps: int = 10            # PGD-AT steps
    attack_step_size: float | None = None
    fgsm_alpha: float | None = None   # FGSM-RS step (default 1.25 eps)
    eval_n: int = 500                 # points for per-epoch clean/robust accuracy (train subset and val)
    eval_steps: int = 10              # PGD steps of the per-epoch robust accuracy
    co_action: str = "warn"           # catastrophic overfitting: warn | stop
    seed: int = 0

    def __post_init__(self):
        get_method(self.method)
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be >= 1")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; known: adam, sgd")
        if self.schedule not in ("constant", "cyclic", "step"):
            raise InputError(f"unknown schedule {self.schedule!r}; known: constant, cyclic, step")
        if self.co_action not in ("warn", "stop"):
            raise InputError("co_action must be 'warn' or 'stop'")
        ThreatModel(self.norm, self.eps)

    def fingerprint(self) -> dict:
        """Settings that must match for a resume to continue the same run."""
        d = asdict(self)
        d["step_milestones"] = list(d["step_milestones"])
        return d


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at `progress` in [0, 1] of training."""
    if cfg.schedule == "cyclic":  # one cycle: 0 -> lr at 2/5 of training -> 0 (Wong et al. 2020)
        peak = 0.4
        return cfg.lr * (progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak)))
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(progress >= m for m in cfg.step_milestones)
    return cfg.lr


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _seed(cfg: TrainConfig, epoch: int, step: int = 0) -> int:
    return (cfg.seed * 1_000_003 + epoch * 10_007 + step) % (2 ** 62)


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def measure(model: nn.Module, data: Dataset, threat: ThreatModel, steps: int, seed: int,
            fgsm: bool = False, batch_size: int = 500) -> dict:
    """Clean accuracy, CE loss and PGD accuracy (and optionally FGSM accuracy) on `data`."""
    was = model.training
    model.eval()
    n = len(data)
    correct = robust = fgsm_ok = 0
    loss_sum = robust_loss_sum = 0.0
    try:
        for xb, yb in data.batches(batch_size):
            with torch.no_grad():
                out = model(xb)
                correct += int((out.argmax(1) == yb).sum())
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            if threat.eps > 0:
                res = PGD(threat, "ce", steps=steps, step_size=2.5 * threat.eps / steps, early_stop=False, seed=seed)(model, xb, yb)
                with torch.no_grad():
                    out_adv = model(res.x_adv)
                robust += int((out_adv.argmax(1) == yb).sum())
                robust_loss_sum += float(F.cross_entropy(out_adv, yb, reduction="sum"))
                if fgsm:
                    r = FGSM(threat, "ce", seed=seed)(model, xb, yb)
                    fgsm_ok += int((~r.success).sum())
            else:
                robust, robust_loss_sum = correct, loss_sum
    finally:
        model.train(was)
    out = {"acc": correct / n, "loss": loss_sum / n, "robust_acc": robust / n, "robust_loss": robust_loss_sum / n}
    if fgsm:
        out["fgsm_acc"] = fgsm_ok / n if threat.eps > 0 else out["acc"]
    return out


def is_catastrophic_overfitting(best_pgd_acc: float, pgd_acc: float, fgsm_acc: float) -> bool:
    """Catastrophic overfitting (Wong et al. 2020): PGD accuracy on training points falls below half
    of its best value so far while FGSM accuracy stays at least 0.3 above it."""
    return best_pgd_acc > 0.2 and pgd_acc < 0.5 * best_pgd_acc and fgsm_acc - pgd_acc > 0.3


def _selection_score(cfg: TrainConfig, record: dict) -> tuple:
    """Checkpoint selection on held-out validation data (never test data): robust accuracy first
    (clean accuracy breaks ties) for adversarial methods, clean accuracy for standard training."""
    split = "val" if "val_acc" in record else "train"
    if cfg.method == "standard":
        return (record[f"{split}_acc"],)
    return (record[f"{split}_robust_acc"], record[f"{split}_acc"])


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_robust_acc: float | None = None
    best_score: tuple | None = None
    catastrophic_overfitting_epoch: int | None = None
    time_s: float = 0.0
    stopped_early: bool = False


def train(model: nn.Module, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig,
          checkpoint_dir: str | Path | None = None, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> TrainResult:
    """Train `model` in place. With `checkpoint_dir`, writes ``last.safetensors``,
    ``best.safetensors`` (best robust validation accuracy) and ``state.pt`` after every epoch;
    ``resume=True`` continues from ``state.pt``."""
    method = get_method(cfg.method)
    optimizer = _make_optimizer(cfg, model)
    full_threat = ThreatModel(cfg.norm, cfg.eps)
    result = TrainResult()
    start_epoch = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    if resume:
        if ckpt is None:
            raise InputError("resume=True needs a checkpoint directory")
        state = load_state(ckpt, cfg.fingerprint())
        if state is not None:
            from .checkpoints import _check_compatible

            _check_compatible(model.state_dict(), state["model"], ckpt / "state.pt")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = state["epoch"] + 1
            result.history = state["history"]
            result.best_epoch, result.best_val_robust_acc = state["best_epoch"], state["best_val_robust_acc"]
            result.best_score = tuple(state["best_score"]) if state.get("best_score") is not None else None
            result.time_s = state["time_s"]
            log.info("resuming from epoch %d", start_epoch)
    train_eval = train_data.subset(cfg.eval_n)
    val_eval = val_data.subset(cfg.eval_n) if val_data is not None else None
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    best_train_pgd = 0.0
    for h in result.history:
        best_train_pgd = max(best_train_pgd, h.get("train_robust_acc", 0.0))
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(_seed(cfg, epoch))
        loss_sum = acc_sum = 0.0
        seen = 0
        batches = train_data.batches(cfg.batch_size, shuffle=True, generator=gen)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs} [{cfg.method}]",
                   leave=False, disable=not progress or None)
        for step, (xb, yb) in enumerate(bar):
            global_step = epoch * steps_per_epoch + step
            lr = lr_at(cfg, global_step / total_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            eps = cfg.eps
            if cfg.eps_warmup_epochs > 0:
                eps = cfg.eps * min(1.0, (global_step + 1) / (cfg.eps_warmup_epochs * steps_per_epoch))
            ctx = BatchContext(full_threat.with_eps(eps), _seed(cfg, epoch, step + 1), cfg.attack_steps,
                               cfg.attack_step_size, cfg.fgsm_alpha)
            loss, logits = method(model, xb, yb, ctx)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(
                    f"training loss became {float(loss.detach())} at epoch {epoch}, step {step}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = yb.shape[0]
            loss_sum += float(loss.detach()) * n
            acc_sum += float((logits.argmax(1) == yb).sum())
            seen += n
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.2g}")
        train_time = time.perf_counter() - t0
        seed = _seed(cfg, epoch, 10 ** 6)
        tr = measure(model, train_eval, full_threat, cfg.eval_steps, seed, fgsm=True)
        record = {
            "epoch": epoch + 1, "lr": lr, "eps": eps, "train_time_s": train_time,
            "train_objective": loss_sum / seen, "train_objective_acc": acc_sum / seen,
            "train_acc": tr["acc"], "train_loss": tr["loss"], "train_robust_acc": tr["robust_acc"],
            "train_robust_loss": tr["robust_loss"], "train_fgsm_acc": tr["fgsm_acc"],
        }
        if val_eval is not None:
            va = measure(model, val_eval, full_threat, cfg.eval_steps, seed)
            record.update({"val_acc": va["acc"], "val_loss": va["loss"], "val_robust_acc": va["robust_acc"],
                           "val_robust_loss": va["robust_loss"],
                           "robust_generalization_gap": tr["robust_acc"] - va["robust_acc"]})
        # catastrophic overfitting: PGD accuracy on training points collapses while FGSM accuracy stays high
        co = cfg.method != "standard" and is_catastrophic_overfitting(best_train_pgd, tr["robust_acc"], tr["fgsm_acc"])
        record["catastrophic_overfitting"] = bool(co)
        best_train_pgd = max(best_train_pgd, tr["robust_acc"])
        result.time_s += time.perf_counter() - t0
        record["elapsed_s"] = result.time_s
        selection = _selection_score(cfg, record)
        is_best = result.best_score is None or selection > tuple(result.best_score)
        if is_best:
            result.best_epoch, result.best_score = epoch + 1, selection
            result.best_val_robust_acc = record.get("val_robust_acc", record["train_robust_acc"])
        result.history.append(record)
        if ckpt is not None:
            save_weights(model, ckpt / "last.safetensors", {"epoch": str(epoch + 1)})
            if is_best:
                save_weights(model, ckpt / "best.safetensors", {"epoch": str(epoch + 1)})
            save_state(ckpt, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "history": result.history, "best_epoch": result.best_epoch,
                "best_val_robust_acc": result.best_val_robust_acc, "best_score": result.best_score,
                "time_s": result.time_s,
                "fingerprint": cfg.fingerprint(),
            })
        if on_epoch is not None:
            on_epoch(record)
        log.info("epoch %d: train acc %.3f robust %.3f | val acc %s robust %s", epoch + 1, tr["acc"],
                 tr["robust_acc"], record.get("val_acc"), record.get("val_robust_acc"))
        if co:
            result.catastrophic_overfitting_epoch = result.catastrophic_overfitting_epoch or epoch + 1
            log.warning(
                "catastrophic overfitting at epoch %d: PGD accuracy on training points fell to %.3f "
                "(best %.3f) while FGSM accuracy is %.3f; use a smaller FGSM step, GradAlign, or PGD training",
                epoch + 1, tr["robust_acc"], best_train_pgd, tr["fgsm_acc"])
            if cfg.co_action == "stop":
                result.stopped_early = True
                break
    return result
