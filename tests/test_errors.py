import warnings

import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import attacks as A


class Softmaxed(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).softmax(1)


class NaNModel(nn.Module):
    def forward(self, x):
        out = x.flatten(1)[:, :10] * 0
        return out / out  # 0/0 = NaN


def test_inputs_outside_bounds(digits_model, digits_test):
    x, y = digits_test
    with pytest.raises(rl.InputError, match=r"outside the bounds \[0.0, 1.0\].*Normalize"):
        A.PGD(rl.ThreatModel("linf", 0.1))(digits_model, x * 2 - 0.5, y)


def test_batch_label_mismatch(digits_model, digits_test):
    x, y = digits_test
    with pytest.raises(rl.InputError, match="batch size mismatch: 200 inputs but 199 targets"):
        A.FGSM(rl.ThreatModel("linf", 0.1))(digits_model, x, y[:-1])
    with pytest.raises(rl.InputError, match="batch size mismatch"):
        rl.evaluate(digits_model, (x, y[:10]), rl.ThreatModel("linf", 0.1))


def test_uint8_inputs_get_a_conversion_hint(digits_model, digits_test):
    x, y = digits_test
    with pytest.raises(rl.InputError, match=r"x.float\(\) / 255"):
        A.FGSM(rl.ThreatModel("linf", 0.1))(digits_model, (x * 255).to(torch.uint8), y)


def test_negative_eps_in_call(digits_model, digits_test):
    x, y = digits_test
    with pytest.raises(rl.InputError, match=">= 0"):
        A.PGD(rl.ThreatModel("linf", 0.1))(digits_model, x, y, eps=-1)


def test_probabilities_warn(digits_model, digits_test):
    x, y = digits_test
    with pytest.warns(UserWarning, match="look like probabilities"):
        A.FGSM(rl.ThreatModel("linf", 0.1))(Softmaxed(digits_model), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.FGSM(rl.ThreatModel("linf", 0.1))(digits_model, x, y)


def test_nan_outputs_are_an_error(digits_test):
    x, y = digits_test
    with pytest.raises(rl.ModelOutputError, match="NaN or inf"):
        A.PGD(rl.ThreatModel("linf", 0.1))(NaNModel(), x, y)


def test_nan_gradients_are_an_error(digits_test):
    x, y = digits_test

    class SqrtAtZero(nn.Module):
        def forward(self, x):
            z = x.flatten(1)[:, :10]
            return torch.sqrt(z * 0) + z  # finite output, infinite gradient at 0

    with pytest.raises(rl.ModelOutputError, match="gradient contains NaN or inf"):
        A.PGD(rl.ThreatModel("linf", 0.1), random_start=False)(SqrtAtZero(), x, y)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(rl.UnknownNameError, match="known datasets: .*mnist"):
        rl.load_dataset("imagenet")
    with pytest.raises(rl.UnknownNameError, match="known models: .*fast_mnist"):
        rl.create_model("resnet9000")
    from robustlab.training import get_method

    with pytest.raises(rl.UnknownNameError, match="known training methods: fgsm_rs, llr, on_manifold, pgd, standard, trades"):
        get_method("trades++")


# --- issue 25: Python API entry checks are one-line errors --------------------------------------------------

def test_an_empty_batch_is_an_input_error(digits_model):
    x, y = torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    with pytest.raises(rl.InputError, match="empty batch") as e:
        A.PGD(rl.ThreatModel("linf", 0.1), steps=2)(digits_model, x, y)
    assert "\n" not in str(e.value)
    with pytest.raises(rl.InputError, match="empty batch"):
        rl.evaluate(digits_model, [(x, y)], rl.ThreatModel("linf", 0.1), "fgsm", progress=False, sanity=None)


class ScalarHead(nn.Module):
    def forward(self, x):
        return x.flatten(1).mean(1)  # [B]: one number per sample, not logits


def test_evaluate_on_a_model_with_a_B_output_is_a_model_output_error(digits_test):
    x, y = digits_test
    with pytest.raises(rl.ModelOutputError, match=r"shape \(4,\).*\[B, C\]") as e:
        rl.evaluate(ScalarHead(), (x[:4], y[:4]), rl.ThreatModel("linf", 0.1), "fgsm", progress=False, sanity=None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_evaluate_refuses_a_bad_batch_size_in_context(digits_model, digits_test, bad):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.1)
    with pytest.raises(rl.InputError, match=f"batch_size must be a positive integer, got {bad}"):
        rl.evaluate(digits_model, (x[:4], y[:4]), threat, "fgsm", progress=False, batch_size=bad)
    with pytest.raises(rl.InputError, match="batch_size must be a positive integer"):
        rl.robustness_curve(digits_model, (x[:4], y[:4]), threat, [0.1], attacks="fgsm", progress=False,
                            batch_size=bad)
