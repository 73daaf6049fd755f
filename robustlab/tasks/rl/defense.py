"""Defences, each a fine-tuning of the cached base agent with SB3 within the same per-dimension threat
(radius ``adv_eps`` x the base agent's observation scales):

- adversarial fine-tuning with perturbed observations (Kos & Song 2017; Pattanaik et al. 2018): a
  fraction ``adv_prob`` of the observations the agent is shown are replaced by ``adv_pgd_steps``-step
  PGD points against its current policy. The environment still moves from the true state, so the
  agent learns to act well on what an attacker lets it see.
- SA-PPO (Zhang et al. 2020, "Robust deep reinforcement learning against adversarial perturbations
  on state observations"): PPO's loss plus kappa * R(theta), the state-adversarial regulariser
  R(theta) = mean_s max_{delta in B(s)} KL(pi_theta(.|s) || pi_theta(.|s + delta)),
  the max taken by a few projected sign-gradient steps from a small random start. That inner problem
  and its KL are exactly TRADES's divergence term (Zhang et al. 2019), so the shared ``trades`` training
  method computes R on the policy's action logits (with a zero task loss); SB3's PPO does the rest."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ...attacks import PGD
from ...objectives import CrossEntropy
from ...training import BatchContext, get_method
from ...training.methods import TradesSettings
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


class PolicyKL(CrossEntropy):
    """The classification objective with a zero loss: TRADES with it is its KL term alone."""

    name = "policy-kl"

    def loss(self, output, target):
        return output.new_zeros(output.shape[0])


def sa_regulariser(policy, threat: ObservationThreat, obs: torch.Tensor, kappa: float, steps: int,
                   seed: int) -> torch.Tensor:
    """kappa * mean_s max_{delta} KL(pi(.|s) || pi(.|s + delta)) over the batch `obs` [B, D], |delta_d| <=
    eps * scale_d, the max by `steps` PGD steps (differentiable in the policy's parameters; 0 at eps 0)."""
    z = threat.to_z(obs)
    model = threat.model(policy)
    with torch.no_grad():
        labels = model(z).argmax(1)
    ctx = BatchContext(threat=threat.ball(), seed=seed, objective=PolicyKL(),
                       settings=TradesSettings(attack_steps=steps, trades_beta=kappa))
    loss, _ = get_method("trades")(model, z, labels, ctx)
    return loss


def sa_ppo_class():
    """SB3's PPO whose loss gains SA-PPO's regulariser (set ``sa_threat``, ``sa_kappa``, ``sa_steps``).

    ``train`` is SB3's own; around it, the policy's ``evaluate_actions`` notes each minibatch's
    observations, and the optimizer's ``zero_grad`` (which SB3 calls between ``evaluate_actions`` and
    PPO's ``loss.backward()``) leaves the gradient of kappa * R(theta) on them in place of zeros. PPO's
    backward adds its own on top, and SB3's ``clip_grad_norm_`` (to ``max_grad_norm``) then clips the
    sum: one clipped gradient of L_PPO + kappa * R, the paper's update (``agents.SA_PPO_VERSION`` 2;
    version 1 added R's gradient after SB3's clip, unclipped). R's mean is logged as
    train/sa_regulariser and kept in ``sa_history``."""
    from stable_baselines3 import PPO

    class SAPPO(PPO):
        sa_threat: ObservationThreat | None = None
        sa_kappa: float = 0.0
        sa_steps: int = 5

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sa_history: list[float] = []   # R's mean over each train() call's minibatches

        def train(self) -> None:
            if self.sa_threat is None or self.sa_kappa == 0:
                return super().train()
            policy, seen, values = self.policy, {}, []

            def evaluate_actions(obs, actions):
                seen["obs"] = obs
                return type(policy).evaluate_actions(policy, obs, actions)

            def zero_grad_then_regulariser(*args, **kwargs):
                type(optimizer).zero_grad(optimizer, *args, **kwargs)
                reg = sa_regulariser(live_policy(policy, "ppo"), self.sa_threat, seen["obs"].float(), self.sa_kappa,
                                     self.sa_steps, seed=self.seed + self._n_updates + len(values))
                reg.backward()   # the inner max takes input gradients only: the weights' grads are R's alone
                values.append(float(reg.detach()) / self.sa_kappa)

            optimizer = policy.optimizer
            policy.evaluate_actions, optimizer.zero_grad = evaluate_actions, zero_grad_then_regulariser
            try:
                super().train()
            finally:
                del policy.evaluate_actions, optimizer.zero_grad
            self.sa_history.append(float(np.mean(values)) if values else 0.0)
            self.logger.record("train/sa_regulariser", self.sa_history[-1])

    return SAPPO


def defended_agent(model, setup: AgentSetup, base: Agent, base_path) -> dict:
    """Fine-tune `model` (a fresh SB3 model for `setup`: an SA-PPO one when ``setup.sa_kappa`` > 0)
    from the base agent's weights (``base_path``) for ``setup.adv_steps`` steps; returns what to record."""
    from ...weights import load_weights

    load_weights(model.policy, base_path)
    threat = ObservationThreat(base.scale, setup.adv_eps)
    if setup.sa_kappa > 0:
        model.sa_threat, model.sa_kappa, model.sa_steps = threat, setup.sa_kappa, setup.adv_pgd_steps
        kind = f"SA-PPO (kappa {setup.sa_kappa:g})"
    else:
        policy = live_policy(model.policy, setup.algo)
        model.set_env(adversarial_vec_env(model.get_env(), policy, threat, setup.adv_prob, setup.adv_pgd_steps,
                                          setup.seed))
        kind = "adversarial fine-tuning"
    log.info("%s of %s on %s: %d steps at eps %g", kind, setup.algo.upper(), setup.env, setup.adv_steps,
             setup.adv_eps)
    model.learn(setup.adv_steps, reset_num_timesteps=False)
    return {"defence": kind}
