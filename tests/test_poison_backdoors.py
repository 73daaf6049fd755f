"""Backdoors (BadNets, Blend, WaNet), label flipping, their metrics and the poisoned-data run (issue 22):
triggers exactly where and how configured, exact poisoned indices, metrics on hand-made predictions."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustlab.data import Dataset, load_dataset
from robustlab.errors import InputError
from robustlab.poisoning import (POISONS, BadNets, Blend, LabelFlip, WaNet, backdoor_metrics, clean_accuracy,
                                 defence_effectiveness_rate, target_success)
from robustlab.poisoning.backdoors import identity_grid


def _data(n=40, c=1, size=8, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand(n, c, size, size, generator=g), torch.arange(n) % k, "toy", [str(i) for i in range(k)])


# ----- BadNets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("position, row, col", [("top-left", 0, 0), ("top-right", 0, 6), ("bottom-left", 5, 0),
                                                ("bottom-right", 5, 6), ((2, 3), 2, 3)])
def test_badnets_puts_the_trigger_exactly_there(position, row, col):
    trigger = torch.tensor([[[1.0, 0.0], [0.5, 1.0], [0.0, 0.25]]])  # 1 x 3 x 2
    x = torch.rand(3, 3, 8, 8)
    out = BadNets(trigger=trigger, position=position).apply_trigger(x)
    expected = x.clone()
    expected[:, :, row:row + 3, col:col + 2] = trigger  # a 1-channel trigger goes on every channel
    assert torch.equal(out, expected)
    assert not torch.equal(out, x) and torch.equal(x, x.clone())  # a copy; x untouched


def test_badnets_three_channel_trigger_and_default_checker():
    trigger = torch.stack([torch.zeros(2, 2), torch.ones(2, 2), torch.full((2, 2), 0.5)])
    out = BadNets(trigger=trigger, position="top-left").apply_trigger(torch.rand(2, 3, 6, 6))
    assert torch.equal(out[:, :, :2, :2], trigger.expand(2, 3, 2, 2))
    default = BadNets().apply_trigger(torch.full((1, 1, 5, 5), 0.3))
    assert torch.equal(default[0, 0, 2:, 2:], torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    assert torch.equal(default[0, 0, :2], torch.full((2, 5), 0.3))


@pytest.mark.parametrize("kwargs, x, words", [
    ({"position": "middle"}, torch.rand(1, 1, 8, 8), "position"),
    ({"position": (7, 7)}, torch.rand(1, 1, 8, 8), "does not fit"),
    ({"trigger": torch.ones(2, 2, 2)}, torch.rand(1, 3, 8, 8), "channel"),
    ({"trigger": torch.full((1, 2, 2), 2.0)}, None, "[0, 1]"),
])
def test_badnets_bad_input_is_one_line(kwargs, x, words):
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        BadNets(**kwargs).apply_trigger(x)


def test_poisoned_indices_exact_without_replacement_all_to_one():
    data = _data(n=103)
    out = BadNets(target=1, rate=0.1, seed=3).poison(data)
    idx = out.poisoned_indices
    assert len(idx) == round(0.1 * 103) == 10 and len(set(idx.tolist())) == 10
    assert (data.y[idx] != 1).all()  # drawn only from non-target labels
    assert (out.y[idx] == 1).all() and torch.equal(out.original_y, data.y)
    clean = ~out.poisoned
    assert torch.equal(out.x[clean], data.x[clean]) and torch.equal(out.y[clean], data.y[clean])
    assert torch.equal(out.x[idx], BadNets().apply_trigger(data.x[idx]))
    again = BadNets(target=1, rate=0.1, seed=3).poison(data)
    assert torch.equal(again.poisoned, out.poisoned)  # seeded
    assert not torch.equal(BadNets(target=1, rate=0.1, seed=4).poison(data).poisoned, out.poisoned)


def test_all_to_all_labels_and_rate_one():
    data = _data(n=20, k=4)
    out = BadNets(rate=1.0, all_to_all=True).poison(data)
    assert out.poisoned.all() and torch.equal(out.y, (data.y + 1) % 4)
    with pytest.raises(InputError, match="only 15 qualify"):
        BadNets(target=0, rate=0.9).poison(data)  # 18 wanted, 15 non-target
    out = BadNets(rate=0.5).poison((data.x, data.y))  # an (x, y) pair
    assert out.poisoned.sum() == 10


# ----- Blend, WaNet ---------------------------------------------------------------------------------------------
def test_blend_formula_and_seeded_pattern():
    x = torch.rand(4, 3, 6, 6)
    pattern = torch.rand(3, 6, 6)
    assert torch.allclose(Blend(pattern=pattern).apply_trigger(x), 0.8 * x + 0.2 * pattern)
    assert torch.allclose(Blend(pattern=pattern, alpha=0.5).apply_trigger(x), 0.5 * x + 0.5 * pattern)
    a, b = Blend(seed=1), Blend(seed=1)
    assert torch.equal(a.apply_trigger(x), b.apply_trigger(x))
    assert a.pattern.shape == (3, 6, 6) and 0 <= a.pattern.min() and a.pattern.max() <= 1
    assert not torch.equal(Blend(seed=2).apply_trigger(x), a.apply_trigger(x))


def test_wanet_identity_at_zero_strength_and_grid_reproduces():
    x = torch.rand(3, 2, 12, 12)
    assert torch.allclose(WaNet(s=0.0).apply_trigger(x), x, atol=1e-5)
    w = WaNet(seed=5)
    warped = w.apply_trigger(x)
    assert not torch.allclose(warped, x, atol=1e-2)
    grid = w.grid.clone()
    assert grid.shape == (12, 12, 2)
    assert torch.allclose(WaNet(grid=grid).apply_trigger(x), warped)  # the saved grid reproduces the warp
    # the paper's field: identity + s * grid / H, then grid_sample(align_corners=True)
    field = torch.clamp(identity_grid(12, 12) + 0.5 * grid / 12, -1, 1)[None].expand(3, 12, 12, 2)
    assert torch.allclose(warped, F.grid_sample(x, field, align_corners=True))


def test_wanet_control_grid_normalised_by_mean_abs():
    w = WaNet(k=4, seed=0)
    w.grid_for(4, 4)  # upsampling k x k to k x k with align_corners keeps the control points
    assert torch.allclose(w.grid.abs().mean(), torch.tensor(1.0), atol=1e-5)


def test_wanet_noise_mode_appends_copies_with_their_labels():
    data = _data(n=50)
    out = WaNet(rate=0.1, cross_ratio=2).poison(data)
    assert out.settings["n_noise"] == 10 and len(out) == 60
    assert out.poisoned[:50].sum() == 5 and not out.poisoned[50:].any()
    assert torch.equal(out.original_y[50:], out.y[50:])
    assert torch.equal(out.x[:50][~out.poisoned[:50]], data.x[~out.poisoned[:50]])


# ----- label flipping ---------------------------------------------------------------------------------------------
def test_label_flip_random_and_class_targeted():
    data = _data(n=100, k=5)
    out = LabelFlip(rate=0.2, seed=1).poison(data)
    idx = out.poisoned_indices
    assert len(idx) == 20 and (out.y[idx] != data.y[idx]).all() and out.y.max() < 5
    assert torch.equal(out.x, data.x) and torch.equal(out.y[~out.poisoned], data.y[~out.poisoned])
    out = LabelFlip(rate=0.5, source=2, target=4).poison(data)
    idx = out.poisoned_indices
    assert len(idx) == 10 and (data.y[idx] == 2).all() and (out.y[idx] == 4).all()
    with pytest.raises(InputError, match="both source and target"):
        LabelFlip(source=1)


def test_registered_with_their_papers():
    for name, cls in (("badnets", BadNets), ("blend", Blend), ("wanet", WaNet), ("label_flip", LabelFlip)):
        assert POISONS.get(name) is cls and "20" in cls.__doc__  # a year of the paper


# ----- metrics ---------------------------------------------------------------------------------------------------
class _Rule(nn.Module):
    """Predicts the target 0 when the bottom-right pixel is 1 (the default trigger's corner), else the label
    written in the top-left pixel (x * 10), wrong on label 3."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 10).round().long()
        label = torch.where(label == 3, torch.full_like(label, 2), label)
        label = torch.where(x[:, 0, -1, -1] == 1.0, torch.zeros_like(label), label)
        return F.one_hot(label, 10).float() + self.bias


def test_metrics_on_hand_made_predictions():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    x = torch.zeros(8, 1, 6, 6)
    x[:, 0, 0, 0] = y / 10
    model = _Rule().train()
    m = backdoor_metrics(model, BadNets(target=0), x, y, batch_size=3)
    assert model.training  # the model's mode is restored
    assert m["clean_accuracy"] == 7 / 8 and m["n_triggered"] == 7 and m["asr"] == 1.0
    assert m["original_label_accuracy"] == 0.0
    assert clean_accuracy(model, x, y) == 7 / 8
    m = backdoor_metrics(model, BadNets(trigger=torch.zeros(1, 1, 1)), x, y)  # a trigger that does nothing here
    assert m["asr"] == 0.0 and m["original_label_accuracy"] == 6 / 7
    all2all = backdoor_metrics(model, BadNets(all_to_all=True), x, y, num_classes=10)
    assert all2all["n_triggered"] == 8 and all2all["asr"] == 0.0  # wanted y+1, got 0
    t = target_success(model, x[:4], torch.tensor([0, 1, 5, 2]))
    assert t["success"].tolist() == [True, True, False, True] and t["rate"] == 0.75


def test_defence_effectiveness_rate():
    assert defence_effectiveness_rate(0.9, 1.0, 0.9, 0.0) == 1.0
    assert defence_effectiveness_rate(0.9, 1.0, 0.9, 1.0) == 0.5
    assert defence_effectiveness_rate(0.9, 1.0, 0.0, 1.0) == pytest.approx(0.05)
    assert defence_effectiveness_rate(0.9, 0.5, 0.95, 0.7) == 0.5  # gains count as 0
    with pytest.raises(InputError):
        defence_effectiveness_rate(90, 1.0, 0.9, 0.0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_metrics_follow_the_model_device(device):
    y = torch.tensor([1, 2, 4])
    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 0, 0] = y / 10
    m = backdoor_metrics(_Rule().to(device), BadNets(), x, y)
    assert m["asr"] == 1.0 and m["clean_accuracy"] == 1.0


# ----- the poisoned-data run ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", [BadNets(rate=0.02, position=(1, 2)), Blend(rate=0.02), WaNet(rate=0.02),
                                    LabelFlip(rate=0.02)])
