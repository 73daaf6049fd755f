import warnings

import pytest
import torch

import robustlab as rl
from robustlab import attacks as A
from robustlab.attacks.simba import dct_matrix
from robustlab.attacks.square import square_p
from robustlab.oracles import DecisionOracle, NonDeterministicOracleWarning, QueryBudgetExceeded, ScoreOracle

from helpers import assert_valid_adversarials


def test_square_p_schedule():
    assert square_p(0.8, 0, 10000) == 0.8
    assert square_p(0.8, 11, 10000) == 0.4
    assert square_p(0.8, 201, 10000) == 0.1
    assert square_p(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert square_p(0.8, 100, 1000) == pytest.approx(0.8 / 16)  # rescaled: 100/1000 -> 1000/10000


def test_dct_basis_is_orthonormal():
    d = dct_matrix(8, torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_square_is_competitive_with_apgd_through_a_score_oracle(digits_model, digits_correct, norm, eps):
    x, y = digits_correct
    threat = rl.ThreatModel(norm, eps)
    oracle = ScoreOracle.from_model(digits_model, budget=1000)
    res = A.Square(threat, max_queries=1000)(oracle, x, y)
    apgd = A.APGD(threat, steps=50)(digits_model, x, y)
    assert res.success_rate >= 0.85 * apgd.success_rate > 0.3
    assert_valid_adversarials(digits_model, threat, x, y, res)
    assert int(res.queries.max()) <= 1000
    s = res.summary()
    assert s["queries_per_success_median"] <= s["queries_per_success_mean"] * 3
    # the engine's and the oracle's accounting agree (memoised repeats are free)
    assert oracle.total_queries <= int(res.queries.sum())


def test_square_early_stopping_changes_no_result(digits_model, digits_test):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.1)
    on, off = A.Square(threat, max_queries=300), A.Square(threat, max_queries=300, early_stop=False)
    r_on, r_off = on(digits_model, x, y), off(digits_model, x, y)
    assert torch.equal(r_on.success, r_off.success)
    assert r_on.queries.sum() < r_off.queries.sum()


@pytest.mark.parametrize("make", [
    lambda t: A.SimBA(t, step_size=0.1, steps=400, basis="pixel"),
    lambda t: A.SimBA(t, step_size=0.1, steps=400, basis="dct"),
    lambda t: A.NES(t, n_samples=20, max_queries=1500),
    lambda t: A.BanditsTD(t, max_queries=1500, prior_size=4),
])
def test_score_based_attacks_break_points_inside_the_threat(digits_model, digits_correct, make):
    x, y = digits_correct
    threat = rl.ThreatModel("linf", 0.15)
    res = make(threat)(ScoreOracle.from_model(digits_model), x, y)
    assert res.success_rate > 0.2
    assert_valid_adversarials(digits_model, threat, x, y, res)


def test_simba_costs_one_to_two_queries_per_direction(digits_model, digits_correct):
    x, y = digits_correct
    res = A.SimBA(rl.ThreatModel("l2", 100.0), step_size=0.05, steps=50, basis="pixel", early_stop=False)(digits_model, x, y)
    per_step = (res.queries.double() - 1) / 50
    assert ((per_step >= 1) & (per_step <= 2)).all()


@pytest.mark.parametrize("make,norm,eps", [
    (lambda t: A.HopSkipJump(t, max_queries=2000), "l2", 1.0),
    (lambda t: A.HopSkipJump(t, max_queries=2000), "linf", 0.15),
    (lambda t: A.RayS(t, max_queries=2000), "linf", 0.15),
    (lambda t: A.BoundaryAttack(t, max_queries=2000), "l2", 1.0),
])
def test_decision_based_attacks_with_labels_only(digits_model, digits_correct, make, norm, eps):
    x, y = digits_correct
    threat = rl.ThreatModel(norm, eps)
    oracle = DecisionOracle.from_model(digits_model)
    res = make(threat)(oracle, x, y)
    white = A.APGD(threat, steps=50)(digits_model, x, y)
    assert res.success_rate >= 0.6 * white.success_rate > 0.3
    assert_valid_adversarials(digits_model, threat, x, y, res)


def test_decision_attack_without_a_start_says_so_and_accepts_one(digits_model, digits_correct, caplog):
    x, y = digits_correct
    x, y = x[:10], y[:10]

    def stubborn(batch):  # always answers the true label of the first sample
        return torch.full((batch.shape[0],), int(y[0]))

    same = y == y[0]
    threat = rl.ThreatModel("l2", 3.0)
    with caplog.at_level("WARNING"):
        res = A.HopSkipJump(threat, max_queries=300, init_tries=5)(DecisionOracle(stubborn), x[same], y[same])
    assert not res.success.any()
    assert "no adversarial starting point" in caplog.text and "starting_points" in caplog.text
    # a start from another class is accepted and used
    other = x[~same][:1].expand_as(x[same]).clone()
    oracle = DecisionOracle.from_model(digits_model)
    res = A.HopSkipJump(rl.ThreatModel("l2", 10.0), max_queries=300, starting_points=other)(oracle, x[same], y[same])
    assert res.success.all()


def test_oracle_accounting_budget_memo_and_replay():
    calls = []

    def f(batch):
        calls.append(batch.shape[0])
        return batch.flatten(1).sum(1, keepdim=True).repeat(1, 3)

    oracle = ScoreOracle(f, budget=2, record=True, batch_size=2)
    x = torch.rand(3, 1, 2, 2)
    oracle(x, ids=[0, 1, 2])
    assert calls == [2, 1]  # batched
    oracle(x[:1], ids=[0])  # memoised: free for the sample (one re-query checks determinism)
    assert oracle.cache_hits == 1 and oracle.verification_queries == 1 and oracle.total_queries == 4
    assert oracle.queries_of([0, 1, 2]).tolist() == [1, 1, 1] and oracle.deterministic is not False
    oracle(x[:1] + 0.1, ids=[0])
    with pytest.raises(QueryBudgetExceeded, match=r"samples \[0\] exhausted their budget of 2"):
        oracle(x[:1] + 0.2, ids=[0])
    inputs, outputs = zip(*oracle.replay())
    assert sum(i.shape[0] for i in inputs) == oracle.total_queries
    with pytest.raises(rl.InputError, match="budget must be >= 1"):
        ScoreOracle(f, budget=0)
    with pytest.raises(rl.InputError, match=r"for a batch of 3, got shape \(4, 3\)"):
        ScoreOracle(lambda b: torch.zeros(b.shape[0] + 1, 3))(x)
    with pytest.raises(rl.InputError, match="one decision per sample"):
        DecisionOracle(lambda b: torch.zeros(b.shape[0], 2))(x)


def test_oracle_warns_when_not_deterministic():
    g = torch.Generator().manual_seed(0)
    oracle = ScoreOracle(lambda b: torch.rand(b.shape[0], 3, generator=g))
    x = torch.rand(2, 4)
    oracle(x)
    with pytest.warns(NonDeterministicOracleWarning, match="not deterministic"):
        oracle(x)
    assert oracle.deterministic is False and not oracle.memoize


def test_string_decisions_and_uint8_inputs():
    seen = []

    def ocr(batch):
        seen.append(batch.dtype)
        return ["dark" if float(b.float().mean()) < 128 else "light" for b in batch]

    oracle = DecisionOracle(ocr, input_dtype="uint8")
    out = oracle(torch.tensor([[0.1, 0.2], [0.9, 0.8]]))
    assert out == ["dark", "light"] and seen == [torch.uint8]


def test_white_box_attack_on_an_oracle_is_a_clear_error(digits_model, digits_test):
    x, y = digits_test
    with pytest.raises(rl.InputError, match="needs input gradients"):
        A.PGD(rl.ThreatModel("linf", 0.1))(ScoreOracle.from_model(digits_model), x, y)
