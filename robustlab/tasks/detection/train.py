"""Training the detector with the shared training methods (``standard``: the detection loss on clean
scenes; ``pgd``: PGD adversarial training, Madry et al. 2018, on the same loss), Adam with a
one-cycle schedule; and detecting in batches."""
from __future__ import annotations

import logging
import time

import torch

from ... import runtime
from ...progress import postfix_due, progress_bar
from ...threat import ThreatModel
from ...training import TrainConfig
from ...training.methods import BatchContext, get_method
from .data import DetectionDataset
from .objectives import Untargeted

log = logging.getLogger(__name__)


def train_detector(model, data: DetectionDataset, steps: int = 1500, batch_size: int = 32, lr: float = 3e-3,
                   seed: int = 0, method: str = "standard", eps: float = 0.0, attack_steps: int = 3,
                   progress: bool = True) -> list[float]:
    """Minimise the detection loss (``method`` from the shared registry on the ``Untargeted``
    objective, i.e. the training loss on the ground truth; ``pgd`` with an Linf ball of ``eps``);
    returns the per-step losses. The model is left in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = runtime.device_of(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15) if steps >= 20 \
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    fn = get_method(method)
    settings = TrainConfig(method=method, eps=eps, attack_steps=attack_steps)
    threat = ThreatModel("linf", eps)
    losses: list[float] = []
    start = time.perf_counter()
    bar = progress_bar(range(steps), desc=f"detector ({method})", unit="step", disable=not progress, mininterval=5)
    batches = iter(())
    for i in bar:
        try:
            x, target = next(batches)
        except StopIteration:
            batches = data.batches(batch_size, shuffle=True, generator=gen)
            x, target = next(batches)
        x, target = x.to(device), [t.to(device) for t in target]
        ctx = BatchContext(threat, seed * 100_003 + i, settings, objective=Untargeted())
        model.train()
        loss, _ = fn(model, x, target, ctx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if postfix_due(bar, i, 100):
            bar.set_postfix(loss=round(losses[-1], 3))
    model.eval()
    log.info("trained the detector (%s) for %d steps in %.0f s, final loss %.3f", method, steps,
             time.perf_counter() - start, sum(losses[-50:]) / len(losses[-50:]))
    return losses


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The dense raw outputs of images x (eval mode), in batches, on the model's device."""
    model.eval()
    device = runtime.device_of(model)
    return torch.cat([model(x[i:i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)])
