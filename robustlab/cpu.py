"""Fast passes on CPUs: the allocator, and convolution input gradients by stride phases.

**Allocator.** glibc returns large freed blocks to the system and maps them again on the next
allocation, so a batch's activations are page-faulted in afresh on every pass (measured on this
project's 2-core machine: ~3,000-6,000 minor page faults per forward+backward of the demo's CNN
on 500 MNIST images, 33-44 ms per pass, against ~100 faults and 29-30 ms once the memory is kept).
:func:`tune_allocator` keeps it (``mallopt``: no mmap below 1 GiB, no trimming); the process then
holds its peak heap until it exits. The CLI and the benchmarks call it; library users may.

**Input gradients of strided convolutions.** The gradient of ``conv2d(x, w, stride=s)`` with
respect to ``x`` is a transposed convolution; oneDNN's kernel for it is several times slower on
these CPUs than a forward convolution of the same size (8-20 ms vs 3-4 ms for the demo CNN's second
layer on 512 images, 12-16 ms vs under 1 ms for its first). Split by output phase, it *is* forward convolutions: for every residue
``r`` of ``i + p`` modulo ``s`` (per spatial axis), the input positions with that residue receive

    gx[i] = sum_m w[r + s m] g[(i + p - r) / s - m],

a stride-1 correlation of ``g`` with the flipped sub-kernel ``w[r::s]``. All ``s^2`` phases are
stacked as output channels of one forward convolution (channels-last where the layer has 8 or
more input channels) and interleaved into ``gx``; the values
equal the native gradient up to float rounding (tests). :class:`FastInputGradients` routes
``F.conv2d`` through this while attacks take input gradients on a CPU (groups 1, dilation 1,
stride > 1; everything else goes the usual way), and the Hessian-vector products of
:mod:`robustlab.geometry.convgrad` use it too. ``ROBUSTLAB_FAST_CONV_GRAD=0`` turns off both.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc ``mallopt``), so passes stop page-faulting their
    buffers in anew. Returns True where it took effect (glibc), False elsewhere; idempotent.
    ``ROBUSTLAB_TUNE_ALLOCATOR=0`` turns it off."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("ROBUSTLAB_TUNE_ALLOCATOR", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):
        return False
    _tuned = ok
    log.debug("allocator tuned: %s", ok)
    return ok


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d_input_grad(g: torch.Tensor, weight: torch.Tensor, input_size, stride, padding) -> torch.Tensor:
    """d/dx of ``<g, conv2d(x, weight, stride=stride, padding=padding)>`` (groups 1, dilation 1),
    by one forward convolution over the stride phases; ``input_size`` is x's (H, W)."""
    n, c_out, h_out, w_out = g.shape
    _, c_in, kh, kw = weight.shape
    (h, w), (sh, sw), (ph, pw) = _pair(input_size), _pair(stride), _pair(padding)
    mh, mw = -(-kh // sh), -(-kw // sw)
    qh, qw = h_out + mh - 1, w_out + mw - 1
    # zero taps make every phase's sub-kernel mh x mw; the phases, flipped, become output channels
    wp = F.pad(weight, (0, mw * sw - kw, 0, mh * sh - kh)).reshape(c_out, c_in, mh, sh, mw, sw)
    if c_in >= 8:  # channels-last: oneDNN's faster layout here, and the interleave moves c_in-long runs
        wk = wp.permute(3, 5, 1, 0, 2, 4).flip(4, 5).reshape(sh * sw * c_in, c_out, mh, mw)
        out = F.conv2d(g.contiguous(memory_format=torch.channels_last),
                       wk.contiguous(memory_format=torch.channels_last), padding=(mh - 1, mw - 1))
        # out[n, (rh, rw, c), a, b] is input position (a sh + rh - ph, b sw + rw - pw)
        full = out.permute(0, 2, 3, 1).reshape(n, qh, qw, sh, sw, c_in).permute(0, 1, 3, 2, 4, 5)
        full = full.reshape(n, qh * sh, qw * sw, c_in).permute(0, 3, 1, 2)
    else:  # few input channels: the contiguous layout, channels ordered (c, rh, rw)
        wk = wp.permute(1, 3, 5, 0, 2, 4).flip(4, 5).reshape(c_in * sh * sw, c_out, mh, mw)
        out = F.conv2d(g, wk, padding=(mh - 1, mw - 1))
        full = out.reshape(n, c_in, sh, sw, qh, qw).permute(0, 1, 4, 2, 5, 3).reshape(n, c_in, qh * sh, qw * sw)
    # shift by the padding: a view where it only crops, zeros where no output reaches
    if ph >= 0 and pw >= 0 and ph + h <= qh * sh and pw + w <= qw * sw:
        return full[:, :, ph:ph + h, pw:pw + w]
    return F.pad(full, (-pw, pw + w - qw * sw, -ph, ph + h - qh * sh))


def _enabled() -> bool:
    return os.environ.get("ROBUSTLAB_FAST_CONV_GRAD", "1") != "0"


def conv_arguments(args: tuple, kwargs: dict) -> dict:
    """The arguments of an ``F.conv{1,2,3}d`` call by name (for the TorchFunctionModes that reroute it)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    return dict(zip(names, args), **kwargs)


def phase_grad_applies(x, weight, stride=1, padding=0, dilation=1, groups=1) -> bool:
    """Whether :func:`conv2d_input_grad` covers this convolution (and is the faster one): 2-D on a
    CPU, floating point, groups 1, dilation 1, integer padding, stride > 1; never with
    ``ROBUSTLAB_FAST_CONV_GRAD=0``."""
    if not _enabled():
        return False
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)) or isinstance(padding, str):
        return False
    if x.dim() != 4 or weight.dim() != 4 or x.device.type != "cpu" or not x.is_floating_point():
        return False
    try:
        s, d = _pair(stride), _pair(dilation)
        _pair(padding)
    except (TypeError, ValueError, IndexError):
        return False
    return int(groups) == 1 and d == (1, 1) and max(s) > 1


def _will_compute(node) -> bool:
    """Whether the running backward pass needs the gradient that flows into ``node`` (an input
    asking only for dx skips the weight gradient, as PyTorch's own convolution does)."""
    if node is None:
        return False
    check = getattr(torch._C, "_will_engine_execute_node", None)
    if check is None:
        return True
    try:
        return bool(check(node))
    except RuntimeError:  # not inside a backward pass the engine runs (cannot tell): compute it
        return True


class _PhaseConv2d(torch.autograd.Function):
    """conv2d whose input gradient is :func:`conv2d_input_grad`; weight and bias gradients native,
    computed only where the backward pass needs them."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, nodes):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.nodes = stride, padding, nodes
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_w = need_w and _will_compute(ctx.nodes[0])
        need_b = need_b and _will_compute(ctx.nodes[1])
        gx = conv2d_input_grad(g, weight, x.shape[-2:], ctx.stride, ctx.padding) if need_x else None
        gw = torch.ops.aten.convolution_backward(
            g, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
            [False, True, False])[1] if need_w else None
        gb = g.sum((0, 2, 3)) if need_b else None
        return gx, gw, gb, None, None, None


def _grad_node(t):
    if not isinstance(t, torch.Tensor) or not t.requires_grad:
        return None
    return torch.autograd.graph.get_gradient_edge(t).node


class FastInputGradients(TorchFunctionMode):
    """While active, ``F.conv2d`` on inputs that require grad takes its input gradient by stride
    phases where :func:`phase_grad_applies` (same values up to rounding)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            a = conv_arguments(args, kwargs)
            x, w = a.get("input"), a.get("weight")
            stride, padding = a.get("stride", 1), a.get("padding", 0)
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled() and \
                    phase_grad_applies(x, w, stride, padding, a.get("dilation", 1), a.get("groups", 1)):
                b = a.get("bias")
                return _PhaseConv2d.apply(x, w, b, _pair(stride), _pair(padding), (_grad_node(w), _grad_node(b)))
        return func(*args, **kwargs)


def fast_input_gradients(device: torch.device | str | None = None):
    """A context for passes that take input gradients: :class:`FastInputGradients` on a CPU
    (unless ``ROBUSTLAB_FAST_CONV_GRAD=0``), else nothing."""
    if not _enabled() or torch.device(device or "cpu").type != "cpu":
        return contextlib.nullcontext()
    return FastInputGradients()
