"""Training an SB3 agent for the table: ``model.learn`` with, where the recipe asks for it, the Zoo's
"keep the best model" selection: every ``keep_best`` environment steps the greedy policy plays
KEEP_BEST_EPISODES seeded episodes (seeds KEEP_BEST_SEED.., apart from the evaluation's 0..N-1 and the
observation scales'), and the weights with the highest mean return are kept (the earliest on ties)."""
from __future__ import annotations

import copy
import logging

log = logging.getLogger(__name__)

KEEP_BEST_EPISODES = 5
KEEP_BEST_SEED = 20_000


def keep_best_callback(algo: str, env: str, every: int):
    """An SB3 callback that remembers the best greedy policy's state dict (``.best_state``, ``.best``,
    ``.best_step``)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from .agents import live_policy
    from .rollout import run_episodes

    class KeepBest(BaseCallback):
        def __init__(self):
            super().__init__()
            self.best, self.best_state, self.best_step, self.next = float("-inf"), None, 0, every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += every
                policy = live_policy(self.model.policy, algo)
                mean = float(run_episodes(policy, env, KEEP_BEST_EPISODES, KEEP_BEST_SEED,
                                          desc="keep-best episodes").returns.mean())
                log.info("step %d: greedy return %.1f (best so far %.1f)", self.num_timesteps, mean, self.best)
                if mean > self.best:
                    self.best, self.best_state = mean, copy.deepcopy(self.model.policy.state_dict())
                    self.best_step = self.num_timesteps
            return True

    return KeepBest()


def learn(model, algo: str, env: str, steps: int, keep_best: int | None = None, **learn_kwargs) -> dict:
    """``model.learn(steps)``; with ``keep_best`` the best evaluated weights are loaded back at the end.
    Returns what to record with the agent (the selected policy's selection return and its step)."""
    callback = keep_best_callback(algo, env, keep_best) if keep_best else None
    model.learn(steps, callback=callback, **learn_kwargs)
    if callback is None or callback.best_state is None:
        return {}
    model.policy.load_state_dict(callback.best_state)
    log.info("kept the greedy policy of step %d: return %.1f on the selection episodes", callback.best_step,
             callback.best)
    return {"selection_return": callback.best, "selection_step": callback.best_step}
