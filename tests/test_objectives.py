import pytest
import torch

import robustlab as rl
from robustlab import objectives as ob


def test_dlr_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    # -(z_y - max_other) / (z_pi1 - z_pi3) = -(3 - 1) / (3 - 0)
    assert torch.allclose(ob.DLR().loss(z, y), torch.tensor([-2 / 3]))
    # shift and scale invariance
    assert torch.allclose(ob.DLR().loss(5 * z + 7, y), torch.tensor([-2 / 3]), atol=1e-6)


def test_targeted_dlr_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2) = -(3 - 0) / (3 - (0 - 1)/2)
    expected = -3.0 / (3.0 + 0.5)
    assert torch.allclose(ob.TargetedDLR().loss(z, (y, t)), torch.tensor([expected]))
    with pytest.raises(rl.InputError, match="labels, target_classes"):
        ob.TargetedDLR().loss(z, t)


def test_margin_sign_matches_success():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    m = ob.Margin()
    assert torch.equal(m.loss(z, y) > 0, m.success(z, y))
    assert torch.equal(ob.TargetedMargin().success(z, torch.tensor([1, 1])), torch.tensor([False, True]))


def test_regression_objective_with_mask():
    out = torch.tensor([[1.0, 2.0, 10.0]])
    target = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    reg = ob.RegressionError(threshold=0.4, error="l1")
    assert torch.allclose(reg.loss(out, (target, mask)) + 0.4, torch.tensor([0.5]))
    assert reg.success(out, (target, mask)).item()
    assert not ob.RegressionError(threshold=0.6).success(out, (target, mask)).item()


def test_label_errors():
    with pytest.raises(rl.InputError, match=r"labels must lie in \[0, 2\]"):
        ob.CrossEntropy().loss(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(rl.UnknownNameError, match="known objectives"):
        ob.get_objective("hinge")
