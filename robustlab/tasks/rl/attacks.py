"""Per-step observation attacks, each a ``perturb(obs) -> (obs', attacked, ratio)`` for
:func:`~robustlab.tasks.rl.rollout.run_episodes`, built on the shared engine's attacks:

- ``fgsm`` / ``pgd``: on every step (Huang et al. 2017, "Adversarial attacks on neural network
  policies"), white-box on the policy's action scores, untargeted (the greedy action changes) or
  targeted (the action becomes ``target_action``).
- ``worst``: targeted PGD on every step towards the worst action, the one with the lowest score
  (probability or Q-value) at the clean observation (Pattanaik et al. 2018, "Robust deep
  reinforcement learning with adversarial attacks"); success = the agent takes that action.
- ``timed``: the strategically-timed attack (Lin et al. 2017, "Tactics of adversarial attack on deep
  reinforcement learning agents"): it attacks only on steps whose relative action preference
  c(s) = max_a pi(a|s) - min_a pi(a|s) exceeds a threshold beta (pi = softmax of the action scores;
  for DQN of the Q-values, as the paper does at temperature 1), and there crafts a TARGETED
  perturbation towards the least-preferred action argmin_a pi(a|s) (``timed_objective``
  ``least-preferred``, the paper's; ``untargeted``: the greedy action changes). beta is ``threshold``
  when given; else it is set per agent so that a fraction ``attack_fraction`` of the steps of clean
  rollouts (seeds ``SCALE_SEED``.., apart from the evaluation's) exceed it: the quantile of c(s) there,
  so that agents are compared at the same fraction of attacked steps (the paper reports results at
  e.g. 25%). On attacked episodes the fraction differs; it is measured and reported.
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
from .rollout import SCALE_SEED, run_episodes
from .threat import ObservationThreat

ATTACKS = ("none", "fgsm", "pgd", "worst", "timed", "rays", "hopskipjump", "transfer")
WHITE_BOX = ("fgsm", "pgd", "worst", "timed")
TIMED_OBJECTIVES = ("least-preferred", "untargeted")
#: clean episodes whose observations set the timed attack's threshold for an ``attack_fraction``
CALIBRATION_EPISODES = 10


def action_preference(scores: torch.Tensor) -> torch.Tensor:
    """Lin et al.'s c(s) = max_a pi(a|s) - min_a pi(a|s), pi = softmax(scores) [B], in the scores' dtype. The
    timed attack passes float64 scores: a confident policy's c(s) rounds to 1 in float32 already at a logit gap
    of ~17, which would tie all such steps at the threshold."""
    p = scores.softmax(1)
    return p.amax(1) - p.amin(1)


def timed_threshold(victim: Agent, fraction: float, episodes: int = CALIBRATION_EPISODES) -> float:
    """beta such that a fraction `fraction` of the N observations of `episodes` clean greedy episodes (seeds
    ``SCALE_SEED``..) have c(s) > beta: the largest c(s) below the top round(fraction x N) of them (-inf
    when that is all of them: every step is attacked). Ties at beta are not attacked."""
    if not 0 < fraction <= 1:
        raise InputError(f"the timed attack's attack_fraction must lie in (0, 1], got {fraction}")
    clean = run_episodes(victim.policy, victim.env, episodes, SCALE_SEED, keep_observations=True,
                         desc="timed-attack threshold rollouts")
    with torch.no_grad():
        c = action_preference(victim.policy(torch.cat(clean.observations)).double()).sort().values
    top = round(fraction * c.numel())
    return float("-inf") if top >= c.numel() else float(c[c.numel() - top - 1])


@dataclass
class StepAttack:
    """One attack on every observation an episode shows the victim (see the module's list)."""

    victim: Agent
    kind: str
    eps: float
    steps: int = 10
    threshold: float | None = None
    attack_fraction: float = 0.25
    timed_objective: str = "least-preferred"
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
        if self.timed_objective not in TIMED_OBJECTIVES:
            raise InputError(f"unknown timed_objective {self.timed_objective!r}; known: {', '.join(TIMED_OBJECTIVES)}")
        self.threat = ObservationThreat(self.victim.scale, self.eps)
        self.model = self.threat.model(self.victim.policy)
        self.calls = 0
        if self.kind == "timed" and self.threshold is None:
            self.threshold = timed_threshold(self.victim, self.attack_fraction)

    @property
    def targeted(self) -> bool:
        """Towards an action: ``target_action`` when given, else the least-preferred one (``worst``, and
        ``timed`` with its default objective)."""
        least = self.kind == "worst" or (self.kind == "timed" and self.timed_objective == "least-preferred")
        return self.target_action is not None or least

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
            attacked = action_preference(scores.double()) > self.threshold
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
