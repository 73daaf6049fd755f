"""Local linearity (Qin et al. 2019, "Adversarial Robustness through Local Linearization"): the
inner maximisation of the LLR defence, also recorded per epoch by training.

    gamma(eps, x) = max_{delta in ball} |l(x + delta) - l(x) - delta^T grad_x l(x)|

with l the per-sample objective loss (any task).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..objectives import Objective
from ..runtime import eval_mode
from ..threat import ThreatModel


def local_linearity(model: nn.Module, x: torch.Tensor, y, threat: ThreatModel, objective: Objective,
                    start: torch.Tensor, steps: int = 10, create_graph: bool = False):
    """gamma(eps, x) by ``steps`` projected sign steps of size 2.5 eps / steps from the point `start`
    in the threat's ball around x (e.g. a uniform random start), with grad_x l(x) held fixed.

    Returns (gamma per sample, delta, grad_x l(x), l(x) per sample); with ``create_graph`` the
    gradient and losses stay differentiable in the weights (double backprop) for training."""
    x_req = x.detach().requires_grad_(True)
    loss_x = objective.loss(model(x_req), y)
    grad, = torch.autograd.grad(loss_x.sum(), x_req, create_graph=create_graph)
    g_fixed = grad.detach()
    lx_fixed = loss_x.detach()
    step = 2.5 * threat.eps / max(steps, 1)
    x_d = start
    with eval_mode(model):
        for _ in range(steps):
            xq = x_d.detach().requires_grad_(True)
            with torch.enable_grad():
                lq = objective.loss(model(xq), y)
                g = (lq - lx_fixed - ((xq - x) * g_fixed).flatten(1).sum(1)).abs()
                gd, = torch.autograd.grad(g.sum(), xq)
            x_d = threat.project(x, x_d.detach() + threat.step(gd, step))
    delta = (x_d - x).detach()
    l_delta = objective.loss(model(x + delta), y)
    lin = (delta * grad).flatten(1).sum(1)
    gamma = (l_delta - loss_x - lin).abs()
    return gamma, delta, grad, loss_x
