"""The H v convolutions and ReLU (robustlab.geometry.convgrad) give the same first and second derivatives."""
import pytest
import torch
import torch.nn as nn

from robustlab.geometry.convgrad import hvp_convolutions


def _second_derivatives(model, x, fast):
    params = list(model.parameters())
    x = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    vs = [torch.randn_like(p) for p in params] + [torch.randn_like(x)]
    ctx = hvp_convolutions() if fast else torch.enable_grad()
    with ctx:
        loss = (model(x) ** 2).sum()
        grads = torch.autograd.grad(loss, params + [x], create_graph=True)
    hv = torch.autograd.grad(grads, params + [x], vs)
    return [g.detach() for g in grads], hv


@pytest.mark.parametrize("dim,act", [(1, nn.Tanh), (2, nn.ReLU), (3, nn.Tanh)])
def test_hvp_convolutions_match_autograd(dim, act):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    torch.manual_seed(0)
    model = nn.Sequential(conv(4, 6, 3, stride=2, padding=1, bias=True), act(),
                          conv(6, 4, 2, dilation=2, groups=2, bias=False), nn.Flatten()).double()
    x = torch.randn(3, 4, *([7] * dim), dtype=torch.float64)
    g0, h0 = _second_derivatives(model, x, fast=False)
    g1, h1 = _second_derivatives(model, x, fast=True)
    for a, b in zip(g0 + list(h0), g1 + list(h1)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(h0[0].abs().max()) > 1e-3  # a non-trivial check


def test_batched_products_through_the_custom_functions():
    """Products of several vectors at once (vmap over the backward, the GPU default) equal single ones."""
    from robustlab.geometry.core import LossFunction

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4)).double()
    L = LossFunction(model, (torch.randn(5, 1, 7, 7), torch.randint(0, 4, (5,))), dtype=torch.float64)
    V = torch.randn(3, sum(p.numel() for p in L.params.values()), dtype=torch.float64)
    single = torch.stack([L.hvp(v) for v in V])
    assert torch.allclose(L.hvp(V, batched=True), single, rtol=1e-10, atol=1e-12)
    assert float(single.abs().max()) > 1e-3
