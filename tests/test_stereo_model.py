import pytest
import torch

import robustlab as rl
from helpers import tiny_stereo_net
from robustlab.tasks.stereo import disparity_objective, evaluate_stereo, stereo_threat


@pytest.fixture(scope="module")
def trained():
    return tiny_stereo_net(64, 8, h=48, w=96, max_disp=24, train_seed=1, val_seed=2, steps=400)  # ~20 s on 2 cores


def test_a_trained_tiny_net_beats_the_constant_baseline(trained):
    model, train, val, losses = trained
    assert sum(losses[-20:]) < sum(losses[:20])
    m = evaluate_stereo(model, val)
    constant = float(train.disparity[train.mask].mean())
    baseline = rl.tasks.stereo.stereo_metrics(torch.full_like(val.disparity, constant), val.disparity, val.mask)
    assert m["epe"] < 0.6 * baseline["epe"], (m, baseline)


@pytest.mark.parametrize("views", ["left", "right", "both"])
def test_pgd_on_disparity_through_the_common_engine(trained, views):
    model, _, val, _ = trained
    clean = evaluate_stereo(model, val)
    threat = stereo_threat(0.02, views)
    attack = rl.attacks.PGD(threat, disparity_objective(threshold=100.0), steps=10, step_size=0.005, early_stop=False)
    res = attack(model, val.x, (val.disparity, val.mask))
    attacked = evaluate_stereo(model, val, x=res.x_adv)
    assert attacked["epe"] >= 2 * clean["epe"], (clean, attacked)
    changed = (res.x_adv - val.x).abs().amax(dim=(0, 2, 3))
    assert float(changed.max()) <= 0.02 + 1e-6
    if views == "left":
        assert float(changed[3:].max()) == 0.0
    if views == "right":
        assert float(changed[:3].max()) == 0.0


@pytest.mark.parametrize("attack_cls", ["pgd", "apgd"])
def test_stereo_consistent_perturbations_satisfy_their_constraint(trained, attack_cls):
    """The stereo-consistent threat is attacked by plain PGD and APGD, unchanged."""
    from robustlab.tasks.stereo import StereoConsistentThreat, warp_to_left

    model, _, val, _ = trained
    x = 0.1 + 0.8 * val.x  # keep pixels away from the bounds: no clamping, the constraint holds exactly
    threat = StereoConsistentThreat(0.02, val.disparity, val.mask)
    attack = rl.attacks.PGD(threat, disparity_objective(threshold=100.0), steps=10, step_size=0.005) if attack_cls == "pgd" \
        else rl.attacks.APGD(threat, disparity_objective(threshold=100.0), steps=10)
    res = attack(model, x, (val.disparity, val.mask))
    delta = res.x_adv - x
    d_left, d_right = delta[:, :3], delta[:, 3:]
    assert float(d_right.abs().max()) <= 0.02 + 1e-6 and float(d_right.abs().max()) > 0.01
    expected_left = warp_to_left(d_right, val.disparity) * val.mask
    assert torch.allclose(d_left, expected_left, atol=1e-6)
    assert float(d_left[~val.mask.expand_as(d_left)].abs().max()) == 0.0  # occluded pixels untouched
    attacked = evaluate_stereo(model, val, x=res.x_adv)
    clean = evaluate_stereo(model, val, x=x)
    assert attacked["epe"] > clean["epe"]  # it still hurts the network (which is not a correct matcher)


def test_per_sample_threat_state_follows_early_stopping(trained):
    """With early stopping, finished pairs leave the batch and their warp maps leave the threat with
    them: every pair keeps its own disparity, so early stopping changes no result."""
    from robustlab.objectives import RegressionError
    from robustlab.tasks.stereo import StereoConsistentThreat

    model, _, val, _ = trained
    x, d, m = val.x[:4], val.disparity[:4], val.mask[:4]
    threat = StereoConsistentThreat(0.02, d, m)
    probe = rl.attacks.PGD(threat, RegressionError(threshold=100.0), steps=5, step_size=0.005)(model, x, (d, m))
    objective = RegressionError(threshold=float(probe.loss.median()) + 100.0)  # some pairs finish early, some never
    batch = rl.attacks.PGD(threat, objective, steps=5, step_size=0.005)(model, x, (d, m))
    full = rl.attacks.PGD(threat, objective, steps=5, step_size=0.005, early_stop=False)(model, x, (d, m))
    assert 0 < int(batch.success.sum()) < 4
    assert torch.equal(batch.success, full.success)
    assert torch.allclose(batch.x_adv[~batch.success], full.x_adv[~full.success], atol=1e-6)
    with pytest.raises(rl.errors.InputError, match="subset"):
        rl.attacks.PGD(threat, objective, steps=1)(model, x[:2], (d[:2], m[:2]))


def test_sgbm_baseline_and_a_black_box_attack_on_it(trained):
    from robustlab.tasks.stereo import SGBM, sgbm_oracle, stereo_metrics

    _, train, val, _ = trained
    sgbm = SGBM(max_disp=24)
    clean = stereo_metrics(sgbm(val.x), val.disparity, val.mask)
    constant = float(train.disparity[train.mask].mean())
    baseline = stereo_metrics(torch.full_like(val.disparity, constant), val.disparity, val.mask)
    assert clean["bad1"] < baseline["bad1"]  # a real matcher (its unmatched left border counts as errors)
    oracle = sgbm_oracle(max_disp=24)
    res = rl.attacks.Square(stereo_threat(0.03, "both"), disparity_objective(threshold=100.0), max_queries=150,
                            early_stop=False)(oracle, val.x, (val.disparity, val.mask))
    attacked = stereo_metrics(sgbm(res.x_adv), val.disparity, val.mask)
    assert attacked["epe"] > 1.1 * clean["epe"], (clean, attacked)
    assert oracle.total_queries <= 150 * len(val) + oracle.verification_queries


def test_defense_reduces_adaptive_attack_error_and_regularisers_are_sound(trained):
    import copy

    from robustlab.tasks.stereo import DefenseConfig, defend_stereo, evaluate_defense, lr_feature_consistency

    model, train, val, _ = trained
    before = evaluate_defense(model, val, steps=5)
    defended = copy.deepcopy(model)
    defend_stereo(defended, train, DefenseConfig(steps=40, attack_steps=3))
    after = evaluate_defense(defended, val, steps=5)  # re-optimised against the defended model
    assert after["adaptive"]["epe"] < 0.75 * before["adaptive"]["epe"], (before, after)
    # identical views with zero disparity: the consistency term vanishes; shuffled views: it does not
    same = torch.cat([val.x[:2, :3], val.x[:2, :3]], 1)
    zero = torch.zeros_like(val.disparity[:2])
    ones = torch.ones_like(val.mask[:2])
    other = torch.cat([val.x[:2, :3], val.x[2:4, 3:]], 1)
    with torch.no_grad():
        assert float(lr_feature_consistency(model, same, zero, ones)) < 1e-6
        assert float(lr_feature_consistency(model, other, zero, ones)) > 0.01
    hist = defend_stereo(copy.deepcopy(model), train, DefenseConfig(steps=2, attack_steps=1, lr_consistency=0.1, llr=1.0, llr_steps=1))
    assert all(k in hist[-1] for k in ("lr_consistency", "local_linearity"))
    assert hist[-1]["local_linearity"] >= 0
