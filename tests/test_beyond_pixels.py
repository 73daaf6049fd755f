import pytest
import torch

import robustlab as rl
from robustlab import attacks as A
from robustlab.objectives import TargetedCE
from robustlab.oracles import DecisionOracle

from conftest import train_on_digits as _train


@pytest.fixture(scope="module")
def zoo(digits_model):
    return {
        "mlp64": digits_model,
        "mlp256x128": _train(rl.models.MLP(64, 10, hidden=(256, 128)), seed=1),
        "cnn": _train(rl.models.MadryMNISTCNN(1, 10, width=0.25, input_size=8), epochs=20, seed=2),
    }


def test_transfer_matrix_across_architectures(zoo, digits_test):
    x, y = digits_test
    m = A.transfer_matrix(zoo, x, y, rl.ThreatModel("linf", 0.15))
    assert m.rates.shape == (3, 3)
    diag = m.rates.diagonal()
    assert (diag > 0.7).all()                       # white-box (MI-FGSM, 10 steps)
    off = m.rates[~torch.eye(3, dtype=torch.bool)]
    assert (off > 0.15).all() and (off <= diag.max()).all()  # adversarial examples transfer, less than white-box
    assert "| mlp64 |" in m.to_markdown()


def test_transfer_to_a_label_only_oracle_and_ensembles(zoo, digits_test):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.15)
    target = zoo["cnn"]
    via_model = A.transfer_attack(zoo["mlp64"], target, x, y, threat)
    via_oracle = A.transfer_attack(zoo["mlp64"], DecisionOracle.from_model(target), x, y, threat)
    assert via_model.transfer_rate == via_oracle.transfer_rate > 0.15
    ens = A.transfer_attack([zoo["mlp64"], zoo["mlp256x128"]], target, x, y, threat)
    assert threat.contains(x, ens.x_adv).all() and ens.transfer_rate > 0.15


def test_input_diversity_keeps_shapes(zoo, digits_test):
    x, _ = digits_test
    div = A.InputDiversity(zoo["cnn"], p=1.0, generator=torch.Generator().manual_seed(0))
    assert div(x).shape == (x.shape[0], 10)
    same = A.InputDiversity(zoo["cnn"], p=0.0)
    assert torch.equal(same(x), zoo["cnn"](x))


@pytest.mark.parametrize("threat_cls", [A.ColorThreat, A.GeometricThreat, A.BlurLightingThreat])
def test_parametric_threats_identity_and_attack(digits_model, digits_correct, threat_cls):
    x, y = digits_correct
    threat = threat_cls(eps=1.0)
    assert torch.allclose(threat.apply(x, threat.identity(x)), x, atol=1e-4)
    res = A.ParametricPGD(threat, steps=20)(digits_model, x, y)
    # the attack beats random parameters from the same box
    rand = A.RandomTransform(digits_model, threat, torch.Generator().manual_seed(0))
    with torch.no_grad():
        random_success = float((rand(x).argmax(1) != y).float().mean())
        assert torch.equal(res.success, digits_model(res.x_adv).argmax(1) != y)
    assert res.success_rate > random_success + 0.05
    curve = A.ParametricPGD(threat, steps=10)(digits_model, x, y, eps=[0.25, 0.5, 1.0])
    rates = [r.success_rate for r in curve]
    assert rates == sorted(rates)


def test_parametric_unknown_range_is_a_clear_error():
    with pytest.raises(rl.InputError, match="known: rotation, tx, ty, scale"):
        A.GeometricThreat(ranges={"shear": 0.1})


def test_eot_survives_random_transformations(digits_model, digits_correct):
    x, y = digits_correct
    physical = A.GeometricThreat(eps=0.5)
    threat = rl.ThreatModel("linf", 0.12)
    rand_model = A.RandomTransform(digits_model, physical, torch.Generator().manual_seed(1))
    plain = A.PGD(threat, steps=20, early_stop=False)(digits_model, x, y)
    eot_attack = A.PGD(threat, steps=20, early_stop=False, eot=8)
    eot = eot_attack(rand_model, x, y)
    s_plain = A.survival_rate(digits_model, plain.x_adv, y, physical, n=30).mean()
    s_eot = A.survival_rate(digits_model, eot.x_adv, y, physical, n=30).mean()
    assert s_eot > s_plain + 0.05


def test_universal_perturbation_generalises_and_round_trips(digits_model, tmp_path):
    train, test = rl.load_dataset("digits", "train"), rl.load_dataset("digits", "test")
    threat = rl.ThreatModel("linf", 0.25)
    uap = A.UniversalPerturbation.fit(digits_model, train.x, train.y, threat, epochs=4)
    assert uap.delta.shape == (1, 1, 8, 8) and float(uap.delta.abs().max()) <= 0.25 + 1e-6
    fooled = uap.success_rate(digits_model, test.x, test.y)
    noise = rl.ThreatModel("linf", 0.25).random_init(test.x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise_rate = float((digits_model(noise).argmax(1) != test.y).float().mean())
    assert fooled > noise_rate + 0.2
    uap.save(tmp_path / "uap.pt")
    again = A.UniversalPerturbation.load(tmp_path / "uap.pt")
    assert torch.equal(again.apply(test.x), uap.apply(test.x))
    with pytest.raises(rl.InputError, match="does not hold a universal perturbation"):
        A.AdversarialPatch.save(A.AdversarialPatch(torch.zeros(1, 2, 2)), tmp_path / "p.pt") or A.UniversalPerturbation.load(tmp_path / "p.pt")


def test_targeted_patch_on_new_data(digits_model, tmp_path):
    train, test = rl.load_dataset("digits", "train"), rl.load_dataset("digits", "test")
    target_train = torch.full_like(train.y, 3)
    patch = A.AdversarialPatch.fit(digits_model, train.x, target_train, size=5, objective=TargetedCE(), epochs=10)
    keep = test.y != 3
    rate = patch.success_rate(digits_model, test.x[keep], torch.full_like(test.y[keep], 3), TargetedCE(), seed=5)
    blank = A.AdversarialPatch(torch.full_like(patch.patch, 0.5))
    base = blank.success_rate(digits_model, test.x[keep], torch.full_like(test.y[keep], 3), TargetedCE(), seed=5)
    assert rate > base + 0.1 and patch.history[-1] > patch.history[0]
    patch.save(tmp_path / "patch.pt")
    assert torch.equal(A.AdversarialPatch.load(tmp_path / "patch.pt").patch, patch.patch)
