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


# Exact values and edge cases, written to kill the mutants `make mutation` found surviving.

def test_dlr_needs_three_classes_and_keeps_its_sign_on_ties():
    z3 = torch.tensor([[3.0, 1.0, 0.0]])
    # three classes are enough: -(3 - 1) / (3 - 0)
    assert torch.allclose(ob.DLR().loss(z3, torch.tensor([0])), torch.tensor([-2 / 3]))
    with pytest.raises(rl.InputError, match="^DLR needs at least 3 classes; use Margin or CrossEntropy$"):
        ob.DLR().loss(torch.zeros(1, 2), torch.tensor([0]))
    # the top three logits tie and y is not among them: the +1e-12 keeps the loss large and positive
    tie = ob.DLR().loss(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([3]))
    assert tie.item() > 1e11
    assert torch.equal(ob.DLR().success(z3.repeat(2, 1), torch.tensor([0, 1])), torch.tensor([False, True]))


def test_targeted_ce_and_margin_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    t = torch.tensor([1, 1])
    expected = -torch.nn.functional.cross_entropy(z, t, reduction="none")
    assert torch.allclose(ob.TargetedCE().loss(z, t), expected)
    assert torch.allclose(ob.TargetedCE().loss(z, (torch.tensor([0, 0]), t)), expected)
    assert torch.equal(ob.TargetedCE().success(z, t), torch.tensor([False, True]))
    # z_t - max_{i != t} z_i
    assert torch.allclose(ob.TargetedMargin().loss(z, t), torch.tensor([-1.0, 2.0]))
    assert torch.allclose(ob.TargetedMargin().loss(z, (torch.tensor([0, 0]), torch.tensor([2, 0]))),
                          torch.tensor([-2.0, -3.0]))
    with pytest.raises(rl.InputError, match=r"\(labels, target_classes\) or target_classes"):
        ob.TargetedMargin().loss(z, (t, t, t))
    with pytest.raises(rl.InputError, match="^targeted DLR needs at least 4 classes$"):
        ob.TargetedDLR().loss(z, (torch.tensor([0, 0]), t))
    dlr = ob.TargetedDLR(untargeted_success=False)
    z4 = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2)
    y, t4 = torch.tensor([1, 0]), torch.tensor([0, 2])
    assert torch.equal(dlr.success(z4, (y, t4)), torch.tensor([True, False]))  # only reaching t counts
    assert torch.equal(ob.TargetedDLR().success(z4, (y, t4)), torch.tensor([True, False]))  # any misclassification


def test_success_on_decisions_given_as_labels_or_lists():
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(ob.CrossEntropy().success(torch.tensor([0, 2, 2]), labels), torch.tensor([False, True, False]))
    targeted = (labels, torch.tensor([1, 2, 0]))
    for objective in (ob.TargetedCE(), ob.TargetedMargin(), ob.TargetedDLR(untargeted_success=False)):
        assert torch.equal(objective.success(torch.tensor([1, 1, 2]), targeted), torch.tensor([True, False, False]))
        assert torch.equal(objective.success(torch.tensor([1, 1, 2]), [labels, torch.tensor([1, 2, 0])]),
                           torch.tensor([True, False, False]))
        assert torch.equal(objective.success(["cat", "dog", "cat"], (["dog", "dog", "dog"], ["cat", "cat", "dog"])),
                           torch.tensor([True, False, False]))
        assert torch.equal(objective.success(["cat", "dog"], ["cat", "cat"]), torch.tensor([True, False]))
        assert torch.equal(objective.success(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 0])),
                           torch.tensor([True, False, False]))
    assert torch.equal(ob.CrossEntropy().success(["cat", "dog"], (["cat", "cat"], None)), torch.tensor([False, True]))
    assert torch.equal(ob.CrossEntropy().success([0, 1], torch.tensor([0, 0])), torch.tensor([False, True]))
    with pytest.raises(rl.InputError, match="2 decisions for 3 labels"):
        ob.CrossEntropy().success(["cat", "dog"], ["cat", "dog", "cow"])
    with pytest.raises(rl.InputError, match="returns str decisions but the labels are an integer tensor"):
        ob.CrossEntropy().success(["cat", "dog"], torch.tensor([0, 1]))
    with pytest.raises(rl.InputError, match=r"returns int/str decisions .*; pass the labels in the oracle's own "
                                            r"terms \(a list such as \['cat', 'dog', ...\]\) or make the oracle "
                                            r"return integer class indices$"):
        ob.CrossEntropy().success([1, "dog"], torch.tensor([0, 1]))
    assert torch.equal(ob.decisions(torch.tensor([[0.0, 1.0], [2.0, 1.0]])), torch.tensor([1, 0]))
    assert ob.decisions(["a"]) == ["a"]
    assert torch.equal(ob.decisions(torch.tensor([3, 4])), torch.tensor([3, 4]))


