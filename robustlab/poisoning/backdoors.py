"""Backdoor and label poisons: BadNets, Blend, WaNet and LabelFlip.

Each backdoor poisons ``round(rate * N)`` training samples drawn without replacement (all-to-one: from the
samples whose label is not the target; all-to-all: from all, relabelled ``y -> (y + 1) mod K``), puts its
trigger on them with ``apply_trigger`` and relabels them (``base.Backdoor``). The tensors a trigger needs
(a patch, a blend pattern, a warping field) are ``trigger_tensors()``: a poisoned-data run stores them, and
``cls(**settings, **tensors)`` rebuilds the same attack (``experiments.poisoning.runs.attack_from_run``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .base import POISONS, Backdoor, Poison, check_rate, draw_without_replacement

__all__ = ["BadNets", "Blend", "WaNet", "LabelFlip", "checker_patch", "patch_origin"]

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def checker_patch(size: int = 3) -> torch.Tensor:
    """BadNets' default trigger: a ``size x size`` black-and-white checker pattern, [1, size, size], white at
    the corners (Gu et al. 2017 use a small pattern in the bottom-right corner)."""
    r = torch.arange(size)
    return ((r[:, None] + r[None, :]) % 2 == 0).float()[None]


def patch_origin(position, patch_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of a patch's top-left pixel: a corner name puts the patch flush in that corner; a
    ``(row, col)`` pair is taken as it is. An InputError when the patch does not fit in the image."""
    (h, w), (H, W) = patch_hw, image_hw
    if isinstance(position, str):
        if position not in CORNERS:
            raise InputError(f"position {position!r}: give one of {', '.join(CORNERS)} or (row, col)")
        row = 0 if position.startswith("top") else H - h
        col = 0 if position.endswith("left") else W - w
    elif isinstance(position, (tuple, list)) and len(position) == 2 and all(isinstance(v, int) for v in position):
        row, col = position
    else:
        raise InputError(f"position {position!r}: give one of {', '.join(CORNERS)} or (row, col) integers")
    if row < 0 or col < 0 or row + h > H or col + w > W:
        raise InputError(f"a {h}x{w} trigger at (row {row}, col {col}) does not fit in a {H}x{W} image")
    return row, col


