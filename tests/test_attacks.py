import pytest
import torch

import robustlab as rl
from robustlab import attacks as A
from robustlab.objectives import RegressionError


def robust_acc(model, x, y, attack):
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    res = attack(model, x, y)
    return float((clean_ok & ~res.success).float().mean()), res


def test_apgd_checkpoint_schedule_for_100_iterations():
    assert A.apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert A.apgd_checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_pgd_at_least_as_strong_as_fgsm_and_apgd_as_pgd(digits_model, digits_test, eps):
    x, y = digits_test
    threat = rl.ThreatModel("linf", eps)
    fgsm, _ = robust_acc(digits_model, x, y, A.FGSM(threat))
    pgd, _ = robust_acc(digits_model, x, y, A.PGD(threat, steps=20))
    apgd, _ = robust_acc(digits_model, x, y, A.APGD(threat, steps=20))
    clean, _ = robust_acc(digits_model, x, y, A.PGD(threat.with_eps(0.0)))
    assert pgd <= fgsm
    assert apgd <= pgd
    assert apgd < clean - 0.1  # the attacks do something


def test_robust_accuracy_non_increasing_in_eps_and_reaches_zero(digits_model, digits_test):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.0)
    curve = rl.robustness_curve(digits_model, (x, y), threat, [0.0, 0.02, 0.05, 0.1, 0.2, 0.5], "fast")
    accs = curve.robust_accuracy
    assert accs[0] > 0.9
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] == 0.0
    ex = curve.reports[2].examples  # adversarial examples shown in reports are really adversarial
    assert ex["x"].shape[0] > 0 and (ex["pred_adv"] != ex["y"]).all()
    # the same monotonicity holds for independent single-attack runs
    single = [robust_acc(digits_model, x, y, A.APGD(threat.with_eps(e), steps=20))[0] for e in (0.02, 0.05, 0.1, 0.5)]
    assert all(a >= b for a, b in zip(single, single[1:])) and single[-1] == 0.0


@pytest.mark.parametrize("make", [
    lambda t: A.PGD(t, steps=15, restarts=2),
    lambda t: A.APGD(t, steps=20),
    lambda t: A.MIFGSM(t, steps=10),
    lambda t: A.APGDT(t, n_targets=3, steps=10),
])
def test_early_stopping_changes_no_result_and_saves_gradients(digits_model, digits_test, make):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.08)
    a_on, a_off = make(threat), make(threat)
    a_off.early_stop = False
    r_on, r_off = a_on(digits_model, x, y), a_off(digits_model, x, y)
    assert torch.equal(r_on.success, r_off.success)
    assert r_on.grad_calls.sum() < r_off.grad_calls.sum()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0), ("l1", 4.0)])
def test_every_attack_returns_points_inside_the_threat_model(digits_model, digits_test, norm, eps):
    x, y = digits_test
    threat = rl.ThreatModel(norm, eps)
    attacks = [A.FGSM(threat), A.PGD(threat, steps=5), A.MIFGSM(threat, steps=5), A.APGD(threat, steps=10)]
    if norm == "l2":
        attacks += [A.CarliniWagnerL2(threat, steps=30, binary_search_steps=3), A.DeepFool(threat)]
    if norm == "linf":
        attacks += [A.DeepFool(threat), A.APGDT(threat, n_targets=2, steps=5)]
    for attack in attacks:
        res = attack(digits_model, x, y)
        assert threat.contains(x, res.x_adv).all(), attack
        with torch.no_grad():
            # the success flag is the truth at the returned point
            truly = digits_model(res.x_adv).argmax(1) != y
        assert torch.equal(res.success, truly), attack
        assert res.success.any(), attack


def test_success_is_kept_across_steps_and_restarts(digits_model, digits_correct):
    """The best adversarial found at any step is returned, not the last iterate."""
    x, y = digits_correct
    threat = rl.ThreatModel("linf", 0.1)
    res = A.PGD(threat, steps=10, restarts=3, early_stop=False)(digits_model, x, y)
    per_restart = [A.PGD(threat, steps=10, early_stop=False, seed=0)(digits_model, x, y).success]
    assert (res.success | ~per_restart[0]).all()


