"""Clean-label backdoor (Turner et al. 2019, "Label-Consistent Backdoor Attacks").

A backdoor whose poisons keep their correct labels: they are drawn only from the target class, so a
reviewer sees correctly labelled images. To make the model rely on the trigger rather than on the natural
features of the target class, each poison is first made hard to classify: an untargeted adversarial example
of a surrogate model (the engine's PGD on cross-entropy, Linf 8/255, 100 steps), then the trigger is stamped
on it, possibly at a reduced amplitude (less visible). At test time the full trigger turns any input into
the target class.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..attacks import PGD
from ..errors import InputError
from ..objectives import CrossEntropy
from ..threat import ThreatModel
from .base import POISONS, Backdoor, check_rate, draw_without_replacement
from .delusive import attack_in_batches, engine_seed

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def checker_patch(channels: int = 1, size: int = 3) -> torch.Tensor:
    """A ``size`` x ``size`` black-and-white checkerboard (white top-left corner), ``[channels, size, size]``."""
    i = torch.arange(size)
    return ((i[:, None] + i[None, :]) % 2 == 0).float().expand(channels, size, size).clone()


def patch_origin(position, height: int, width: int, h: int, w: int, margin: int = 1) -> tuple[int, int]:
    """Top-left pixel of an ``h`` x ``w`` patch: a corner name (``margin`` pixels in) or ``(row, col)``."""
    if isinstance(position, str):
        if position not in CORNERS:
            raise InputError(f"position must be one of {', '.join(CORNERS)} or (row, col); got {position!r}")
        row = margin if position.startswith("top") else height - h - margin
        col = margin if position.endswith("left") else width - w - margin
    else:
        row, col = (int(v) for v in position)
    if not (0 <= row <= height - h and 0 <= col <= width - w):
        raise InputError(f"a {h}x{w} trigger at {position} does not fit {height}x{width} images")
    return row, col


class CleanLabel(Backdoor):
    """Label-consistent backdoor (Turner et al. 2019). ``round(rate * n_target)`` images of class ``target``
    (``rate`` is the share of the *target class* poisoned, as the paper counts it) are drawn without
    replacement; each is replaced by the engine's untargeted PGD point on ``surrogate`` (cross-entropy,
    Linf ``eps`` = 8/255, ``steps`` = 100; ``perturb=False`` skips it: the "trigger only" baseline) and then
    stamped with the trigger at ``amplitude``: on the patch, ``x <- x + amplitude * (pattern - x)``
    (1: the BadNets patch itself; the paper's reduced amplitudes make it fainter). Labels are unchanged.
    ``apply_trigger`` stamps the full-amplitude trigger (test-time ASR)."""

    name = "clean_label"

    def __init__(self, surrogate: nn.Module | None = None, target: int = 0, rate: float = 0.1, eps: float = 8 / 255,
                 steps: int = 100, step_size: float | None = None, trigger: torch.Tensor | None = None,
                 position="bottom-right", amplitude: float = 1.0, perturb: bool = True, batch_size: int = 256,
                 progress: bool = False, seed: int = 0):
        super().__init__(target=target, rate=check_rate(rate, "CleanLabel"), seed=seed)
        if perturb and surrogate is None:
            raise InputError("CleanLabel needs a surrogate model to perturb its poisons (or perturb=False)")
        if not 0.0 < float(amplitude) <= 1.0:
            raise InputError(f"CleanLabel: amplitude must be in (0, 1]; got {amplitude}")
        self._surrogate, self._progress = surrogate, progress
        self.eps, self.steps, self.step_size, self.perturb = float(eps), int(steps), step_size, bool(perturb)
        self.trigger = checker_patch() if trigger is None else torch.as_tensor(trigger, dtype=torch.float32)
        if self.trigger.dim() != 3 or self.trigger.min() < 0 or self.trigger.max() > 1:
            raise InputError("the trigger must be a Tensor[C, h, w] pattern in [0, 1]")
        self.position = position if isinstance(position, str) else tuple(int(v) for v in position)
        self.amplitude, self.batch_size = float(amplitude), int(batch_size)

    def apply_trigger(self, x: torch.Tensor, amplitude: float = 1.0) -> torch.Tensor:
        """Copies of ``x`` ([N, C, H, W]) with the trigger stamped at ``amplitude`` (1: full, test time)."""
        c, h, w = self.trigger.shape
        if x.dim() != 4 or c not in (1, x.shape[1]):
            raise InputError(f"a {c}-channel trigger needs images [N, C, H, W] with C = {c} (or a 1-channel "
                             f"trigger); got {tuple(x.shape)}")
        row, col = patch_origin(self.position, x.shape[2], x.shape[3], h, w)
        out = x.clone()
        region = out[:, :, row:row + h, col:col + w]
        out[:, :, row:row + h, col:col + w] = region + amplitude * (self.trigger.to(x) - region)
        return out

    def trigger_mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """bool[H, W]: the pixels the trigger covers on images of ``shape`` ([N, C, H, W])."""
        c, h, w = self.trigger.shape
        row, col = patch_origin(self.position, shape[2], shape[3], h, w)
        mask = torch.zeros(shape[2], shape[3], dtype=torch.bool)
        mask[row:row + h, col:col + w] = True
        return mask

    def candidates(self, y: torch.Tensor) -> torch.Tensor:
        return y == self.target

    def _poison(self, x, y, generator):
        self._num_classes = int(y.max()) + 1
        pool = self.candidates(y)
        idx = draw_without_replacement(pool, round(self.rate * int(pool.sum())), generator)
        poisoned = torch.zeros(len(y), dtype=torch.bool)
        poisoned[idx] = True
        if len(idx) and self.perturb:
            threat, seed = ThreatModel("linf", self.eps), engine_seed(generator)
            x[idx] = attack_in_batches(
                lambda rows: PGD(threat, CrossEntropy(), steps=self.steps, step_size=self.step_size,
                                 early_stop=False, verify=False, seed=seed),
                self._surrogate, x[idx], y[idx], self.batch_size, "clean-label PGD", self._progress)
        if len(idx):
            x[idx] = self.apply_trigger(x[idx], self.amplitude)
        return x, y, poisoned


POISONS.register("clean_label", CleanLabel, doc=CleanLabel.__doc__.splitlines()[0])
