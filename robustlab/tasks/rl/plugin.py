"""The reinforcement-learning task plug-in: what ``robustlab`` needs to know about attacking policies.

The objectives are the shared classification ones, read on the policy's action scores (PPO: action
logits; DQN: Q-values as logits) with the clean greedy action as the label: untargeted success is
"the greedy action changes", targeted success "the action becomes the given one". Runs' pages
(return-vs-eps curves, the episode strip) are in ``rl.report``."""
from __future__ import annotations

from ...objectives import CrossEntropy, Margin, TargetedCE
from ...taskspec import Task
from . import cli
from .report import report_sections


def _metrics(output, target) -> dict:
    labels = target[0] if isinstance(target, (tuple, list)) else target
    return {"action_kept": float((output.argmax(1) == labels).float().mean())}


def _agent(algo):
    def make(**kwargs):
        from .agents import load_agent

        return load_agent(algo=algo, **kwargs)
    return make


def random_policy_observations(env: str = "CartPole-v1", n: int = 256, seed: int = 0):
    """``n`` observations of seeded episodes under a uniformly random policy (a ``Dataset``: x the observations
    [n, D] as float32, y the actions taken): states to probe a policy on without a trained agent."""
    import numpy as np
    import torch

    from ...data import Dataset
    from .envs import make_env

    environment, rng = make_env(env), np.random.default_rng(seed)
    observations, actions = [], []
    obs, _ = environment.reset(seed=seed)
    while len(observations) < n:
        action = int(rng.integers(environment.action_space.n))
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(action)
        obs, _, terminated, truncated, _ = environment.step(action)
        if terminated or truncated:
            obs, _ = environment.reset(seed=int(rng.integers(2 ** 31)))
    environment.close()
    return Dataset(torch.from_numpy(np.stack(observations)), torch.tensor(actions), f"{env}-random-policy")


def _threat(scale, eps: float = 0.1, **kwargs):
    from .threat import ObservationThreat

    return ObservationThreat(scale, eps)


TASK = Task(
    name="rl",
    description="reinforcement learning: SB3 PPO/DQN on Gymnasium classic control, per-step observation attacks",
    objectives={"untargeted": CrossEntropy, "targeted": TargetedCE, "margin": Margin},
    train_objective="untargeted",
    metrics=_metrics,
    models={"ppo": _agent("ppo"), "dqn": _agent("dqn")},
    datasets={"random-policy-observations": random_policy_observations},
    threats={"observation": _threat},
    report_sections=report_sections,
    add_cli=cli.COMMAND.add_cli,
    run_cli=cli.COMMAND.run_cli,
)
