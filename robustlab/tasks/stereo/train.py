"""Training and evaluation of the stereo network on procedural scenes; attacks through the engine."""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from ... import runtime
from ...objectives import RegressionError
from ...threat import ThreatModel
from .data import StereoDataset
from .metrics import stereo_metrics
from .model import StereoNet

log = logging.getLogger(__name__)


def train_stereo(model: StereoNet, data: StereoDataset, steps: int = 800, batch_size: int = 8, lr: float = 1e-3,
                 seed: int = 0) -> list[float]:
    """Adam (one-cycle schedule) on the smooth-L1 disparity error over valid pixels; returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    device = runtime.device_of(model)  # batches go where the model is
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if steps >= 20:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    else:  # too short for a warm-up phase
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    model.train()
    losses = []
    start = time.perf_counter()
    while len(losses) < steps:
        for x, (disp, mask) in data.batches(batch_size, shuffle=True, generator=gen):
            x, disp, mask = (t.to(device) for t in (x, disp, mask))
            pred = model(x)
            loss = F.smooth_l1_loss(pred[mask], disp[mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if len(losses) >= steps:
                break
    log.info("trained %d steps in %.1fs, last loss %.3f", steps, time.perf_counter() - start, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Disparity maps of pairs x [B, 6, H, W] in eval mode, in batches."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def evaluate_stereo(model, data: StereoDataset, batch_size: int = 8, x: torch.Tensor | None = None) -> dict:
    """EPE / bad-k / D1 over valid non-occluded pixels (on `x` instead of the clean pairs if given)."""
    return stereo_metrics(predict(model, data.x if x is None else x, batch_size), data.disparity, data.mask)


#: An error threshold (px) that no disparity map reaches: attacks run all their steps, and the loss
#: error - threshold keeps float32 precision (1e9 would not: its float32 spacing is 64).
UNREACHED = 1000.0


def disparity_objective(threshold: float = 3.0) -> RegressionError:
    """Maximise the mean absolute disparity error over valid pixels (target = (disparity, mask));
    success = mean error above `threshold` pixels."""
    return RegressionError(threshold=threshold, error="l1")


def view_mask(views: str) -> torch.Tensor:
    """Threat-model mask over the 6 stacked channels: perturb 'left', 'right' or 'both' views."""
    m = torch.zeros(6, 1, 1)
    if views in ("left", "both"):
        m[:3] = 1
    if views in ("right", "both"):
        m[3:] = 1
    if views not in ("left", "right", "both"):
        raise ValueError("views must be 'left', 'right' or 'both'")
    return m


def stereo_threat(eps: float, views: str = "both") -> ThreatModel:
    return ThreatModel("linf", eps, mask=view_mask(views))
