"""robustlab.cpu: the stride-phase input gradient equals the native one, the mode routes only what
it covers and keeps weight gradients right, and the allocator switch is harmless."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustlab import cpu


def native_input_grad(g, x, w, stride, padding):
    return torch.ops.aten.convolution_backward(g, x, w, None, list(stride), list(padding), [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (3, 3), (2, 3), (4, 1)])
def test_phase_input_grad_equals_native(stride):
    torch.manual_seed(0)
    worst = 0.0
    for k, p, (h, w) in itertools.product([(1, 1), (2, 2), (3, 3), (4, 4), (5, 3), (7, 7)], [(0, 0), (1, 1), (2, 1), (3, 3)],
                                          [(5, 6), (8, 8), (13, 11)]):
        if p[0] > k[0] // 2 + 1 or p[1] > k[1] // 2 + 1 or h + 2 * p[0] < k[0] or w + 2 * p[1] < k[1]:
            continue
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        wt = torch.randn(4, 3, *k, dtype=torch.float64)
        g = torch.randn_like(F.conv2d(x, wt, stride=stride, padding=p))
        ref = native_input_grad(g, x, wt, stride, p)
        got = cpu.conv2d_input_grad(g, wt, (h, w), stride, p)
        assert got.shape == ref.shape, (k, p, h, w)
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    assert worst < 1e-12


def test_phase_input_grad_under_vmap():
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    G = torch.randn(6, 2, 5, 4, 4, dtype=torch.float64)  # 6 cotangents of conv(x: [2,3,9,9], stride 2, pad 1)
    got = torch.vmap(lambda g: cpu.conv2d_input_grad(g, w, (9, 9), (2, 2), (1, 1)))(G)
    x = torch.zeros(2, 3, 9, 9, dtype=torch.float64)
    ref = torch.stack([native_input_grad(g, x, w, (2, 2), (1, 1)) for g in G])
    assert torch.allclose(got, ref, atol=1e-12)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 4, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)  # stride 1: native
        self.c4 = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=2)  # groups: native
        self.fc = nn.Linear(6 * 2 * 2, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.c3(x))
        x = F.relu(self.c4(x))
        return self.fc(x.flatten(1))


def test_mode_gives_the_native_gradients(monkeypatch):
    torch.manual_seed(0)
    net = Net().double()
    x = torch.rand(5, 1, 14, 14, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    calls = []
    apply = cpu._PhaseConv2d.apply
    monkeypatch.setattr(cpu._PhaseConv2d, "apply", lambda *a: calls.append(a[1].shape) or apply(*a))

    def grads(mode):
        net.zero_grad()
        xr = x.clone().requires_grad_(True)
        with cpu.FastInputGradients() if mode else torch.enable_grad():
            F.cross_entropy(net(xr), y).backward()
        return [xr.grad] + [p.grad for p in net.parameters()]

    ref = grads(False)
    assert calls == []
    got = grads(True)
    assert calls == [net.c1.weight.shape, net.c2.weight.shape]  # only the covered convolutions
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, atol=1e-12)
    # input gradient alone: the weight gradients are not computed (the engine does not need them)
    skipped = []
    will = cpu._will_compute
    monkeypatch.setattr(cpu, "_will_compute", lambda node: skipped.append(will(node)) or will(node))
    xr = x.clone().requires_grad_(True)
    with cpu.FastInputGradients():
        gx, = torch.autograd.grad(F.cross_entropy(net(xr), y), xr)
    assert torch.allclose(gx, ref[0], atol=1e-12)
    assert skipped and not any(skipped)


def test_mode_double_backward_and_fallbacks():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with cpu.FastInputGradients():
        assert torch.autograd.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), (x, w, b))
        assert torch.autograd.gradgradcheck(lambda x, w: F.conv2d(x, w, stride=(2, 3), padding=(1, 0)), (x, w))
    # not covered: same call, same values, native path
    assert not cpu.phase_grad_applies(x, w, 2, "same")
    assert not cpu.phase_grad_applies(x, w, 2, 1, dilation=2)
    assert not cpu.phase_grad_applies(x, w, 1, 1)
    assert not cpu.phase_grad_applies(x.float().to(torch.int64), w, 2, 1)
    assert cpu.phase_grad_applies(x, w, (1, 2), (0, 1))


def test_fast_input_gradients_switch(monkeypatch):
    assert isinstance(cpu.fast_input_gradients("cpu"), cpu.FastInputGradients)
    monkeypatch.setenv("ROBUSTLAB_FAST_CONV_GRAD", "0")
    assert not isinstance(cpu.fast_input_gradients("cpu"), cpu.FastInputGradients)


def test_tune_allocator_is_idempotent():
    first = cpu.tune_allocator()
    assert isinstance(first, bool)
    assert cpu.tune_allocator() == first
    x = torch.randn(1 << 20)
    assert float((x * 2).sum()) == pytest.approx(2 * float(x.sum()), rel=1e-5)


def test_attack_engine_takes_gradients_by_phases_with_the_native_results(monkeypatch):
    """APGD and FAB-T on a strided CNN: the engine's gradient passes go through the phase kernel,
    and the per-point results equal those with it turned off."""
    import robustlab as rl
    from robustlab.attacks import APGD, FABT

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=2, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()
    x = torch.rand(24, 1, 16, 16)
    with torch.no_grad():
        y = net(x).argmax(1)
    threat = rl.ThreatModel("linf", 0.05)
    calls = []
    apply = cpu._PhaseConv2d.apply
    monkeypatch.setattr(cpu._PhaseConv2d, "apply", lambda *a: calls.append(1) or apply(*a))

    def run(flag):
        monkeypatch.setenv("ROBUSTLAB_FAST_CONV_GRAD", flag)
        return [atk(net, x, y) for atk in (APGD(threat, steps=20, seed=0), FABT(threat, n_targets=2, steps=10))]

    native = run("0")
    assert calls == []
    fast = run("1")
    assert len(calls) > 0
    for a, b in zip(native, fast):
        assert torch.equal(a.success, b.success)
        assert float((a.x_adv - b.x_adv).abs().max()) < 1e-4


@pytest.mark.parametrize("c_in", [1, 3, 8, 16])
def test_phase_input_grad_takes_either_layout_of_g(c_in):
    """Both branches (few channels: contiguous; >= 8: channels-last) give the native gradient for a
    contiguous and a channels-last output gradient."""
    torch.manual_seed(2)
    x = torch.randn(3, c_in, 12, 10, dtype=torch.float64)
    w = torch.randn(5, c_in, 4, 3, dtype=torch.float64)
    g = torch.randn_like(F.conv2d(x, w, stride=(2, 3), padding=(1, 1)))
    ref = native_input_grad(g, x, w, (2, 3), (1, 1))
    for gg in (g, g.contiguous(memory_format=torch.channels_last)):
        assert torch.allclose(cpu.conv2d_input_grad(gg, w, (12, 10), (2, 3), (1, 1)), ref, atol=1e-12)


def test_the_switch_turns_off_the_hessian_products_path_too(monkeypatch):
    x = torch.rand(2, 3, 9, 9, requires_grad=True)
    w = torch.randn(4, 3, 4, 4)
    assert cpu.phase_grad_applies(x, w, 2, 1)
    monkeypatch.setenv("ROBUSTLAB_FAST_CONV_GRAD", "0")
    assert not cpu.phase_grad_applies(x, w, 2, 1)  # the decision geometry.convgrad shares