def test_poisoned_run_round_trip(tmp_path, attack):
    from robustlab.experiments.poisoning.runs import attack_from_run, read_poisoned_run, write_poisoned_run

    source = load_dataset("digits", "train")
    poisoned = attack.poison(source)
    path = write_poisoned_run(tmp_path / "p", poisoned, {"name": "digits", "seed": 0}, attack)
    back, config = read_poisoned_run(path)
    assert config["kind"] == "poisoned-data" and config["attack"]["attack"] == attack.name
    for k in ("x", "y", "poisoned", "original_y"):
        assert torch.equal(getattr(back, k), getattr(poisoned, k))
    rebuilt = attack_from_run(path)
    if hasattr(attack, "apply_trigger"):
        assert torch.equal(rebuilt.apply_trigger(source.x[:4]), attack.apply_trigger(source.x[:4]))
    train, test = load_dataset(str(path), "train"), load_dataset(str(path), "test")
    assert torch.equal(train.x, poisoned.x) and torch.equal(test.x, load_dataset("digits", "test").x)
    with pytest.raises(InputError, match="never overwritten"):
        write_poisoned_run(path, poisoned, {"name": "digits"}, attack)
    with pytest.raises(InputError, match="split seed 0"):
        load_dataset(str(path), "val", seed=1)
