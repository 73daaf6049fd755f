"""Budgets are honest and work is never thrown away: query budgets, exhausted or failing black boxes, retries."""

import pytest
import torch

import robustlab as rl
from robustlab import attacks as A
from robustlab.errors import InputError
from robustlab.oracles import DecisionOracle, ScoreOracle


@pytest.mark.parametrize("make,norm,eps", [
    (lambda t: A.HopSkipJump(t, max_queries=300), "linf", 0.05),
    (lambda t: A.HopSkipJump(t, max_queries=300), "l2", 0.5),
    (lambda t: A.RayS(t, max_queries=300), "linf", 0.05),
    (lambda t: A.BoundaryAttack(t, max_queries=300), "l2", 0.5),
])
def test_decision_attacks_never_exceed_max_queries(digits_model, digits_correct, make, norm, eps):
    x, y = digits_correct[0][:60], digits_correct[1][:60]
    oracle = DecisionOracle.from_model(digits_model, memoize=False)
    res = make(rl.ThreatModel(norm, eps))(oracle, x, y)
    assert int(res.queries.max()) <= 300 and max(oracle.per_sample.values()) <= 300
    assert int(res.queries.max()) == 300  # the budget is used, not given up early
    assert len(res.status) == len(x) and set(res.status) <= {"success", "max_queries", "done", "no_start"}
    assert [s == "success" for s in res.status] == res.success.tolist()


def test_oracle_budget_and_failing_black_box_keep_what_was_found(digits_model, digits_correct):
    x, y = digits_correct[0][:40], digits_correct[1][:40]
    threat = rl.ThreatModel("linf", 0.1)
    oracle = DecisionOracle.from_model(digits_model, budget=150)  # smaller than the attack's max_queries
    res = A.HopSkipJump(threat, max_queries=300)(oracle, x, y)
    assert max(oracle.per_sample.values()) <= 150
    assert set(res.status) <= {"success", "oracle_budget"} and "oracle_budget" in res.status

    calls = [0]

    def dies(batch):  # the black box goes down after a while
        calls[0] += 1
        if calls[0] > 200:
            raise ConnectionError("server down")
        return digits_model(batch).argmax(1)

    res = A.RayS(threat, max_queries=2000)(DecisionOracle(dies), x, y)
    found = res.success.sum()
    assert found > 0 and set(res.status) == {"success", "oracle_error"}
    with torch.no_grad():
        assert (digits_model(res.x_adv[res.success]).argmax(1) != y[res.success]).all()

    calls[0] = 0
    res = A.Square(threat, max_queries=500)(ScoreOracle(lambda b: (dies(b), digits_model(b))[1]), x, y)
    assert res.success.any() and "oracle_error" in res.status  # any attack: best points so far, not a raise


def test_flaky_black_box_is_retried(digits_model, digits_correct):
    x, y = digits_correct[0][:20], digits_correct[1][:20]
    n = [0]

    def flaky(batch):
        n[0] += 1
        if n[0] % 3 == 0:
            raise TimeoutError("timeout")
        return digits_model(batch).argmax(1)

    oracle = DecisionOracle(flaky, retries=2, backoff=0.0)
    res = A.RayS(rl.ThreatModel("linf", 0.1), max_queries=300)(oracle, x, y)
    assert oracle.failed_calls > 0 and "oracle_error" not in res.status


def test_decision_oracle_returning_strings_is_a_clear_error_or_works(digits_model, digits_correct):
    x, y = digits_correct[0][:8], digits_correct[1][:8]
    names = [f"class{i}" for i in range(10)]
    oracle = DecisionOracle(lambda b: [names[i] for i in digits_model(b).argmax(1).tolist()])
    with pytest.raises(InputError, match="labels in the oracle's own terms"):
        A.RayS(rl.ThreatModel("linf", 0.2), max_queries=50)(oracle, x, y)
    res = A.RayS(rl.ThreatModel("linf", 0.2), max_queries=200)(oracle, x, [names[i] for i in y.tolist()])
    assert res.success.any()


def test_rays_breaks_every_breakable_point_of_a_linear_model():
    """Linear 2-class toy: the exact minimal Linf distance t* (with the [0, 1] box) is known by
    bisection on t: the largest change of w.x within the box and radius t is sum |w_i| min(t, room_i)."""
    torch.manual_seed(0)
    d, n = 32, 120
    w = torch.randn(d)
    x = torch.rand(n, 1, 4, 8)
    b = -(x.flatten(1) @ w).median()

    def model(z):
        s = z.flatten(1) @ w + b
        return torch.stack([torch.zeros_like(s), s], 1)

    y = model(x).argmax(1)
    xf = x.flatten(1)
    room = torch.where((w > 0)[None] == (y == 1)[:, None], xf, 1 - xf)
    need = (xf @ w + b).abs()
    lo, hi = torch.zeros(n), torch.ones(n)
    for _ in range(50):
        mid = (lo + hi) / 2
        ok = (w.abs() * torch.minimum(room, mid[:, None])).sum(1) >= need
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    t_star = torch.where((w.abs() * room).sum(1) >= need, hi, torch.full_like(hi, float("inf")))
    eps = float(t_star.median())
    res = A.RayS(rl.ThreatModel("linf", eps), max_queries=1000)(DecisionOracle.from_model(model), x, y)
    breakable = t_star <= eps - 1e-3
    assert breakable.sum() >= 50
    assert (res.success | ~breakable).all(), f"missed {int((breakable & ~res.success).sum())} breakable points"
    assert not (res.success & (t_star > eps + 1e-4)).any()
    assert int(res.queries.max()) <= 1000
