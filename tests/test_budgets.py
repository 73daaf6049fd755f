"""Budgets are exact (issue 25, case 4): no oracle row beyond its budget, no sample beyond the attack's
``max_queries``, budgets below an attack's minimum step refused with the minimum named, non-positive
budgets refused. A property test over attacks, budgets, batch shapes and oracle budgets pins it."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import robustlab as rl
from robustlab import attacks as A
from robustlab.errors import InputError
from robustlab.oracles import DecisionOracle, QueryBudgetExceeded, ScoreOracle

from helpers import cli


class Counted:
    """A tiny linear classifier on [B, C, H, W] inputs that counts the rows it is sent."""

    def __init__(self, shape=(1, 6, 6), classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(int(torch.tensor(shape).prod()), classes, generator=g)
        self.rows = 0

    def __call__(self, x):
        self.rows += x.shape[0]
        return x.flatten(1) @ self.w


def _batch(model, b, shape=(1, 6, 6), seed=1):
    x = torch.rand(b, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


@pytest.mark.parametrize("kind", [ScoreOracle, DecisionOracle])
def test_oracle_sends_no_row_beyond_its_budget(kind):
    model = Counted()
    oracle = kind.from_model(model, budget=5, memoize=False)
    x = torch.rand(10, 1, 6, 6)
    with pytest.raises(QueryBudgetExceeded, match="budget of 5"):
        oracle(x, ids=[0] * 10)
    assert oracle.per_sample.get(0, 0) <= 5 and model.rows <= 5
    oracle(x[:5], ids=[0] * 5)  # the budget is still there for a request that fits
    assert oracle.per_sample[0] == 5 and model.rows == 5
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[5:6], ids=[0])
    assert oracle.per_sample[0] == 5 and model.rows == 5


def test_nes_below_one_step_spends_at_most_its_budget():
    model = Counted()
    x, y = _batch(model, 10)
    res = A.NES(rl.ThreatModel("linf", 0.05), max_queries=50)(model, x, y)
    assert int(res.queries.max()) <= 50 and int(res.queries.min()) >= 49  # a partial step: 24 pairs
    with pytest.raises(InputError, match="at least 4"):
        A.NES(rl.ThreatModel("linf", 0.05), max_queries=3)


def test_bandits_below_one_step_is_refused_naming_the_minimum():
    with pytest.raises(InputError, match="at least 4"):
        A.BanditsTD(rl.ThreatModel("linf", 0.05), max_queries=1)


@pytest.mark.parametrize("make", [
    lambda t, q: A.Square(t, max_queries=q), lambda t, q: A.SimBA(t, steps=q),
    lambda t, q: A.SimBA(t, max_queries=q), lambda t, q: A.NES(t, max_queries=q),
    lambda t, q: A.BanditsTD(t, max_queries=q), lambda t, q: A.HopSkipJump(t, max_queries=q),
    lambda t, q: A.RayS(t, max_queries=q), lambda t, q: A.BoundaryAttack(t, max_queries=q),
])
@pytest.mark.parametrize("q", [0, -5])
def test_non_positive_budgets_are_refused(make, q):
    with pytest.raises(InputError, match=">= 1"):
        make(rl.ThreatModel("l2", 0.5), q)


def test_nes_under_an_oracle_budget_stays_within_it():
    model = Counted()
    x, y = _batch(model, 6)
    oracle = ScoreOracle.from_model(model, budget=30)
    res = A.NES(rl.ThreatModel("linf", 0.01), n_samples=16)(oracle, x, y)
    assert max(oracle.per_sample.values()) <= 30 and int(res.queries.max()) <= 30
    assert res.status is not None and set(res.status) <= {"success", "oracle_budget"}


def test_square_restarts_share_the_budget():
    model = Counted()
    x, y = _batch(model, 4)
    res = A.Square(rl.ThreatModel("linf", 0.001), max_queries=20, restarts=3)(model, x, y)
    assert int(res.queries.max()) <= 20


MINIMUM = {"nes": 4, "bandits": 4, "square-linf": 2}  # square-linf: 2 restarts, one start query each
ATTACKS = {
    "square-linf": (lambda q: A.Square(rl.ThreatModel("linf", 0.05), max_queries=q, restarts=2), "score"),
    "square-l2": (lambda q: A.Square(rl.ThreatModel("l2", 0.3), max_queries=q), "score"),
    "simba": (lambda q: A.SimBA(rl.ThreatModel("l2", 0.3), step_size=0.2, max_queries=q), "score"),
    "nes": (lambda q: A.NES(rl.ThreatModel("linf", 0.05), n_samples=8, max_queries=q), "score"),
    "bandits": (lambda q: A.BanditsTD(rl.ThreatModel("linf", 0.05), max_queries=q), "score"),
    "hopskipjump": (lambda q: A.HopSkipJump(rl.ThreatModel("l2", 0.5), max_queries=q), "decision"),
    "rays": (lambda q: A.RayS(rl.ThreatModel("linf", 0.05), max_queries=q), "decision"),
    "boundary": (lambda q: A.BoundaryAttack(rl.ThreatModel("l2", 0.5), max_queries=q), "decision"),
}


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(ATTACKS)), budget=st.integers(1, 300), b=st.integers(1, 4),
       channels=st.sampled_from([1, 3]), side=st.integers(4, 7),
       oracle_budget=st.one_of(st.none(), st.integers(1, 300)), memoize=st.booleans())
def test_no_sample_ever_exceeds_its_budget(name, budget, b, channels, side, oracle_budget, memoize):
    make, kind = ATTACKS[name]
    if budget < MINIMUM.get(name, 1):
        with pytest.raises(InputError, match=f"must be at least {MINIMUM[name]}"):
            make(budget)
        return
    shape = (channels, side, side)
    model = Counted(shape)
    x, y = _batch(model, b, shape)
    oracle_cls = ScoreOracle if kind == "score" else DecisionOracle
    oracle = oracle_cls.from_model(model, budget=oracle_budget, memoize=memoize)
    res = make(budget)(oracle, x, y)
    assert (res.queries <= budget).all(), (name, res.queries.tolist())
    if oracle_budget is not None and oracle.per_sample:
        assert max(oracle.per_sample.values()) <= oracle_budget
    assert (oracle.queries_of(range(b)) <= res.queries.cpu()).all()  # memoised repeats are free


@pytest.mark.parametrize("args,message", [
    (["--attack", "nes", "--queries", "3"], "NES's max_queries (--max-queries) must be at least 4"),
    (["--attack", "bandits", "--queries", "1"], "must be at least 4"),
    (["--attack", "square", "--max-queries", "2", "--restarts", "3"], "Square's max_queries (--max-queries) must be at least 3"),
])  # --queries is the older spelling of --max-queries; non-positive: refused by the settings model already
def test_cli_refuses_budgets_below_the_minimum_in_one_line(trained_run, tmp_path, capsys, args, message):
    code, _, err = cli(capsys, "attack", trained_run, "--n", "4", "--eps", "0.1", "--black-box", *args,
                       "--runs", tmp_path / "runs")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_cli_nes_below_one_step_spends_exactly_its_budget(trained_run, tmp_path, capsys):
    code, out, err = cli(capsys, "attack", trained_run, "--n", "10", "--eps", "0.05", "--black-box", "--attack",
                         "nes", "--queries", "50", "--runs", tmp_path / "runs")
    assert code == 0, err
    assert '"forward_calls": 500' in out  # 10 points x 50 queries (1,020 before the fix)


def test_ocr_simba_stays_within_the_line_budget():
    """OCR's SimBA walks budget // 2 directions of 1-2 queries after the clean read: budget + 1 at worst
    for an even budget, unless its max_queries holds it to the budget."""
    from robustlab.tasks.ocr.attacks import build_attack as ocr_attack

    model = Counted((1, 6, 6), classes=2)
    model.w.zero_()  # a flat loss: no move improves it, so every direction costs 2 queries
    x, y = _batch(model, 4, (1, 6, 6))
    res = ocr_attack("simba-pixel", rl.ThreatModel("linf", 0.1), None, budget=10)(model, x, y)
    assert res.queries.tolist() == [10] * 4  # 11 before
