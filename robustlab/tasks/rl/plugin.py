"""The reinforcement-learning task plug-in: what ``robustlab`` needs to know about attacking policies.

The objectives are the shared classification ones, read on the policy's action scores (PPO: action
logits; DQN: Q-values as logits) with the clean greedy action as the label: untargeted success is
"the greedy action changes", targeted success "the action becomes the given one"."""
from __future__ import annotations

from ...objectives import CrossEntropy, Margin, TargetedCE
from ...taskspec import Task
from . import cli


def _metrics(output, target) -> dict:
    labels = target[0] if isinstance(target, (tuple, list)) else target
    return {"action_kept": float((output.argmax(1) == labels).float().mean())}


def _agent(algo):
    def make(**kwargs):
        from .agents import load_agent

        return load_agent(algo=algo, **kwargs)
    return make


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
    threats={"observation": _threat},
    add_cli=cli.add_cli,
    run_cli=cli.run_cli,
)
