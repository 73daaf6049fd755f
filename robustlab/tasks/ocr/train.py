"""Training and reading with the CRNN: CTC on freshly rendered synthetic lines (a new seeded batch
every step, so the net never sees a line twice), Adam with a one-cycle schedule."""
from __future__ import annotations

import logging
import time

import torch
from ... import runtime
from ...progress import progress_bar

from .metrics import ocr_metrics
from .model import CRNN, ctc_log_likelihood, greedy_decode
from .render import LineDataset, synthetic_lines

log = logging.getLogger(__name__)

#: training batches use seeds TRAIN_SEED_BASE + step (+ 10^6 * seed); evaluation sets use seeds below it
TRAIN_SEED_BASE = 10_000


def train_crnn(model: CRNN, steps: int = 1500, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
               width: int = 256, progress: bool = True) -> list[float]:
    """Minimise the CTC loss on rendered lines; returns the per-step losses."""
    torch.manual_seed(seed)
    device = runtime.device_of(model)  # the lines are rendered on the CPU, then go where the model is
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    losses = []
    start = time.perf_counter()
    bar = progress_bar(range(steps), desc="CRNN", unit="step", disable=not progress, mininterval=5)
    for i in bar:
        data = synthetic_lines(batch_size, TRAIN_SEED_BASE + 1_000_000 * seed + i, width=width)
        loss = -ctc_log_likelihood(model(data.x.to(device)), data.texts).mean() / 10
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()) * 10)
        if i % 100 == 0:
            bar.set_postfix(loss=round(losses[-1], 2))
    model.eval()
    log.info("trained the CRNN for %d steps in %.0f s (final loss %.2f)", steps, time.perf_counter() - start,
             sum(losses[-50:]) / len(losses[-50:]))
    return losses


@torch.no_grad()
def read(model: CRNN, x: torch.Tensor, batch_size: int = 64) -> list[str]:
    """Greedy transcriptions of lines [B, 1, 32, W]."""
    model.eval()
    out: list[str] = []
    device = runtime.device_of(model)
    for s in range(0, x.shape[0], batch_size):
        out.extend(greedy_decode(model(x[s:s + batch_size].to(device))))
    return out


def evaluate_crnn(model: CRNN, data: LineDataset) -> dict[str, float]:
    return ocr_metrics(read(model, data.x), data.texts)