def _images(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() != 4 or not torch.is_floating_point(x):
        raise InputError(f"{what}.apply_trigger takes float images [N, C, H, W]; got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    return x


class _TriggerTensors:
    """Settings without the trigger's tensors (those go to the run's safetensors, see ``trigger_tensors``)."""

    tensor_names: tuple[str, ...] = ()

    def settings(self) -> dict:
        out = super().settings()
        for k in self.tensor_names:
            out.pop(k, None)
        return out

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that rebuild this trigger (None ones, not yet drawn, left out)."""
        return {k: getattr(self, k).detach().cpu().contiguous() for k in self.tensor_names
                if getattr(self, k) is not None}


@POISONS.register("badnets")
class BadNets(_TriggerTensors, Backdoor):
    """BadNets (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying vulnerabilities in the machine learning
    model supply chain"): a fixed patch stamped on the image, ``x[:, :, r:r+h, c:c+w] = trigger``.

    ``trigger``: Tensor[C, h, w] in [0, 1] (default ``checker_patch(3)``); a 1-channel trigger is put on
    every channel. ``position``: a corner name or ``(row, col)`` of the trigger's top-left pixel."""

    name = "badnets"
    tensor_names = ("trigger",)

    def __init__(self, target: int = 0, rate: float = 0.1, trigger: torch.Tensor | None = None,
                 position="bottom-right", seed: int = 0, all_to_all: bool = False):
        super().__init__(target, rate, all_to_all, seed)
        trigger = checker_patch(3) if trigger is None else torch.as_tensor(trigger, dtype=torch.float32)
        if trigger.dim() != 3 or trigger.numel() == 0 or trigger.min() < 0 or trigger.max() > 1:
            raise InputError(f"BadNets trigger: a Tensor[C, h, w] with values in [0, 1]; got shape {tuple(trigger.shape)}")
        self.trigger = trigger
        self.position = list(position) if isinstance(position, (tuple, list)) else position
        patch_origin(self.position, tuple(trigger.shape[1:]), (10 ** 9, 10 ** 9))  # checks the name/pair now

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        x = _images(x, "BadNets").clone()
        c, h, w = self.trigger.shape
        if c not in (1, x.shape[1]):
            raise InputError(f"a {c}-channel BadNets trigger does not fit {x.shape[1]}-channel images (use 1 or {x.shape[1]})")
        row, col = patch_origin(self.position, (h, w), tuple(x.shape[-2:]))
        x[:, :, row:row + h, col:col + w] = self.trigger.to(x.device, x.dtype).expand(x.shape[1], h, w)
        return x


@POISONS.register("blend")
class Blend(_TriggerTensors, Backdoor):
    """Blended injection (Chen, Liu, Li, Lu & Song 2017, "Targeted backdoor attacks on deep learning systems
    using data poisoning"): ``x' = (1 - alpha) x + alpha * pattern``, alpha 0.2 at training and test time.

    ``pattern``: Tensor[C, H, W] in [0, 1], or (default) uniform noise of the input's shape drawn from
    ``seed`` at the first use."""

    name = "blend"
    tensor_names = ("pattern",)

    def __init__(self, target: int = 0, rate: float = 0.1, pattern: torch.Tensor | None = None, alpha: float = 0.2,
                 seed: int = 0, all_to_all: bool = False):
        super().__init__(target, rate, all_to_all, seed)
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"Blend alpha must be in [0, 1]; got {alpha}")
        self.alpha = float(alpha)
        self.pattern = None if pattern is None else torch.as_tensor(pattern, dtype=torch.float32)

    def pattern_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The blend pattern for images of `shape` (C, H, W): drawn once from the seed, then kept."""
        if self.pattern is None:
            self.pattern = torch.rand(tuple(shape), generator=torch.Generator().manual_seed(self.seed))
        if tuple(self.pattern.shape) != tuple(shape):
            raise InputError(f"the Blend pattern has shape {tuple(self.pattern.shape)}; the images {tuple(shape)}")
        return self.pattern

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        x = _images(x, "Blend")
        pattern = self.pattern_for(tuple(x.shape[1:])).to(x.device, x.dtype)
        return (1 - self.alpha) * x + self.alpha * pattern


def identity_grid(h: int, w: int) -> torch.Tensor:
    """The sampling grid [H, W, 2] of ``grid_sample`` (align_corners=True) that returns the image itself:
    ``grid[i, j] = (x_j, y_i)`` with x, y evenly spaced over [-1, 1]."""
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), dim=-1)


@POISONS.register("wanet")
class WaNet(_TriggerTensors, Backdoor):
    """WaNet (Nguyen & Tran 2021, "WaNet: Imperceptible warping-based backdoor attack"): a smooth warp.

    A k x k control grid of uniform(-1, 1) offsets, divided by its mean absolute value, is upsampled
    bicubically to the image size (``grid``, [H, W, 2]); the warped image samples the input at
    ``clamp((identity + s * grid / H) * grid_rescale, -1, 1)`` (bilinear, align_corners). Noise mode: besides
    the ``round(rate * N)`` backdoored samples, ``cross_ratio`` times as many copies of other samples are
    warped with the grid plus uniform(-1, 1)/H noise and keep their labels; they are appended at the end
    of the poisoned set (``settings['n_noise']`` rows, not marked poisoned). Paper defaults: k=4, s=0.5,
    grid_rescale=1, cross_ratio=2."""

    name = "wanet"
    tensor_names = ("grid",)

    def __init__(self, target: int = 0, rate: float = 0.1, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0,
                 cross_ratio: float = 2.0, grid: torch.Tensor | None = None, seed: int = 0, all_to_all: bool = False):
        super().__init__(target, rate, all_to_all, seed)
        if int(k) < 2 or float(cross_ratio) < 0:
            raise InputError(f"WaNet needs k >= 2 and cross_ratio >= 0; got k={k}, cross_ratio={cross_ratio}")
        self.k, self.s, self.grid_rescale, self.cross_ratio = int(k), float(s), float(grid_rescale), float(cross_ratio)
        self.grid = None if grid is None else torch.as_tensor(grid, dtype=torch.float32)

    def grid_for(self, h: int, w: int) -> torch.Tensor:
        """The warping field [H, W, 2] (drawn once from the seed, then kept)."""
        if self.grid is None:
            gen = torch.Generator().manual_seed(self.seed)
            ctrl = torch.rand(1, 2, self.k, self.k, generator=gen) * 2 - 1
            ctrl = ctrl / ctrl.abs().mean()
            self.grid = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)
        if tuple(self.grid.shape) != (h, w, 2):
            raise InputError(f"the WaNet grid has shape {tuple(self.grid.shape)}; {h}x{w} images need ({h}, {w}, 2)")
        return self.grid

    def warp(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`x` sampled at the warped grid (plus `noise` [N, H, W, 2] offsets, already scaled, if given)."""
        n, _, h, w = x.shape
        field = (identity_grid(h, w) + self.s * self.grid_for(h, w) / h) * self.grid_rescale
        field = torch.clamp(field, -1, 1).to(x.device, x.dtype).expand(n, h, w, 2)
        if noise is not None:
            field = torch.clamp(field + noise.to(x.device, x.dtype), -1, 1)
        return F.grid_sample(x, field, mode="bilinear", padding_mode="zeros", align_corners=True)

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(_images(x, "WaNet"))

    def _poison(self, x, y, generator):
        x, y, poisoned = super()._poison(x, y, generator)
        n_noise = min(round(self.cross_ratio * int(poisoned.sum())), int((~poisoned).sum()))
        idx = draw_without_replacement(~poisoned, n_noise, generator)
        h = x.shape[-2]
        noise = (torch.rand(n_noise, h, x.shape[-1], 2, generator=generator) * 2 - 1) / h
        extra = self.warp(x[idx], noise) if n_noise else x[:0]
        self._n_noise = n_noise
        return (torch.cat([x, extra]), torch.cat([y, y[idx]]),
                torch.cat([poisoned, torch.zeros(n_noise, dtype=torch.bool)]))

    def poison(self, dataset, seed=None):
        out = super().poison(dataset, seed)
        out.settings["n_noise"] = self._n_noise  # the last rows: noise-mode copies with their own labels
        return out


@POISONS.register("label_flip", aliases=("labelflip",))
class LabelFlip(Poison):
    """Label flipping (e.g. Biggio, Nelson & Laskov 2012, "Poisoning attacks against support vector
    machines", random label noise as the baseline of Xiao et al. 2012). Inputs are left as they are.

    Random (``source=None``): ``round(rate * N)`` samples, drawn without replacement, get a label drawn
    uniformly from the other ``K - 1`` classes. Class-targeted (``source`` and ``target`` given):
    ``round(rate * N_source)`` of the source class's samples are relabelled ``target``."""

    name = "label_flip"

    def __init__(self, rate: float = 0.1, source: int | None = None, target: int | None = None, seed: int = 0,
                 num_classes: int | None = None):
        super().__init__(seed)
        self.rate = check_rate(rate, "LabelFlip")
        if (source is None) != (target is None) or (source is not None and int(source) == int(target)):
            raise InputError("LabelFlip: give both source and target (two different classes) for a class-targeted "
                             "flip, or neither for random flips")
        self.source = None if source is None else int(source)
        self.target = None if target is None else int(target)
        self.num_classes = num_classes

    def _poison(self, x, y, generator):
        k = int(self.num_classes or int(y.max()) + 1)
        if self.source is None:
            idx = draw_without_replacement(torch.ones_like(y, dtype=torch.bool), round(self.rate * len(y)), generator)
            y[idx] = (y[idx] + torch.randint(1, k, (len(idx),), generator=generator)) % k
        else:
            from_source = y == self.source
            idx = draw_without_replacement(from_source, round(self.rate * int(from_source.sum())), generator)
            y[idx] = self.target
        poisoned = torch.zeros(len(y), dtype=torch.bool)
        poisoned[idx] = True
        return x, y, poisoned
