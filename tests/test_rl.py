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


def test_timed_attack_threshold_is_set_for_a_fraction_of_steps_and_targets_the_least_preferred_action():
    from robustlab.errors import InputError
    from robustlab.tasks.rl.attacks import timed_threshold
    from robustlab.tasks.rl.evaluate import evaluate_cell
    from robustlab.tasks.rl.rollout import SCALE_SEED

    agent = controller()
    clean = run_episodes(agent.policy, agent.env, 2, SCALE_SEED, keep_observations=True)
    c = action_preference(agent.policy(torch.cat(clean.observations)).double())
    beta = timed_threshold(agent, 0.25, episodes=2)
    assert abs(float((c > beta).double().mean()) - 0.25) < 0.01     # a quarter of the clean steps exceed it
    assert timed_threshold(agent, 1.0, episodes=2) == float("-inf")
    with pytest.raises(InputError):
        timed_threshold(agent, 0.0)
    assert not StepAttack(agent, "timed", 1.0, threshold=0.5, timed_objective="untargeted").targeted
    cell = evaluate_cell(agent, "timed", 2.0, 1, seed=0, steps=3, attack_fraction=0.25)   # the default: targeted
    assert cell.threshold == timed_threshold(agent, 0.25)                   # per agent, from clean rollouts
    assert 0 < cell.attacked < 1 and cell.row()["threshold"] == cell.threshold


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
    with pytest.raises(CheckpointError, match="takes 4 observations .* Acrobot-v1 gives 6"):
        load_agent(_zip(tmp_path, entries), env="Acrobot-v1")          # one line, not a shape error deep inside
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
    # defend: the defended agent (fine-tuned from the base trained above) and both under PGD and worst at eps 0, 1
    assert main(["--no-progress", "rl", "defend", "--runs", str(runs), "--name", "e", "--base-steps", "256",
                 "--adv-steps", "64", "--n", "2", "--steps", "2"]) == 0
    defended = runs / "e" / "checkpoints" / "agent.safetensors"
    assert defended.exists() and json.loads(defended.with_suffix(".json").read_text())["defence"] == "adversarial fine-tuning"
    summary = json.loads((runs / "e" / "summary.json").read_text())
    cells = {(c["agent"], c["attack"], c["eps"]) for c in summary["cells"]}
    assert cells == {(a, k, e) for a in ("ppo base", "ppo defended") for k in ("pgd", "worst") for e in (0.0, 1.0)}
    assert summary["setup"]["adv_eps"] == 1.0 and summary["setup"]["steps"] == 256
    assert main(["rl", "defend", "--runs", str(runs), "--name", "f", "--adv-eps", "0"]) == 2
    assert "--adv-eps > 0" in capsys.readouterr().err


