"""The reinforcement-learning task: objective, per-dimension threat, attacked episodes, safe loading, CLI."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import run_cli

pytest.importorskip("gymnasium", reason="the rl task needs gymnasium and stable-baselines3: pip install -e '.[rl]'")
pytest.importorskip("stable_baselines3", reason="the rl task needs gymnasium and stable-baselines3: pip install -e '.[rl]'")

from robustlab.errors import CheckpointError  # noqa: E402
from robustlab.taskspec import get_task  # noqa: E402
from robustlab.tasks.rl.agents import Agent, PolicyNet, load_agent, policy_from_state  # noqa: E402
from robustlab.tasks.rl.attacks import StepAttack, action_preference  # noqa: E402
from robustlab.tasks.rl.rollout import run_episodes  # noqa: E402
from robustlab.tasks.rl.threat import ObservationThreat  # noqa: E402

SCALE = torch.tensor([0.1, 0.2, 0.02, 0.2])


def controller() -> Agent:
    """A hand-made CartPole policy: push towards the side the pole falls to (score = theta + 0.5 theta_dot)."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0, -10.0, -5.0], [0.0, 0.0, 10.0, 5.0]]))
        lin.bias.zero_()
    return Agent(PolicyNet(nn.Sequential(lin)).eval(), "ppo", "CartPole-v1", SCALE)


def test_objective_success_is_exact_on_hand_made_logits():
    task = get_task("rl")
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 5.0]])
    clean = torch.tensor([0, 0, 2])
    assert task.objective("untargeted").success(logits, clean).tolist() == [False, True, False]
    wanted = torch.tensor([0, 1, 1])
    assert task.objective("targeted").success(logits, (clean, wanted)).tolist() == [True, True, False]
    assert torch.allclose(action_preference(torch.log(torch.tensor([[0.7, 0.2, 0.1]]))), torch.tensor([0.6]))


def test_per_dimension_threat_bound_is_exact():
    threat = ObservationThreat(SCALE, 0.5)
    obs = torch.randn(64, 4) * SCALE
    z = threat.to_z(obs)
    ball = threat.ball()
    z_adv = ball.project(z, z + 10 * torch.randn_like(z))
    adv = threat.perturbed(obs, z, z_adv)
    ratio = ((adv - obs).abs() / SCALE)
    assert float(ratio.max()) <= 0.5 * (1 + 1e-5) and float(ratio.max()) > 0.49   # reaches, never exceeds
    assert torch.allclose((adv - obs).abs().amax(0), 0.5 * SCALE, rtol=1e-4)       # each dimension its own radius
    assert threat.contains(obs, adv).all()
    assert not threat.contains(obs, obs + torch.tensor([0.0, 0.0, 0.011, 0.0])).any()  # 0.011 > 0.5 * 0.02


def test_pgd_episode_stays_in_bound_changes_actions_and_lowers_the_return():
    agent = controller()
    clean = run_episodes(agent.policy, agent.env, 2, seed=0)
    attack = StepAttack(agent, "pgd", 2.0, steps=5)
    attacked = run_episodes(agent.policy, agent.env, 2, seed=0, perturb=attack)
    assert clean.returns.min() == 500.0
    assert attacked.max_ratio <= 2.0 * (1 + 1e-5)
    assert attacked.attacked_fraction == 1.0 and attacked.changed_fraction > 0.3
    assert attacked.returns.max() < 100


def test_timed_attack_attacks_exactly_the_steps_above_the_threshold():
    agent = controller()
    attack = StepAttack(agent, "timed", 1.0, steps=3, threshold=0.8)
    obs = torch.tensor([[0.0, 0.0, 0.001, 0.0], [0.0, 0.0, 0.1, 0.3], [0.0, 0.0, -0.002, 0.001], [0, 0, -0.2, 0.1]])
    _, attacked, ratio = attack(obs)
    expected = action_preference(agent.policy(obs)) > 0.8
    assert attacked.tolist() == expected.tolist() == [False, True, False, True]
    assert (ratio[~attacked] == 0).all()
    eps_run = run_episodes(agent.policy, agent.env, 1, seed=3, perturb=StepAttack(agent, "timed", 1.0, threshold=0.8))
    assert 0 < eps_run.attacked_fraction < 1


def test_black_box_attack_on_actions_only_changes_them():
    agent = controller()
    attack = StepAttack(agent, "rays", 2.0, budget=30)
    obs = torch.tensor([[0.0, 0.0, 0.01, 0.0], [0.0, 0.0, -0.01, 0.02]])
    adv, _, ratio = attack(obs)
    assert (ratio <= 2.0 * (1 + 1e-5)).all()
    assert (agent.actions(adv) != agent.actions(obs)).all()


def _zip(tmp_path, entries: dict) -> str:
    path = tmp_path / "agent.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return str(path)


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['RL_MARKER']}",))


def test_sb3_zip_loads_without_unpickling_and_malicious_pickles_are_refused(tmp_path, monkeypatch):
    from stable_baselines3 import DQN

    marker = tmp_path / "pwned"
    monkeypatch.setenv("RL_MARKER", str(marker))
    dqn = DQN("MlpPolicy", "CartPole-v1", seed=0, device="cpu", policy_kwargs=dict(net_arch=[8]))
    dqn.save(tmp_path / "real.zip")
    real = policy_from_state(dqn.policy.state_dict())[0]
    with zipfile.ZipFile(tmp_path / "real.zip") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    entries["data"] = pickle.dumps(Boom())                        # never read
    agent = load_agent(_zip(tmp_path, entries), env="CartPole-v1")
    x = torch.randn(5, 4)
    assert agent.algo == "dqn" and torch.equal(agent.policy(x), real(x)) and not marker.exists()
    buf = io.BytesIO()
    torch.save({"q_net.q_net.0.weight": Boom()}, buf)              # a pickle that runs code on load
    entries["policy.pth"] = buf.getvalue()
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_agent(_zip(tmp_path, entries), env="CartPole-v1")
    assert not marker.exists()


def test_cli_train_attack_evaluate_and_list(tmp_path, monkeypatch, capsys):
    import json

    from robustlab.cli import main

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    run_cli("rl", "train", "--runs", runs, "--name", "a", "--steps", "256", "--n", "2")  # one real subprocess
    agent = runs / "a" / "checkpoints" / "agent.safetensors"
    assert agent.exists() and agent.with_suffix(".json").exists()
    assert main(["--no-progress", "rl", "attack", "--runs", str(runs), "--name", "b", "--agent", str(agent),
                 "--attack", "fgsm", "--eps", "2", "--n", "2"]) == 0
    cell = json.loads((runs / "b" / "summary.json").read_text())["cell"]
    assert cell["within_bound"] and cell["attacked"] == 1.0 and len(cell["returns"]) == 2
    assert main(["--no-progress", "rl", "evaluate", "--runs", str(runs), "--name", "c", "--agent", str(agent),
                 "--attacks", "pgd,timed", "--eps", "0,1", "--n", "2", "--steps", "2"]) == 0
    assert "| ppo | timed |" in (runs / "c" / "table.md").read_text()
    assert main(["rl", "attack", "--runs", str(runs), "--name", "d", "--agent", str(tmp_path / "nope.pt")]) == 2
    assert "--agent must be" in capsys.readouterr().err
    assert main(["list"]) == 0 and "rl" in capsys.readouterr().out
