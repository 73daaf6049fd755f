"""Attacks run the model in eval mode and give every module its mode back (also through oracles)."""

import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import attacks as A


@pytest.mark.parametrize("make", [lambda t: A.PGD(t, steps=5), lambda t: A.Square(t, max_queries=50)])
def test_attacks_leave_batchnorm_statistics_and_mode_alone(make):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 10))
    model.train()
    model[3].eval()  # a deliberately mixed mode must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    res = make(rl.ThreatModel("linf", 0.1))(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].training and not model[3].training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)  # flags are real, not dropout noise


def test_attacks_on_an_oracle_leave_the_wrapped_model_in_its_mode(digits_model):
    """An oracle made from a model (ScoreOracle/DecisionOracle.from_model) is queried in eval mode too:
    a train-mode BatchNorm model keeps its statistics and its mode."""
    import torch.nn as nn

    from robustlab.oracles import DecisionOracle, ScoreOracle

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).train()
    x = torch.rand(20, 1, 8, 8)
    y = torch.zeros(20, dtype=torch.long)
    before = net[2].running_mean.clone()
    A.Square(rl.ThreatModel("linf", 0.1), max_queries=30)(ScoreOracle.from_model(net), x, y)
    A.RayS(rl.ThreatModel("linf", 0.1), max_queries=30)(DecisionOracle.from_model(net), x, y)
    assert torch.equal(net[2].running_mean, before) and net.training