def test_cli_flags_come_from_the_settings_models(tmp_path, monkeypatch, capsys):
    from robustlab.cli import main
    from robustlab.tasks.rl import agents, evaluate

    seen, loaded = {}, []
    monkeypatch.setattr(agents, "load_agent", lambda *a, **k: loaded.append(a) or controller())
    monkeypatch.setattr(evaluate, "evaluate_cell", lambda *a, **k: seen.update(k) or evaluate.Cell(
        "ppo", a[1], a[2], 1.0, 0.0, 1.0, 0.0, True, [1.0]))
    assert main(["rl", "attack", "--runs", str(tmp_path), "--attack", "rays", "--max-queries", "7", "--n", "1"]) == 0
    assert seen["budget"] == 7 and seen["steps"] == 10 and seen["target_action"] is None
    assert (tmp_path / "rl-attack" / "config.yaml").exists()
    seen.clear()  # --budget: the older spelling of --max-queries, still accepted
    assert main(["rl", "attack", "--runs", str(tmp_path), "--name", "b", "--attack", "rays", "--budget", "5", "--n", "1"]) == 0
    assert seen["budget"] == 5
    assert main(["rl", "evaluate", "--runs", str(tmp_path), "--attacks", "pgd,nope", "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "--attacks" in err and "--n" in err                        # every problem in one error
    assert main(["rl", "train", "--runs", str(tmp_path), "--sa-kappa", "1"]) == 2
    assert "--adv-eps > 0" in capsys.readouterr().err
    assert main(["rl", "attack", "--runs", str(tmp_path), "--name", "t", "--attack", "transfer"]) == 0
    assert loaded[-1] == ("pretrained", "CartPole-v1", "dqn")         # the surrogate: the other algorithm
    assert main(["rl", "attack", "--runs", str(tmp_path), "--name", "u", "--attack", "transfer", "--surrogate", "ppo"]) == 2
    assert "is the victim itself" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [dict(sa_kappa=1.0), dict(adv_eps=-1.0), dict(adv_eps=1.0, adv_steps=0),
                                 dict(adv_eps=1.0, adv_steps=5, adv_prob=3.0)])
def test_defence_settings_that_describe_no_defence_are_refused(bad):
    from robustlab.errors import InputError
    from robustlab.tasks.rl.agents import AgentSetup

    with pytest.raises(InputError):
        AgentSetup(algo="ppo", **bad)


def test_seeds_table_reports_mean_and_spread_across_training_seeds():
    from robustlab.tasks.rl.evaluate import Cell
    from robustlab.tasks.rl.reproduce import seeds_table

    def cell(eps, mean):
        return Cell("PPO", "pgd", eps, mean, 0.0, 1.0, 0.0, True, [mean])

    table = seeds_table({0: [cell(0.0, 500.0), cell(2.0, 10.0)], 1: [cell(0.0, 500.0), cell(2.0, 30.0)],
                         2: [cell(0.0, 500.0), cell(2.0, 20.0)]})
    assert table.splitlines()[2] == "| PPO | pgd | 500.0 ± 0.0 [500 / 500 / 500] | 20.0 ± 10.0 [10 / 30 / 20] |"


def test_worst_action_and_timed_attacks_force_the_lowest_scoring_action():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0, 10.0, 0.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, -10.0, -5.0]]))
        lin.bias.zero_()
    agent = Agent(PolicyNet(nn.Sequential(lin)).eval(), "ppo", "CartPole-v1", SCALE)
    obs = torch.tensor([[0.0, 0.0, 0.01, 0.0], [0.0, 0.0, -0.01, 0.02], [0.0, 0.0, 0.0, 0.03]])
    worst = agent.policy(obs).argmin(1)
    adv, attacked, ratio = StepAttack(agent, "worst", 3.0, steps=20)(obs)
    assert attacked.all() and (ratio <= 3.0 * (1 + 1e-5)).all()
    assert agent.actions(adv).tolist() == worst.tolist() != agent.actions(obs).tolist()
    timed, attacked, _ = StepAttack(agent, "timed", 3.0, steps=20, threshold=0.0)(obs)   # Lin et al.: towards argmin
    assert attacked.all() and agent.actions(timed).tolist() == worst.tolist()


def test_cache_keys_keep_old_agents_and_bump_the_changed_recipe():
    from robustlab.tasks.rl.agents import AgentSetup

    assert AgentSetup(algo="ppo").key() == "ccfc79d73dc2"                          # unchanged recipe: reused
    assert AgentSetup(algo="ppo", adv_eps=1.0, adv_steps=40_000).key() == "a674f5972719"
    assert AgentSetup(algo="dqn").key().endswith("-r2") and "recipe" in AgentSetup(algo="dqn").record()
    control = AgentSetup(algo="ppo", adv_eps=1.0, adv_steps=60_000, adv_prob=0.0, adv_pgd_steps=3, sa_kappa=0.1)
    assert control.base() == AgentSetup(algo="ppo")                                # fine-tuned from the cached base
    assert AgentSetup(algo="ppo", adv_eps=2.0, adv_steps=10, sa_kappa=1.0).key() not in (
        AgentSetup(algo="ppo", adv_eps=2.0, adv_steps=10).key(),)