def test_minimum_norm_attacks_find_small_perturbations(digits_model, digits_correct):
    x, y = digits_correct
    big = rl.ThreatModel("l2", 10.0)
    df = A.DeepFool(big)(digits_model, x, y)
    cw = A.CarliniWagnerL2(big, steps=100, binary_search_steps=6)(digits_model, x, y)
    assert df.success.float().mean() > 0.95 and cw.success.float().mean() > 0.95
    pgd_norm = 1.5  # PGD at this radius breaks most points; minimum-norm ones need less on median
    pgd = A.PGD(rl.ThreatModel("l2", pgd_norm), steps=20)(digits_model, x, y)
    assert pgd.success.float().mean() > 0.5
    assert cw.perturbation_norms[cw.success].median() < pgd_norm
    assert df.perturbation_norms[df.success].median() < pgd_norm


def test_multi_eps_call_matches_single_calls(digits_model, digits_test):
    x, y = digits_test
    attack = A.PGD(rl.ThreatModel("linf", 0.1), steps=10)
    multi = attack(digits_model, x, y, eps=[0.1, 0.03])
    assert [r.eps for r in multi] == [0.1, 0.03]
    single_small = attack(digits_model, x, y, eps=0.03)
    assert torch.equal(multi[1].success, single_small.success)
    assert (multi[0].success >= multi[1].success).all()
    for r in multi:
        assert r.threat.contains(x, r.x_adv).all()


def test_batch_composition_does_not_change_a_sample(digits_model, digits_test):
    """Per-sample normalisation (MI-FGSM's L1) and per-sample random starts."""
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.05)
    for attack in (A.MIFGSM(threat, steps=5, early_stop=False), A.PGD(threat, steps=5, early_stop=False)):
        full = attack(digits_model, x[:20], y[:20])
        x_scaled = x[:20].clone()
        part = attack(digits_model, x_scaled[:5], y[:5])
        if isinstance(attack, A.MIFGSM):
            assert torch.allclose(full.x_adv[:5], part.x_adv, atol=1e-6)
        assert torch.equal(full.success[:5], part.success)


def test_regression_objective_attack(tiny_regressor):
    torch.manual_seed(0)
    x = torch.rand(16, 16)
    with torch.no_grad():
        target = tiny_regressor(x)
    objective = RegressionError(threshold=0.05, error="l1")
    threat = rl.ThreatModel("linf", 0.1)
    res = A.PGD(threat, objective, steps=20, early_stop=False)(tiny_regressor, x, target)
    assert threat.contains(x, res.x_adv).all()
    with torch.no_grad():
        err = (tiny_regressor(res.x_adv) - target).abs().mean(1)
        rand_err = (tiny_regressor(threat.random_init(x)) - target).abs().mean(1)
    assert torch.allclose(err - 0.05, res.loss, atol=1e-5)
    assert err.mean() > 2 * rand_err.mean()  # gradient ascent beats random noise
    assert torch.equal(res.success, err > 0.05)


def test_normalize_wrapper_lets_attacks_work_in_unit_space(digits_model, digits_test):
    x, y = digits_test
    inner = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Unflatten(1, (1, 8, 8)))
    norm = rl.Normalize([0.5], [0.25], torch.nn.Sequential(inner, rl.models.Normalize([-2.0], [4.0], digits_model)))
    with torch.no_grad():
        assert torch.allclose(norm(x), digits_model(x), atol=1e-5)
    r1 = A.PGD(rl.ThreatModel("linf", 0.05), steps=5)(norm, x, y)
    r2 = A.PGD(rl.ThreatModel("linf", 0.05), steps=5)(digits_model, x, y)
    assert torch.equal(r1.success, r2.success)


def test_registry_and_unknown_attack():
    threat = rl.ThreatModel("linf", 0.1)
    assert isinstance(A.create_attack("apgd-ce", threat), A.APGD)
    with pytest.raises(rl.UnknownNameError, match="known attacks: .*apgd-ce"):
        A.create_attack("pgdd", threat)
