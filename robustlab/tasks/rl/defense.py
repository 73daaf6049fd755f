"""Defence: adversarial fine-tuning with perturbed observations (Kos & Song 2017; Pattanaik et al.
2018): the agent keeps learning with SB3 while a fraction ``adv_prob`` of the observations it is shown
are replaced by ``adv_pgd_steps``-step PGD points against its current policy, within the same
per-dimension threat (radius ``adv_eps`` x the base agent's observation scales). The environment still
moves from the true state, so the agent learns to act well on what an attacker lets it see."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ...attacks import PGD
from .agents import Agent, AgentSetup, live_policy
from .threat import ObservationThreat

log = logging.getLogger(__name__)


def perturb_batch(policy, threat: ObservationThreat, obs: np.ndarray, chosen: np.ndarray, steps: int,
                  seed: int) -> np.ndarray:
    """obs with the rows in `chosen` replaced by untargeted PGD points against `policy` (the clean greedy
    action as the label), run to the end (no early stop: training sees the strongest point)."""
    rows = np.flatnonzero(chosen)
    if rows.size == 0:
        return obs
    x = torch.as_tensor(obs[rows], dtype=torch.float32)
    z = threat.to_z(x)
    model = threat.model(policy)
    with torch.no_grad():
        labels = model(z).argmax(1)
    attack = PGD(threat.ball(), steps=steps, early_stop=False, seed=seed, verify=False)
    z_adv = attack(model, z, labels).x_adv
    out = obs.copy()
    out[rows] = threat.perturbed(x, z, z_adv).numpy()
    return out


def adversarial_vec_env(venv, policy, threat: ObservationThreat, prob: float, steps: int, seed: int):
    """An SB3 VecEnv wrapper: each observation is attacked with probability `prob` before the agent sees it."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class AdversarialObservations(VecEnvWrapper):
        def __init__(self):
            super().__init__(venv)
            self.rng = np.random.default_rng(seed)
            self.calls = 0

        def _attack(self, obs):
            self.calls += 1
            chosen = self.rng.random(obs.shape[0]) < prob
            return perturb_batch(policy, threat, obs, chosen, steps, seed + self.calls)

        def reset(self):
            return self._attack(self.venv.reset())

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            return self._attack(obs), rewards, dones, infos

    return AdversarialObservations()


def adversarial_finetune(model, setup: AgentSetup, base: Agent, base_path) -> None:
    """Fine-tune `model` (a fresh SB3 model for `setup`) from the base agent's weights (``base_path``)
    for ``setup.adv_steps`` steps on adversarially perturbed observations."""
    from ...weights import load_weights

    load_weights(model.policy, base_path)
    threat = ObservationThreat(base.scale, setup.adv_eps)
    policy = live_policy(model.policy, setup.algo)
    model.set_env(adversarial_vec_env(model.get_env(), policy, threat, setup.adv_prob, setup.adv_pgd_steps,
                                      setup.seed))
    log.info("adversarial fine-tuning of %s on %s: %d steps at eps %g", setup.algo.upper(), setup.env,
             setup.adv_steps, setup.adv_eps)
    model.learn(setup.adv_steps, reset_num_timesteps=False)