def test_sa_regulariser_is_zero_at_eps_0_and_positive_after_the_inner_pgd():
    from robustlab.tasks.rl.defense import sa_regulariser

    torch.manual_seed(0)
    policy = PolicyNet(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
    obs = torch.randn(16, 4) * SCALE
    assert float(sa_regulariser(policy, ObservationThreat(SCALE, 0.0), obs, 1.0, 5, seed=0)) == 0.0
    small = sa_regulariser(policy, ObservationThreat(SCALE, 2.0), obs, 1.0, 1, seed=0)
    reg = sa_regulariser(policy, ObservationThreat(SCALE, 2.0), obs, 1.0, 5, seed=0)
    assert float(reg.detach()) > 0 and float(reg.detach()) >= 0.99 * float(small.detach())  # more steps: larger KL
    assert torch.isclose(sa_regulariser(policy, ObservationThreat(SCALE, 2.0), obs, 3.0, 5, seed=0), 3 * reg)
    reg.backward()
    assert policy.net[0].weight.grad.abs().sum() > 0                               # differentiable in the weights


def test_sa_ppo_adds_its_regulariser_to_sb3_ppo_training():
    from robustlab.tasks.rl.defense import sa_ppo_class

    model = sa_ppo_class()("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                           policy_kwargs=dict(net_arch=[8]))
    model.sa_threat, model.sa_kappa, model.sa_steps = ObservationThreat(SCALE, 2.0), 1.0, 2
    model.learn(128)
    assert len(model.sa_history) == 2 and min(model.sa_history) > 0
    assert "evaluate_actions" not in vars(model.policy)                             # SB3 restored


def test_keep_best_loads_back_the_best_evaluated_policy():
    from stable_baselines3 import PPO

    from robustlab.tasks.rl import training
    from robustlab.tasks.rl.agents import live_policy

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[8]))
    info = training.learn(model, "ppo", "CartPole-v1", 256, keep_best=64)
    assert info["selection_step"] in (64, 128, 192, 256)
    again = run_episodes(live_policy(model.policy, "ppo"), "CartPole-v1", training.KEEP_BEST_EPISODES,
                         training.KEEP_BEST_SEED).returns.mean()
    assert again == info["selection_return"]                     # the weights in the model are the kept ones


def test_sa_ppo_regulariser_reaches_the_weights():
    from robustlab.tasks.rl.defense import sa_ppo_class

    def trained(kappa):
        model = sa_ppo_class()("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0,
                               device="cpu", policy_kwargs=dict(net_arch=[8]))
        model.sa_threat, model.sa_kappa, model.sa_steps = ObservationThreat(SCALE, 2.0), kappa, 2
        model.learn(64)
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()])

    assert not torch.equal(trained(0.0), trained(1.0))               # same seed: only the regulariser differs


def test_sa_ppo_clips_the_sum_of_its_two_gradients():
    from robustlab.tasks.rl.agents import AgentSetup
    from robustlab.tasks.rl.defense import sa_ppo_class

    model = sa_ppo_class()("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                           max_grad_norm=0.01, policy_kwargs=dict(net_arch=[8]))
    model.sa_threat, model.sa_kappa, model.sa_steps = ObservationThreat(SCALE, 2.0), 100.0, 2
    norms = []
    model.policy.optimizer.register_step_pre_hook(lambda opt, a, k: norms.append(float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.policy.parameters() if p.grad is not None])))))
    model.learn(64)
    assert len(norms) == 2 and max(norms) <= 0.01 * (1 + 1e-4)        # PPO's + kappa R's, clipped together
    assert AgentSetup(adv_eps=1.0, adv_steps=10, sa_kappa=0.1).key().endswith("-sa2")   # v1 agents not reused
    assert AgentSetup(adv_eps=1.0, adv_steps=10, sa_kappa=0.1).record()["sa_ppo_version"] == 2


def test_adversarial_observations_replace_only_the_chosen_rows_within_the_bound():
    from robustlab.tasks.rl.defense import perturb_batch

    agent = controller()
    threat = ObservationThreat(SCALE, 2.0)
    obs = np.array([[0.0, 0.0, 0.01, 0.0], [0.0, 0.0, -0.01, 0.02], [0.0, 0.0, 0.02, 0.01]], dtype=np.float32)
    out = perturb_batch(agent.policy, threat, obs, np.array([True, False, True]), steps=5, seed=0)
    assert np.array_equal(out[1], obs[1])                              # not chosen: bit for bit
    chosen = torch.from_numpy(out[[0, 2]])
    assert threat.contains(torch.from_numpy(obs[[0, 2]]), chosen).all()
    assert (agent.actions(chosen) != agent.actions(torch.from_numpy(obs[[0, 2]]))).all()


#: each tuned recipe's hash: editing an entry of agents.HYPER without bumping its ``recipe`` (so that agents
#: cached under the old one would be reused as if trained under the new one) fails here
RECIPES = {("CartPole-v1", "ppo"): (1, "2a94cfb9cadc"), ("CartPole-v1", "dqn"): (2, "d9dda36f90dc"),
           ("Acrobot-v1", "dqn"): (1, "06baf7a655c4"), ("Acrobot-v1", "ppo"): (2, "76437004c45d"),
           ("MountainCar-v0", "dqn"): (2, "4f325182e368"), ("MountainCar-v0", "ppo"): (1, "83f077a57af6")}


