"""Per-step observation attacks, each a ``perturb(obs) -> (obs', attacked, ratio)`` for
:func:`~robustlab.tasks.rl.rollout.run_episodes`, built on the shared engine's attacks:

- ``fgsm`` / ``pgd``: on every step (Huang et al. 2017, "Adversarial attacks on neural network
  policies"), white-box on the policy's action scores, untargeted (the greedy action changes) or
  targeted (the action becomes ``target_action``).
- ``worst``: targeted PGD on every step towards the worst action, the one with the lowest score
  (probability or Q-value) at the clean observation (Pattanaik et al. 2018, "Robust deep
  reinforcement learning with adversarial attacks"); success = the agent takes that action.
- ``timed``: the strategically-timed attack (Lin et al. 2017, "Tactics of adversarial attack on deep
  reinforcement learning agents"): PGD only on steps whose action preference
  c(s) = max_a pi(a|s) - min_a pi(a|s) exceeds ``threshold`` (pi = softmax of the action scores;
  for DQN of the Q-values, as in the paper).
- ``rays`` / ``hopskipjump``: black-box, the policy seen only through its actions (a ``DecisionOracle``),
  at most ``budget`` queries per step and observation.
- ``transfer``: PGD run to the end on a surrogate agent, the point handed to the victim unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...attacks import PGD, create_attack, transfer_attack
from ...errors import InputError
from ...oracles import DecisionOracle
from .agents import Agent
from .threat import ObservationThreat

ATTACKS = ("none", "fgsm", "pgd", "worst", "timed", "rays", "hopskipjump", "transfer")
WHITE_BOX = ("fgsm", "pgd", "worst", "timed")


def action_preference(scores: torch.Tensor) -> torch.Tensor:
    """Lin et al.'s c(s) = max_a pi(a|s) - min_a pi(a|s), pi = softmax(scores) [B]."""
    p = scores.softmax(1)
    return p.amax(1) - p.amin(1)


@dataclass
class StepAttack:
    """One attack on every observation an episode shows the victim (see the module's list)."""

    victim: Agent
    kind: str
    eps: float
    steps: int = 10
    threshold: float = 0.5
    budget: int = 200
    target_action: int | None = None
    surrogate: Agent | None = None
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ATTACKS:
            raise InputError(f"unknown rl attack {self.kind!r}; known: {', '.join(ATTACKS)}")
        if self.kind == "transfer" and self.surrogate is None:
            raise InputError("the transfer attack needs a surrogate agent")
        if self.target_action is not None and self.kind not in WHITE_BOX:
            raise InputError(f"a target action is for the white-box attacks ({', '.join(WHITE_BOX)})")
        self.threat = ObservationThreat(self.victim.scale, self.eps)
        self.model = self.threat.model(self.victim.policy)
        self.calls = 0

    @property
    def targeted(self) -> bool:
        return self.target_action is not None or self.kind == "worst"

    def objective(self):
        from .plugin import TASK

        return TASK.objective("targeted" if self.targeted else "untargeted")

    def _target(self, labels: torch.Tensor, scores: torch.Tensor):
        """The attack's target: the clean action, or (clean action, action to force) when targeted."""
        if not self.targeted:
            return labels
        if self.target_action is None:
            return (labels, scores.argmin(1))
        return (labels, torch.full_like(labels, self.target_action))

    def _engine_attack(self):
        ball = self.threat.ball()
        seed = self.seed + self.calls
        if self.kind == "fgsm":
            return create_attack("fgsm", ball, objective=self.objective(), seed=seed)
        if self.kind in ("pgd", "worst", "timed"):
            return create_attack("pgd", ball, objective=self.objective(), steps=self.steps, seed=seed)
        return create_attack(self.kind, ball, max_queries=self.budget, seed=seed)

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.calls += 1
        attacked = torch.ones(obs.shape[0], dtype=torch.bool)
        if self.kind == "none" or self.eps == 0:
            return obs, attacked & False, torch.zeros(obs.shape[0])
        z = self.threat.to_z(obs)
        with torch.no_grad():
            scores = self.victim.policy(obs)
        if self.kind == "timed":
            attacked = action_preference(scores) > self.threshold
        z_adv = z.clone()
        rows = attacked.nonzero().flatten()
        if rows.numel():
            z_adv[rows] = self._attack_rows(z[rows], scores[rows])
        obs_adv = self.threat.perturbed(obs, z, z_adv)
        return obs_adv, attacked, self.threat.ratio(obs, obs_adv)

    def _attack_rows(self, z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        labels = scores.argmax(1)
        if self.kind == "transfer":
            source = self.threat.model(self.surrogate.policy)
            with torch.no_grad():
                own = source(z).argmax(1)
            crafter = PGD(self.threat.ball(), steps=self.steps, early_stop=False, keep_last=True,
                          seed=self.seed + self.calls)
            return transfer_attack(source, self.model, z, own, self.threat.ball(), attack=crafter).x_adv
        if self.kind in ("rays", "hopskipjump"):
            oracle = DecisionOracle.from_model(self.model, check_determinism=0)
            return self._engine_attack()(oracle, z, labels).x_adv
        return self._engine_attack()(self.model, z, self._target(labels, scores)).x_adv
