"""The rl task's settings, declared once: the flags of ``robustlab rl <verb>`` (and their YAML, the run's
config.yaml) come from these models. One model per concern: the agent (environment, algorithm), where
an attacked policy comes from, the per-step attack, its radii, training and the defence, the
reproduction."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from ...runs.schema import check_eps_list
from ...settings import StrictSettings
from .agents import ALGOS
from .attacks import ATTACKS, TIMED_OBJECTIVES
from .envs import ENVS

Env = Literal[tuple(ENVS)]          # type: ignore[valid-type]
Algo = Literal[ALGOS]               # type: ignore[valid-type]
AttackName = Literal[ATTACKS]       # type: ignore[valid-type]


def episodes_field(what: str):
    """``n``: how many seeded episodes (seeds ``--seed``, ``--seed`` + 1, ...) measure `what`."""
    return Field(10, ge=1, description=f"seeded episodes {what}")


class AgentSettings(StrictSettings):
    """Which agent: the Gymnasium environment and the SB3 algorithm."""

    env: Env = Field("CartPole-v1", description="the Gymnasium environment")
    algo: Algo = Field("ppo", description="the SB3 algorithm of the agent")


class VictimSettings(StrictSettings):
    """Where the attacked policy comes from."""

    agent: str = Field("pretrained", description="pretrained, an SB3 .zip or a .safetensors agent")
    activation: Optional[Literal["tanh", "relu"]] = Field(
        None, description="of an SB3 zip's MLP (default: the algorithm's)")


class AttackSettings(StrictSettings):
    """The per-step attack's options (each attack reads the ones it has)."""

    n: int = episodes_field("per eps and attack")
    steps: int = Field(10, ge=1, description="PGD steps per observation")
    threshold: Optional[float] = Field(None, ge=0, le=1, description="timed attack: attack when max pi - min pi "
                                       "exceeds it (default: the threshold that --attack-fraction sets)")
    attack_fraction: float = Field(0.25, gt=0, le=1, description="timed attack: the threshold is set per agent so "
                                   "that this fraction of the steps of clean rollouts is attacked")
    timed_objective: Literal[TIMED_OBJECTIVES] = Field(  # type: ignore[valid-type]
        "least-preferred", description="timed attack: perturb towards the least-preferred action (Lin et al.) "
                                       "or only change the greedy action (untargeted)")
    max_queries: int = Field(100, ge=1, description="black-box queries per observation",
                             json_schema_extra={"aliases": ["--budget"]})
    target_action: Optional[int] = Field(None, ge=0, description="targeted: the action to force")
    surrogate: Optional[Algo] = Field(None, description="transfer: the surrogate's algorithm, its cached agent "
                                                       "(default: the other algorithm than --algo)")

    def options(self) -> dict:
        """The ``StepAttack`` options (``budget``: its name for the queries per observation)."""
        return dict(steps=self.steps, threshold=self.threshold, attack_fraction=self.attack_fraction,
                    timed_objective=self.timed_objective, budget=self.max_queries, target_action=self.target_action)


class OneAttackSettings(StrictSettings):
    """One attack at one radius."""

    attack: AttackName = Field("pgd", description="the per-step attack")
    eps: float = Field(1.0, ge=0, description="Linf radius in units of each dimension's clean std")


class SweepSettings(StrictSettings):
    """Several attacks at several radii."""

    attacks: list[AttackName] = Field(["pgd"], min_length=1, description="the per-step attacks")
    eps: list[float] = Field([0.0, 0.5, 1.0, 2.0], min_length=1,
                             description="Linf radii in units of each dimension's clean std")

    _eps = field_validator("eps")(check_eps_list)


class TrainingSettings(StrictSettings):
    """Training the agent (SB3, the tuned table's hyper-parameters) and its clean evaluation."""

    steps: Optional[int] = Field(None, ge=1, description="environment steps (default: the tuned table's)")
    n: int = episodes_field("of the clean evaluation")
    retrain: bool = Field(False, description="ignore cached weights")


class DefenceSettings(StrictSettings):
    """The defence: fine-tuning the cached agent at training radius ``adv_eps`` (0: none), on PGD
    observations, or with SA-PPO's KL regulariser of weight ``sa_kappa`` > 0 (PPO only)."""

    adv_eps: float = Field(0.0, ge=0, description="defence: fine-tune at this eps (0: no defence)")
    adv_steps: int = Field(40_000, ge=1, description="defence: fine-tuning environment steps")
    sa_kappa: float = Field(0.0, ge=0, description="defence: SA-PPO's KL regulariser of this weight at --adv-eps "
                                                   "instead of adversarial observations (PPO only)")
    adv_prob: float = Field(0.5, ge=0, le=1, description="adversarial fine-tuning: fraction of observations attacked")
    adv_pgd_steps: int = Field(5, ge=1, description="defence: PGD steps of the training attack")

    @field_validator("sa_kappa")
    @classmethod
    def _kappa_needs_a_radius(cls, kappa: float, info: ValidationInfo) -> float:
        if kappa > 0 and info.data.get("adv_eps") == 0:
            raise ValueError("SA-PPO's regulariser needs the radius it regularises: --adv-eps > 0")
        return kappa


class DefendSettings(StrictSettings):
    """``defend``: the base agent it fine-tunes and the evaluation of both against adaptive attacks."""

    base_steps: Optional[int] = Field(None, ge=1, description="environment steps of the base agent "
                                                              "(default: the tuned table's)")
    n: int = episodes_field("per eps and attack of the evaluation")
    steps: int = Field(10, ge=1, description="PGD steps per observation of the evaluation's attacks")
    retrain: bool = Field(False, description="ignore cached weights")


class ReproduceSettings(StrictSettings):
    """``reproduce``: where the table goes and its seeds."""

    out: str = Field("runs/rl-reproduce", description="output folder (refused if it holds results, unless --overwrite)")
    overwrite: bool = Field(False, description="replace the results already in --out")
    quick: bool = Field(False, description="tiny settings (a smoke test, not the table)")
    seed: int = Field(0, description="seed of the evaluation episodes (seeds --seed, --seed + 1, ...)")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="training seeds: the first one's agents make "
                                       "the table, the defence rows are measured across all (default: 0,1,2; "
                                       "--quick: 0)")
