import itertools

import pytest
import torch

import robustlab as rl
from robustlab.threat import lp_norm, project_l1_ball


def l1_projection_by_bisection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference: bisection on the soft threshold theta (independent of the sorting algorithm)."""
    if v.abs().sum() <= eps:
        return v.clone()
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if (v.abs() - mid).clamp_min(0).sum() > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (v.abs() - hi).clamp_min(0)


@pytest.mark.parametrize("seed", range(5))
def test_l1_projection_matches_bisection_reference(seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(7, 6, generator=g, dtype=torch.float64) * 3
    eps = 2.5
    p = project_l1_ball(v, eps)
    for i in range(v.shape[0]):
        ref = l1_projection_by_bisection(v[i], eps)
        assert torch.allclose(p[i], ref, atol=1e-9)
        assert float(p[i].abs().sum()) <= eps + 1e-9


def test_l1_projection_is_the_closest_point_brute_force():
    # compare with the best of many random feasible points on a 3-d example
    g = torch.Generator().manual_seed(0)
    v = torch.tensor([[1.5, -0.7, 0.2]], dtype=torch.float64)
    eps = 1.0
    p = project_l1_ball(v, eps)[0]
    grid = torch.linspace(-1, 1, 81, dtype=torch.float64)
    pts = torch.tensor(list(itertools.product(grid.tolist(), repeat=3)), dtype=torch.float64)
    pts = pts[pts.abs().sum(1) <= eps]
    best = (pts - v[0]).norm(dim=1).min()
    assert (p - v[0]).norm() <= best + 1e-9
    assert torch.allclose(p, torch.tensor([0.9, -0.1, 0.0], dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8), ("l1", 3.0)])
def test_projection_and_random_init_stay_in_ball_and_bounds(norm, eps):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 5, 5, generator=g)
    threat = rl.ThreatModel(norm, eps)
    far = x + 5 * torch.randn(x.shape, generator=g)
    p = threat.project(x, far)
    assert threat.contains(x, p).all()
    assert p.min() >= 0 and p.max() <= 1
    r = threat.random_init(x, generator=g)
    assert threat.contains(x, r).all()
    # projection of a feasible point is the identity
    assert torch.allclose(threat.project(x, r), r, atol=1e-6)


def test_l2_random_init_fills_the_ball_not_the_sphere():
    threat = rl.ThreatModel("l2", 1.0, bounds=(-100, 100))
    x = torch.zeros(2000, 2)
    r = threat.random_init(x, generator=torch.Generator().manual_seed(0))
    norms = lp_norm(r, "l2")
    assert norms.max() <= 1 + 1e-6
    # uniform in a 2-d disc: P(norm < 0.5) = 0.25
    assert 0.2 < float((norms < 0.5).float().mean()) < 0.3


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_step_has_the_requested_size_and_ascends(norm):
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(4, 10, generator=g)
    threat = rl.ThreatModel(norm, 1.0)
    step = threat.step(grad, 0.5)
    assert torch.allclose(lp_norm(step, norm), torch.full((4,), 0.5), atol=1e-5)
    assert ((step * grad).sum(1) > 0).all()


def test_mask_freezes_elements():
    x = torch.rand(3, 2, 4, 4)
    mask = torch.zeros(2, 1, 1)
    mask[0] = 1
    threat = rl.ThreatModel("linf", 0.2, mask=mask)
    p = threat.project(x, x + 1)
    assert torch.equal(p[:, 1], x[:, 1])
    assert (p[:, 0] > x[:, 0]).any()


def test_invalid_threat_arguments():
    with pytest.raises(rl.InputError, match="eps must be finite and >= 0"):
        rl.ThreatModel("linf", -0.1)
    with pytest.raises(rl.InputError, match="eps must be finite"):
        rl.ThreatModel("linf", float("nan"))
    with pytest.raises(rl.InputError, match="known norms: linf, l2, l1"):
        rl.ThreatModel("l7", 0.1)


def test_lp_norm_by_hand_and_names_an_unknown_norm():
    d = torch.tensor([[3.0, -4.0, 0.0], [0.5, 0.5, -1.0]])
    assert lp_norm(d, "linf").tolist() == [4.0, 1.0] and torch.allclose(lp_norm(d, "l2"), torch.tensor([5.0, 1.5 ** 0.5]))
    assert lp_norm(d, "l1").tolist() == [7.0, 2.0]
    with pytest.raises(rl.InputError, match="^unknown norm 'l7'; known norms: linf, l2, l1$"):
        lp_norm(d, "l7")


# ----- L1 ball intersected with the box (Croce & Hein 2021) ---------------------------------------

def test_l1_box_projection_beats_projecting_then_clipping():
    """x=(0, 0.5), v=(-2, 1), eps 1, box [0, 1]: the exact answer is (0, 0.5) at distance 2.062; the
    ball-then-clip projection gives (0, 0) at 2.236 (it spends the budget on the saturated pixel)."""
    from robustlab.threat import project_l1_box

    x, v = torch.tensor([[0.0, 0.5]]), torch.tensor([[-2.0, 1.0]])
    d = project_l1_box(x, v, 1.0, (0.0, 1.0))
    assert torch.allclose(d, torch.tensor([[0.0, 0.5]]))
    assert abs(float((d - v).norm()) - 2.0616) < 1e-3
    clip_after_ball = (x + project_l1_ball(v, 1.0)).clamp(0, 1) - x
    assert abs(float((clip_after_ball - v).norm()) - 2.2361) < 1e-3
    threat = rl.ThreatModel("l1", 1.0)
    assert torch.allclose(threat.project(x, x + v), torch.tensor([[0.0, 1.0]]))


def _l1_box_by_solver(x, v, eps, lo, hi):
    """Reference: the QP min ||z - v||^2, ||z||_1 <= eps, lo <= x + z <= hi, solved by SLSQP over
    z = p - q with p, q >= 0 (independent of the sorting algorithm)."""
    import numpy as np
    from scipy.optimize import minimize

    n = v.size
    fun = lambda w: 0.5 * np.sum((w[:n] - w[n:] - v) ** 2)
    jac = lambda w: np.concatenate([w[:n] - w[n:] - v, -(w[:n] - w[n:] - v)])
    cons = [{"type": "ineq", "fun": lambda w: eps - w.sum(), "jac": lambda w: -np.ones(2 * n)},
            {"type": "ineq", "fun": lambda w: (hi - x) - (w[:n] - w[n:]),
             "jac": lambda w: np.concatenate([-np.eye(n), np.eye(n)], 1)},
            {"type": "ineq", "fun": lambda w: (w[:n] - w[n:]) - (lo - x),
             "jac": lambda w: np.concatenate([np.eye(n), -np.eye(n)], 1)}]
    res = minimize(fun, np.zeros(2 * n), jac=jac, bounds=[(0, None)] * (2 * n), constraints=cons,
                   method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
    return res.x[:n] - res.x[n:]


@pytest.mark.parametrize("seed", range(4))
def test_l1_box_projection_matches_a_convex_solver(seed):
    from robustlab.threat import project_l1_box

    g = torch.Generator().manual_seed(seed)
    lo, hi = (-1.0, 2.0) if seed % 2 else (0.0, 1.0)
    x = lo + (hi - lo) * torch.rand(6, 7, generator=g, dtype=torch.float64)
    x[:, :2] = torch.tensor([lo, hi], dtype=torch.float64)          # saturated pixels
    v = torch.randn(6, 7, generator=g, dtype=torch.float64) * 1.5
    eps = torch.tensor([0.3, 1.0, 2.0, 3.0, 6.0, 20.0], dtype=torch.float64)
    d = project_l1_box(x, v, eps, (lo, hi))
    for i in range(6):
        ref = torch.from_numpy(_l1_box_by_solver(x[i].numpy(), v[i].numpy(), float(eps[i]), lo, hi))
        assert float(d[i].abs().sum()) <= float(eps[i]) + 1e-9
        assert float((x[i] + d[i]).min()) >= lo - 1e-12 and float((x[i] + d[i]).max()) <= hi + 1e-12
        assert (d[i] - v[i]).norm() <= (ref - v[i]).norm() + 1e-7
        assert torch.allclose(d[i], ref, atol=1e-5)


def test_l1_box_projection_respects_the_mask_and_the_threat_model_uses_it():
    from robustlab.threat import project_l1_box

    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 5, 5, generator=g)
    v = torch.randn(4, 1, 5, 5, generator=g)
    mask = torch.zeros(1, 5, 5)
    mask[:, 1:4, 1:4] = 1
    d = project_l1_box(x, v * mask, 1.5, (0.0, 1.0), mask)
    assert (d * (1 - mask)).abs().max() == 0
    threat = rl.ThreatModel("l1", 1.5, mask=mask)
    p = threat.project(x, x + v)
    assert torch.allclose(p - x, d, atol=1e-6)
    assert threat.contains(x, p).all()
    # an unbounded box reduces it to the plain ball projection
    flat = v.flatten(1)
    assert torch.allclose(project_l1_box(torch.zeros_like(flat), flat, 1.5, (-float("inf"), float("inf"))),
                          project_l1_ball(flat, 1.5), atol=1e-6)


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-0.5, 2.0)])
def test_apply_keeps_the_input_in_bounds_and_applies_the_mask(bounds):
    """apply(x, delta) = clamp(x + mask * delta): a shared (universal) perturbation can push x out of
    the box; apply must bring it back, coordinate by coordinate, and leave masked coordinates alone."""
    g = torch.Generator().manual_seed(0)
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand(6, 1, 4, 4, generator=g)
    delta = 0.8 * (hi - lo) * torch.randn(1, 1, 4, 4, generator=g).expand_as(x)
    threat = rl.ThreatModel("linf", 0.25, bounds=bounds)
    out = threat.apply(x, delta)
    assert float(out.min()) >= lo and float(out.max()) <= hi
    assert torch.equal(out, torch.clamp(x + delta, lo, hi))
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1
    masked = rl.ThreatModel("linf", 0.25, bounds=bounds, mask=mask).apply(x, delta)
    assert torch.equal(masked[:, :, 2:], x[:, :, 2:])
    assert torch.equal(masked[:, :, :2], torch.clamp(x + delta, lo, hi)[:, :, :2])


def test_linf_projection_with_a_radius_per_sample():
    """eps as a [B] tensor (APGD-L1's phases, per-sample budgets): each row is clipped to its own radius."""
    x = torch.full((3, 4), 0.5)
    v = x + torch.tensor([[0.3, -0.3, 0.05, -0.05]]).expand(3, 4)
    p = rl.ThreatModel("linf", 1.0).project(x, v, torch.tensor([0.1, 0.2, 0.0]))
    assert torch.allclose(p - x, torch.tensor([[0.1, -0.1, 0.05, -0.05], [0.2, -0.2, 0.05, -0.05], [0.0, 0.0, 0.0, 0.0]]))


def test_l1_step_splits_its_size_over_the_top_coordinates():
    """Sparse L1 steepest ascent: sign(g) on the top (1 - sparsity) share of |g| (ties included), each of
    size step / (number chosen); zero gradients are never chosen."""
    threat = rl.ThreatModel("l1", 1.0)
    g = torch.tensor([[3.0, -2.0, 0.5, 0.1, -4.0, 0.0, 0.2, 1.0, 0.3, -0.4],
                      [1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.0] * 10])
    step = threat.step(g, torch.tensor([0.6, 0.9, 0.5]), l1_sparsity=0.8)  # k = 2 of 10
    assert torch.allclose(step[0], torch.tensor([0.3, 0, 0, 0, -0.3, 0, 0, 0, 0, 0]))
    assert torch.allclose(step[1], torch.tensor([0.3, -0.3, 0.3, 0, 0, 0, 0, 0, 0, 0]))  # a three-way tie
    assert torch.equal(step[2], torch.zeros(10))
    assert torch.allclose(threat.step(g[:1], 0.6, l1_sparsity=0.6)[0],  # k = 4: 3, -2, -4, 1
                          torch.tensor([0.15, -0.15, 0, 0, -0.15, 0, 0, 0.15, 0, 0]))


def test_project_delta_ignores_the_bounds_but_not_the_ball_or_the_mask():
    d = torch.tensor([[3.0, 4.0, 0.0], [0.3, -0.4, 2.0]])
    assert torch.allclose(rl.ThreatModel("l2", 1.0).project_delta(d), torch.tensor([[0.6, 0.8, 0.0], [0.3, -0.4, 2.0]]) /
                          torch.tensor([[1.0], [(0.09 + 0.16 + 4.0) ** 0.5]]))
    masked = rl.ThreatModel("linf", 0.5, mask=torch.tensor([1.0, 0.0, 1.0])).project_delta(d)
    assert torch.equal(masked, torch.tensor([[0.5, 0.0, 0.0], [0.3, 0.0, 0.5]]))


def test_parametric_threats_by_hand():
    """ColorThreat: theta = (contrast per channel, brightness per channel), identity (1.., 0..), box
    eps * ranges, sign steps scaled by the ranges; BlurLighting: sigma clipped at 0; VariableThreat balls."""
    from robustlab.threat import BlurLightingThreat, ColorThreat, GeometricThreat, VariableThreat

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    color = ColorThreat(eps=0.5, ranges={"brightness": 0.4})
    assert color.range_values == {"contrast": 0.3, "brightness": 0.4}
    t0 = color.identity(x)
    assert torch.equal(t0, torch.tensor([[1.0, 1, 1, 0, 0, 0]] * 2)) and torch.equal(color.zero(x), t0)
    assert torch.allclose(color.param_ranges(x), torch.tensor([0.15] * 3 + [0.2] * 3))
    theta = t0 + torch.tensor([[0.1, -0.2, 0.0, 0.3, -0.1, 0.05]] * 2)
    assert torch.allclose(color.project(x, theta), torch.tensor([[1.1, 0.85, 1.0, 0.2, -0.1, 0.05]] * 2))
    assert torch.allclose(color.apply(x, theta), (theta[:, :3, None, None] * x + theta[:, 3:, None, None]).clamp(0, 1))
    grad = torch.tensor([[1.0, -2.0, 0.0, 3.0, -1.0, 2.0]] * 2)
    assert torch.allclose(color.step(grad, 0.1), torch.tensor([[0.03, -0.03, 0.0, 0.04, -0.04, 0.04]] * 2))
    grad64 = grad.double()  # a float64 attack keeps its ranges in float64 (0.3 in float32 is 0.30000001)
    assert torch.equal(color.step(grad64, 0.1), 0.1 * torch.tensor([0.3] * 3 + [0.4] * 3, dtype=torch.float64) * grad64.sign())
    start = color.init(x, torch.Generator().manual_seed(1))
    u = torch.rand(2, 6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(start, t0 + (2 * u - 1) * color.param_ranges(x))
    with pytest.raises(rl.InputError, match="unknown parameter 'gamma' for ColorThreat; known: contrast, brightness"):
        ColorThreat(ranges={"gamma": 1.0})

    blur = BlurLightingThreat(eps=1.0)
    assert torch.equal(blur.identity(x), torch.zeros(2, 4))
    assert torch.allclose(blur.project(x, torch.tensor([[-0.5, 0.5, -0.1, 0.2], [2.0, 0.1, 0.1, -0.3]])),
                          torch.tensor([[0.0, 0.3, -0.1, 0.1], [1.5, 0.1, 0.1, -0.1]]))
    # no blur, lighting only: x * (1 + gx u + gy v) + bias with u, v = linspace(-1, 1) over width, height
    theta = torch.tensor([[0.0, 0.2, -0.1, 0.05], [0.0, 0.0, 0.3, 0.0]])
    u, v = torch.linspace(-1, 1, 4)[None, :], torch.linspace(-1, 1, 4)[:, None]
    gain = torch.stack([1 + 0.2 * u - 0.1 * v, 1 + 0.3 * v + 0 * u])
    assert torch.allclose(blur.transform(x, theta), x * gain[:, None] + torch.tensor([0.05, 0.0]).view(2, 1, 1, 1), atol=1e-6)
    # sigma 1: a separable normalised Gaussian of 7 taps on the replicate-padded image
    img = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    k = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    k = k / k.sum()
    padded = torch.nn.functional.pad(img, (3, 3, 3, 3), mode="replicate")[0, 0]
    ref = torch.stack([torch.stack([(k[:, None] * k[None, :] * padded[i:i + 7, j:j + 7]).sum() for j in range(3)])
                       for i in range(3)])
    assert torch.allclose(blur.transform(img, torch.tensor([[1.0, 0, 0, 0]])), ref.view(1, 1, 3, 3), atol=1e-5)
    geo = GeometricThreat()
    assert torch.allclose(geo.transform(x, geo.identity(x)), x, atol=1e-6)

    assert VariableThreat("linf", 0.1).norm == "linf" and VariableThreat("2", 0.1, bounds=(-1, 1)).bounds == (-1.0, 1.0)
    with pytest.raises(rl.InputError, match="supports linf and l2 balls"):
        VariableThreat("l1", 0.1)
