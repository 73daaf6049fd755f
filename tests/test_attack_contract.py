"""The engine contract, for every registered attack (parametrised over the registry, so a new attack
is covered the day it is registered): results lie inside the threat model, successes re-verify,
queries and gradients are counted, early stopping does not change the result, a fixed seed
reproduces it."""
import pytest
import torch

import robustlab as rl
from robustlab import attacks as A

# small budgets: the contract, not the strength, is under test
FAST = {
    "fgsm": {}, "bim": {"steps": 5}, "pgd": {"steps": 5}, "mifgsm": {"steps": 5}, "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5}, "apgd-t": {"steps": 4, "n_targets": 2}, "cw-l2": {"steps": 10, "binary_search_steps": 2},
    "deepfool": {"steps": 10}, "fab-t": {"steps": 5, "n_targets": 2}, "parametric-pgd": {"steps": 5},
    "square": {"max_queries": 60}, "simba": {"steps": 60}, "nes": {"max_queries": 200}, "bandits": {"max_queries": 200},
    "hopskipjump": {"max_queries": 200}, "rays": {"max_queries": 200}, "boundary": {"max_queries": 200},
}


def _threat(name):
    if name == "parametric-pgd":
        return rl.threat.ColorThreat(eps=1.0)
    norms = A.ATTACKS.metadata(name)["norms"]
    norm = "l2" if "l2" in norms else norms[0]
    return rl.ThreatModel(norm, {"linf": 0.1, "l2": 1.5, "l1": 8.0}[norm])


def _as_image(x):
    return x.reshape(-1, 1, 8, 8)


class ImageMLP(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.flatten(1))


@pytest.fixture(scope="module")
def setup(digits_model, digits_correct):
    x, y = digits_correct
    return ImageMLP(digits_model).eval(), _as_image(x[:24]), y[:24]


def _run(name, model, x, y, **extra):
    threat = _threat(name)
    attack = A.create_attack(name, threat, seed=3, **FAST[name], **extra)
    access = A.ATTACKS.metadata(name)["access"]
    target = model
    if access == "score":
        target = rl.oracles.ScoreOracle.from_model(model)
    elif access == "decision":
        target = rl.oracles.DecisionOracle.from_model(model)
    return threat, attack(target, x, y)


def test_the_registry_lists_every_attack_with_its_metadata():
    assert set(FAST) == set(A.ATTACKS.names()), "add the new attack to FAST with a small budget"
    for name, meta in A.ATTACKS.items():
        assert meta["access"] in ("white-box", "score", "decision") and meta["norms"] and meta["doc"]


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_contract(setup, name):
    model, x, y = setup
    threat, res = _run(name, model, x, y)
    # inside the threat model (and the input bounds)
    assert threat.contains(x, res.x_adv).all(), name
    # successes re-verify on the returned points
    with torch.no_grad():
        mis = model(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, mis & res.success) and bool((mis[res.success]).all()), name
    # work is counted, per sample
    assert res.queries.shape == y.shape and bool((res.queries > 0).all()), name
    if A.ATTACKS.metadata(name)["access"] == "white-box":
        assert int(res.grad_calls.sum()) > 0
    budget = FAST[name].get("max_queries")
    if budget is not None:
        assert int(res.queries.max()) <= budget + 1, (name, int(res.queries.max()))  # +1: the clean point's query
    # a fixed seed reproduces the result
    _, again = _run(name, model, x, y)
    assert torch.equal(res.success, again.success) and torch.allclose(res.x_adv, again.x_adv), name


@pytest.mark.parametrize("name", sorted(n for n in FAST if A.ATTACKS.metadata(n)["access"] == "white-box"))
def test_early_stopping_does_not_change_the_result(setup, name):
    model, x, y = setup
    _, on = _run(name, model, x, y, early_stop=True)
    _, off = _run(name, model, x, y, early_stop=False)
    assert torch.equal(on.success, off.success), name
    assert int(on.grad_calls.sum()) <= int(off.grad_calls.sum())


ENGINE_OPTIONS = {"eot": 2, "eot_judge": "draw", "verify": False, "early_stop": False, "seed": 5}
ITERATIVE_OPTIONS = {"keep_last": True, "judge_final": False}


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_attack_takes_the_engine_options_in_its_constructor(name):
    options = dict(ENGINE_OPTIONS)
    if issubclass(A.ATTACKS.get(name), A.IterativeAttack):
        options.update(ITERATIVE_OPTIONS)
    attack = A.create_attack(name, _threat(name), **FAST[name], **options)
    assert {k: getattr(attack, k) for k in options} == options, name


@pytest.mark.parametrize("bad", [{"eot": 0}, {"eot": 1.5}, {"eot": True}, {"eot_judge": "max"}])
def test_engine_options_are_validated(bad):
    with pytest.raises(rl.InputError):
        A.PGD(rl.ThreatModel("linf", 0.1), **bad)


def test_the_training_preset_is_built_by_the_constructor():
    attack = A.PGD.for_training(rl.ThreatModel("linf", 0.1), steps=3)
    assert (attack.early_stop, attack.keep_last, attack.judge_final, attack.verify) == (False, True, False, False)


@pytest.mark.parametrize("name", sorted(FAST))
def test_no_attack_overrides_the_engines_call(name):
    assert A.ATTACKS.get(name).__call__ is A.Attack.__call__, f"{name} overrides Attack.__call__; write its step"


def test_a_new_attack_that_overrides_call_is_refused():
    with pytest.raises(TypeError, match="__call__"):
        class Bad(A.Attack):  # noqa: F841
            def __call__(self, model, x, target, eps=None, *, threat=None):
                return None
