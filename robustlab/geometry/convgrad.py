"""Convolutions with a cheaper second derivative, for Hessian-vector products.

A Hessian-vector product by double back-propagation differentiates each convolution's backward
pass. PyTorch's generic rule for that (``_convolution_double_backward``) computes the gradient with
respect to the layer input even where nothing needs it (the first layer, whose input is the data:
a transposed convolution thrown away; on MNIST's 1-channel input it is a slow kernel) and forms the
weight gradient through a transposed "batch as channels" convolution plus copies. Here the first
derivative is written with two bilinear pieces whose own derivatives are explicit:

    gx = conv_input_grad(gO, w)   d/dgO: conv(ggx, w)       d/dw: weight_grad(ggx, gO)
    gw = conv_weight_grad(gO, x)  d/dgO: conv(x, ggw)       d/dx: conv_input_grad(gO, ggw)

each computed only where ``needs_input_grad`` says so, with the native convolution backward kernels,
except the input gradients of strided 2-D convolutions on CPUs, which are forward convolutions over
the stride phases (:mod:`robustlab.cpu`; 3-5x faster than oneDNN's kernel there).
The values are identical up to rounding; third derivatives are not supported (not needed for H v).
``hvp_convolutions()`` routes ``torch.nn.functional.conv{1,2,3}d`` calls through these while it is
active; anything it does not cover (string padding, non-tensor arguments) goes the usual way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..cpu import conv2d_input_grad, conv_arguments, phase_grad_applies

_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _tuple(v, n):
    return [int(v)] * n if isinstance(v, int) else [int(a) for a in v]


def _backward(gO, x, w, cfg, mask):
    stride, padding, dilation, groups = cfg
    return torch.ops.aten.convolution_backward(gO, x, w, None, stride, padding, dilation, False,
                                               [0] * len(stride), groups, mask)


def _input_grad(gO, x, w, cfg):
    """d/dx only: by stride phases (:func:`robustlab.cpu.conv2d_input_grad`) where that covers the
    convolution, else the native kernel."""
    stride, padding, dilation, groups = cfg
    if len(stride) == 2 and phase_grad_applies(x, w, stride, padding, dilation, groups):
        return conv2d_input_grad(gO, w, x.shape[-2:], stride, padding)
    return _backward(gO, x, w, cfg, [True, False, False])[0]


def _forward(x, w, cfg):
    stride, padding, dilation, groups = cfg
    out = torch.ops.aten.convolution(x, w, None, stride, padding, dilation, False, [0] * len(stride), groups)
    # a 1-channel input also reads as channels-last, and so does the output then: make it contiguous
    # once here, or every backward kernel that gets it copies it again
    return out.contiguous() if x.is_contiguous() else out


class _ConvGrad(torch.autograd.Function):
    """One derivative of conv(x, w): ``which="x"``: gx from (gO, w, x); ``which="w"``: gw from
    (gO, x, w). Bilinear in the first two inputs; the third only supplies a shape."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gO, other, shape, cfg, which):
        if which == "x":
            return _input_grad(gO, shape, other, cfg)
        return _backward(gO, other, shape, cfg, [False, True, False])[1]

    @staticmethod
    def setup_context(ctx, inputs, output):
        gO, other, shape, ctx.cfg, ctx.which = inputs
        ctx.save_for_backward(gO, other, shape)

    @staticmethod
    def backward(ctx, gg):
        gO, other, shape = ctx.saved_tensors
        need_gO, need_other = ctx.needs_input_grad[:2]
        if ctx.which == "x":  # other = w, gg = d(gx): d/dgO conv(gg, w), d/dw weight grad of (gg, gO)
            d_gO = _forward(gg, other, ctx.cfg) if need_gO else None
            d_other = _backward(gO, gg, other, ctx.cfg, [False, True, False])[1] if need_other else None
        else:  # other = x, gg = d(gw): d/dgO conv(x, gg), d/dx input grad of (gO, gg)
            d_gO = _forward(other, gg, ctx.cfg) if need_gO else None
            d_other = _input_grad(gO, other, gg, ctx.cfg) if need_other else None
        return d_gO, d_other, None, None, None


class _Conv(torch.autograd.Function):
    """conv(x, w) + b whose backward is built from _ConvGrad."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, cfg):
        out = _forward(x, w, cfg)
        return out if b is None else out + b.view(1, -1, *([1] * (out.dim() - 2)))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, cfg = inputs
        ctx.save_for_backward(x, w)
        ctx.cfg = cfg

    @staticmethod
    def backward(ctx, gO):
        x, w = ctx.saved_tensors
        if not torch.is_grad_enabled():  # a plain backward (the H v pass itself): no graph to build
            gx = _input_grad(gO, x, w, ctx.cfg) if ctx.needs_input_grad[0] else None
            gw = _backward(gO, x, w, ctx.cfg, [False, True, False])[1] if ctx.needs_input_grad[1] else None
            gb = gO.sum([0, *range(2, gO.dim())]) if ctx.needs_input_grad[2] else None
            return gx, gw, gb, None
        gx = _ConvGrad.apply(gO, w, x.detach(), ctx.cfg, "x") if ctx.needs_input_grad[0] else None
        gw = _ConvGrad.apply(gO, x, w.detach(), ctx.cfg, "w") if ctx.needs_input_grad[1] else None
        gb = gO.sum([0, *range(2, gO.dim())]) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class _ReLU(torch.autograd.Function):
    """max(x, 0) whose backward multiplies by a constant mask: the second derivative of ReLU is 0
    almost everywhere, so its double backward has nothing to do (autograd's generic rule builds
    and adds a zero tensor for it)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward((output > 0).to(output.dtype))

    @staticmethod
    def backward(ctx, gO):
        mask, = ctx.saved_tensors
        return gO * mask


class hvp_convolutions(TorchFunctionMode):
    """While active, ``F.conv1d/2d/3d`` and ``F.relu`` use the functions above (same values,
    cheaper H v)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.relu, torch.relu) and not kwargs.get("inplace", args[1] if len(args) > 1 else False) \
                and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            return _ReLU.apply(args[0])
        n = _CONVS.get(func)
        if n is not None:
            a = conv_arguments(args, kwargs)
            x, w = a.get("input"), a.get("weight")
            pad = a.get("padding", 0)
            if isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and not isinstance(pad, str) \
                    and x.dim() == n + 2 and (w.requires_grad or x.requires_grad):
                cfg = (_tuple(a.get("stride", 1), n), _tuple(pad, n), _tuple(a.get("dilation", 1), n),
                       int(a.get("groups", 1)))
                return _Conv.apply(x, w, a.get("bias"), cfg)
        return func(*args, **kwargs)