def test_divergences_by_hand():
    out, ref = torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    p, q = torch.softmax(ref, 1), torch.softmax(out, 1)
    kl = (p * (p.log() - q.log())).sum(1)  # KL(softmax(reference) || softmax(output))
    assert torch.allclose(ob.kl_divergence(out, ref), kl, atol=1e-6) and kl[1].abs() < 1e-6 and kl[0] > 0.4
    assert torch.allclose(ob.CrossEntropy().divergence(out, ref), kl, atol=1e-6)
    with pytest.raises(NotImplementedError, match="^Margin defines no output divergence, so TRADES is not defined "
                                                  "for it; train with pgd or llr instead$"):
        ob.Margin().divergence(out, ref)
    reg = ob.RegressionError(threshold=1.0)
    a, b = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]), torch.zeros(2, 3)
    assert torch.allclose(reg.divergence(a, b), torch.tensor([10 / 3, 0.0]))
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(reg.divergence(a, b, (b, mask)), torch.tensor([0.5, 0.0]))
    assert torch.allclose(ob.RegressionError(1.0, mask=torch.tensor([0.0, 1.0, 0.0])).divergence(a, b),
                          torch.tensor([9.0, 0.0]))
    assert repr(ob.CrossEntropy()) == "CrossEntropy()"
    assert repr(ob.RegressionError(0.5, "l2")) == "RegressionError(threshold=0.5, error='l2')"


def test_regression_errors_by_hand():
    out = torch.tensor([[1.0, 2.0, 10.0], [0.0, -3.0, 4.0]])
    target = torch.tensor([[1.0, 1.0, float("inf")], [0.0, 0.0, 0.0]])  # masked targets may be inf
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    err = {e: ob.RegressionError(0.0, e).loss(out, (target, mask)) for e in ("l1", "l2", "linf")}
    assert torch.allclose(err["l1"], torch.tensor([0.5, 3.0]))  # a single valid element: its error, not half
    assert torch.allclose(err["l2"], torch.tensor([0.5 ** 0.5, 3.0]))
    assert torch.allclose(err["linf"], torch.tensor([1.0, 3.0]))
    full = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(ob.RegressionError(0.0, "l2").loss(out, full), torch.tensor([(101 / 3) ** 0.5, (25 / 3) ** 0.5]))
    assert torch.allclose(ob.RegressionError(0.0, "linf").loss(out, full), torch.tensor([10.0, 4.0]))
    assert torch.allclose(ob.RegressionError(0.0, "l1", mask=mask[0]).loss(out, full), torch.tensor([0.5, 1.5]))
    # error 0 is finite under L2 (the +1e-12 under the root), and equal to the threshold is not a success
    assert torch.isfinite(ob.RegressionError(0.0, "l2").loss(full, full)).all()
    at = ob.RegressionError(0.5, "l1")
    assert not at.success(out[:1], (target[:1], mask[:1])).item()
    assert torch.allclose(ob.RegressionTarget(1.0, "l1").loss(out, (target, mask)), torch.tensor([0.5, -2.0]))
    assert torch.equal(ob.RegressionTarget(1.0, "l1").success(out, (target, mask)), torch.tensor([True, False]))
    assert not ob.RegressionTarget(0.5, "l1").success(out[:1], (target[:1], mask[:1])).item()
    with pytest.raises(rl.InputError, match=r"unknown error 'l3'; known: l1, l2, linf"):
        ob.RegressionError(1.0, "l3")
    with pytest.raises(rl.InputError, match="too large: the loss error - threshold loses float32 precision"):
        ob.RegressionError(1e6)
    with pytest.raises(rl.InputError, match=r"output's shape \(2, 3\) \(or a \(target, valid_mask\) pair\)"):
        ob.RegressionError(1.0).loss(out, torch.zeros(2, 4))


def test_smooth_l1_error_by_hand():
    out = torch.tensor([[0.5, 3.0, 7.0], [2.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0, float("nan")], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # Huber with beta 1: 0.5 d^2 below 1, |d| - 0.5 above; mean over the valid elements
    expected = torch.tensor([(0.125 + 2.5) / 2, 1.5 / 3])
    s = ob.SmoothL1Error(threshold=1.0)
    assert torch.allclose(s.loss(out, (target, mask)) + 1.0, expected)
    assert torch.equal(s.success(out, (target, mask)), torch.tensor([True, False]))
    assert torch.allclose(ob.SmoothL1Error(0.0, mask=mask[0]).loss(out, torch.zeros(2, 3)), torch.tensor([2.625 / 2, 1.5 / 2]))
    assert torch.allclose(ob.SmoothL1Error(0.0).loss(out, torch.zeros(2, 3)), torch.tensor([(0.125 + 2.5 + 6.5) / 3, 0.5]))
    one = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # a single valid element: its error, not half of it
    assert torch.allclose(ob.SmoothL1Error(0.0).loss(out, (torch.zeros(2, 3), one)), torch.tensor([2.5, 0.0]))
    with pytest.raises(rl.InputError, match=r"output's shape \(2, 3\)"):
        s.loss(out, torch.zeros(3))