def test_a_changed_recipe_bumps_its_number():
    import hashlib
    import json

    from robustlab.tasks.rl.agents import HYPER

    got = {k: (v.get("recipe", 1), hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12])
           for k, v in HYPER.items()}
    changed = [k for k in got if got[k][1] != RECIPES.get(k, (0, ""))[1] and got[k][0] == RECIPES.get(k, (0, ""))[0]]
    assert not changed, f"{changed}: a changed recipe needs a new 'recipe' number (then update RECIPES here)"
    assert got == RECIPES


def test_sb3_zip_activation_is_read_from_its_data_as_json(tmp_path):
    from stable_baselines3 import PPO

    from robustlab.errors import InputError
    from robustlab.tasks.rl.agents import live_policy

    ppo = PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu", policy_kwargs=dict(net_arch=[8], activation_fn=nn.ReLU))
    ppo.save(tmp_path / "relu.zip")
    x = torch.randn(5, 4)
    agent = load_agent(tmp_path / "relu.zip", env="CartPole-v1")        # PPO's default would be tanh
    assert torch.allclose(agent.policy(x), live_policy(ppo.policy, "ppo")(x))
    with pytest.raises(InputError, match="contradicts"):
        load_agent(tmp_path / "relu.zip", env="CartPole-v1", activation="tanh")


def test_mean_ci_and_the_return_table():
    from robustlab.tasks.rl.evaluate import Cell, markdown_table
    from robustlab.tasks.rl.rollout import mean_ci

    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half - 2.4841) < 1e-3                 # t(0.975, 2) * 1 / sqrt(3)
    cells = [Cell("PPO", "timed", 0.0, 500.0, 0.0, 0.0, 0.0, True, []), Cell("PPO", "timed", 2.0, 12.0, 0.7, 1.0, 0.5, True, [])]
    assert markdown_table(cells).splitlines()[2] == "| PPO | timed | 500.0 ± 0.0 | 12.0 ± 0.7 (100% attacked) |"


def test_reproduce_wires_the_table_and_the_seed_study(tmp_path, monkeypatch):
    import json

    from robustlab.tasks.rl import reproduce
    from robustlab.tasks.rl.evaluate import Cell

    trained = []
    monkeypatch.setattr(reproduce, "pretrained_agent", lambda setup, cache: trained.append(setup) or controller())
    monkeypatch.setattr(reproduce, "return_curve", lambda victim, attack, eps, n, seed, name, **o: [
        Cell(name, attack, e, 100.0 * len(trained), 0.0, 1.0, 0.0, True, []) for e in eps])
    reproduce.reproduce(tmp_path, quick=True, seed=5, seeds=[3, 4])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [3, 4] and set(results["seed_cells"]) == {"3", "4"}
    first = {s.seed for s in trained[:-4]}
    assert first == {3} and {s.seed for s in trained[-4:]} == {4}     # the table's agents: the first seed's
    rows = {(c["agent"], c["eps"]) for c in results["seed_cells"]["3"]}
    assert rows == {(c["agent"], c["eps"]) for c in results["seed_cells"]["4"]} and len(rows) == 4 * 2
    assert "Across training seeds 3, 4:" in (tmp_path / "table.md").read_text()
    timed = [o for _, _, attack, _, o in reproduce._plan(reproduce.QUICK, 0, None) if attack == "timed"]
    assert timed and all(o["attack_fraction"] == 0.25 and "threshold" not in o for o in timed)
    from robustlab.errors import InputError
    with pytest.raises(InputError, match="already holds reproduction results"):
        reproduce.reproduce(tmp_path, quick=True, seed=5, seeds=[3])              # never overwritten silently
    reproduce.reproduce(tmp_path, quick=True, seed=5, seeds=[3], overwrite=True)
    assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [3]
    from filelock import FileLock
    with FileLock(str(tmp_path / ".lock")), pytest.raises(InputError, match="being written by another"):
        reproduce.reproduce(tmp_path, quick=True, seeds=[3], overwrite=True)     # another writer holds the lock
