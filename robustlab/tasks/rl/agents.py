"""Agents: Stable-Baselines3 PPO and DQN trained once and cached as safetensors (+ JSON), the policy
network read as a classifier over actions, and SB3 ``.zip`` files loaded without unpickling anything.

An SB3 zip holds ``data`` (JSON whose objects, e.g. the spaces and ``policy_kwargs``, are cloudpickled)
and ``policy.pth`` (the policy's state dict, a torch pickle). Loading it through SB3 unpickles ``data``.
:func:`load_sb3_zip` reads only ``policy.pth``, with ``torch.load(weights_only=True)`` (tensors only: a
pickle that builds any other object is refused), and reads ``data`` as JSON only (its cloudpickled
values stay strings) for the activation it names; the network's shape is read off the tensors and its
activation is that one, else the one given, else the algorithm's default (PPO: tanh, DQN: ReLU).
"""
from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn

from ...errors import CheckpointError, InputError, check_eps
from ...weights import cache_dir, cached_weights, check_utf8_path, settings_key
from .envs import check_env, require

log = logging.getLogger(__name__)

ALGOS = ("ppo", "dqn")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
DEFAULT_ACTIVATION = {"ppo": "tanh", "dqn": "relu"}
#: where each algorithm's action head lives in an SB3 policy's state dict (hidden layers, then the head)
PREFIXES = {"ppo": ("mlp_extractor.policy_net.", "action_net."), "dqn": ("q_net.q_net.", None)}

#: SB3 hyperparameters per (environment, algorithm): the RL Baselines3 Zoo's tuned classic-control
#: settings (hyperparams/{ppo,dqn}.yml), shortened where a CPU minute allows; ``steps`` are environment
#: steps. ``keep_best``: evaluate the greedy policy every that many steps on KEEP_BEST_EPISODES episodes
#: (seeds apart from the evaluation's) and keep the best weights, as the Zoo keeps its best model
#: (DQN on CartPole can collapse late: its last weights at 50 000 steps returned 18). ``recipe``: bumped
#: when an entry changes, so that agents cached under the old recipe are not reused.
HYPER = {
    ("CartPole-v1", "ppo"): dict(steps=60_000, n_envs=8, kwargs=dict(
        n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3)),
    ("CartPole-v1", "dqn"): dict(steps=50_000, n_envs=1, kwargs=dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])), keep_best=2_500, recipe=2),
    ("Acrobot-v1", "dqn"): dict(steps=100_000, n_envs=1, kwargs=dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
        target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
        exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256]))),
    ("Acrobot-v1", "ppo"): dict(steps=200_000, n_envs=16, keep_best=20_480, recipe=2, kwargs=dict(
        n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0)),
    ("MountainCar-v0", "dqn"): dict(steps=120_000, n_envs=1, kwargs=dict(
        learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1000, gamma=0.98,
        target_update_interval=600, train_freq=16, gradient_steps=8, exploration_fraction=0.2,
        exploration_final_eps=0.07, policy_kwargs=dict(net_arch=[256, 256])), keep_best=10_000, recipe=2),
    ("MountainCar-v0", "ppo"): dict(steps=200_000, n_envs=16, kwargs=dict(
        n_steps=16, gae_lambda=0.98, gamma=0.99, n_epochs=4, ent_coef=0.0)),
}

#: SA-PPO's update: 2 = the regulariser's gradient clipped together with PPO's (1: added after SB3's clip,
#: unclipped). In the cache key and record of every SA-PPO agent, so agents of version 1 are not reused.
SA_PPO_VERSION = 2


class PolicyNet(nn.Module):
    """The policy's action scores for a batch of observations [B, D] -> [B, A]: PPO's action logits,
    DQN's Q-values (read as logits). The greedy action is their argmax."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.net = layers

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(1))


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def algo_of(state: dict) -> str:
    """'ppo' or 'dqn', read off an SB3 policy state dict's keys."""
    for algo, (hidden, _) in PREFIXES.items():
        if any(k.startswith(hidden) for k in state):
            return algo
    raise CheckpointError("not an SB3 MlpPolicy of PPO or DQN (no mlp_extractor.policy_net.* or q_net.q_net.* "
                          f"weights; found {sorted(state)[:4]})")


def policy_from_state(state: dict, activation: str | None = None) -> tuple[PolicyNet, str]:
    """A PolicyNet holding the action head of an SB3 PPO or DQN MlpPolicy state dict (shapes from the tensors)."""
    algo = algo_of(state)
    activation = activation or DEFAULT_ACTIVATION[algo]
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    hidden, head = PREFIXES[algo]
    idx = sorted({int(k[len(hidden):].split(".")[0]) for k in state if k.startswith(hidden)})
    weights = [(state[f"{hidden}{i}.weight"], state[f"{hidden}{i}.bias"]) for i in idx]
    if head is not None:
        weights.append((state[f"{head}weight"], state[f"{head}bias"]))
    sizes = [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]
    net = _mlp(sizes, activation)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, weights):
            if tuple(lin.weight.shape) != tuple(w.shape):
                raise CheckpointError(f"layer shapes {tuple(w.shape)} do not chain in this SB3 policy")
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return PolicyNet(net).eval(), algo


def live_policy(sb3_policy, algo: str) -> PolicyNet:
    """A PolicyNet sharing the modules of a live SB3 policy (training it changes this view)."""
    if algo == "ppo":
        return PolicyNet(nn.Sequential(*sb3_policy.mlp_extractor.policy_net, sb3_policy.action_net))
    return PolicyNet(sb3_policy.q_net.q_net)


@dataclass
class Agent:
    """A policy with what the threat model needs: ``scale`` [D], each observation dimension's std
    under the clean policy (measured on clean rollouts, stored with the agent)."""

    policy: PolicyNet
    algo: str
    env: str
    scale: torch.Tensor
    info: dict = field(default_factory=dict)

    def actions(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.policy(obs).argmax(1)


@dataclass(frozen=True)
class AgentSetup:
    """What determines a cached agent: environment, algorithm, training steps (None: the table's), seed,
    and for a defended agent its fine-tuning from the base agent for ``adv_steps`` steps at training
    radius ``adv_eps`` > 0: adversarial observations (a fraction ``adv_prob`` of them replaced by
    ``adv_pgd_steps``-step PGD points) or, with ``sa_kappa`` > 0 (PPO only), SA-PPO's regulariser of
    weight ``sa_kappa`` with an ``adv_pgd_steps``-step inner maximisation."""

    env: str = "CartPole-v1"
    algo: str = "ppo"
    steps: int | None = None
    seed: int = 0
    adv_eps: float = 0.0
    adv_steps: int = 0
    adv_prob: float = 0.5
    adv_pgd_steps: int = 5
    sa_kappa: float = 0.0

    def __post_init__(self):
        check_env(self.env)
        if self.algo not in ALGOS:
            raise InputError(f"unknown algorithm {self.algo!r}; known: {', '.join(ALGOS)}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.sa_kappa < 0 or (self.sa_kappa > 0 and self.algo != "ppo"):
            raise InputError(f"SA-PPO's sa_kappa must be >= 0 and is for PPO only, got {self.sa_kappa} for {self.algo}")
        self._check_defence()

    def _check_defence(self) -> None:
        """A defence's settings describe one: a radius > 0 with fine-tuning steps, or none at all."""
        check_eps(self.adv_eps)
        if self.sa_kappa > 0 and self.adv_eps == 0:
            raise InputError(f"SA-PPO's sa_kappa {self.sa_kappa:g} needs the radius it regularises: adv_eps > 0")
        if self.adv_eps > 0 and self.adv_steps < 1:
            raise InputError(f"a defence at adv_eps {self.adv_eps:g} needs adv_steps >= 1, got {self.adv_steps}")
        if not 0 <= self.adv_prob <= 1 or self.adv_pgd_steps < 1:
            raise InputError(f"adv_prob must lie in [0, 1] and adv_pgd_steps be >= 1, got {self.adv_prob}, "
                             f"{self.adv_pgd_steps}")

    @property
    def train_steps(self) -> int:
        return self.steps if self.steps is not None else HYPER[(self.env, self.algo)]["steps"]

    @property
    def recipe(self) -> int:
        return HYPER[(self.env, self.algo)].get("recipe", 1)

    def base(self) -> "AgentSetup":
        """The undefended agent this one is fine-tuned from (every defence field at its default)."""
        return replace(self, **{f.name: f.default for f in fields(self) if f.name.startswith(("adv_", "sa_"))})

    def key(self) -> str:
        """The cache key: the settings' hash, with ``-r<recipe>`` once the table's recipe has changed and
        ``-sa<SA_PPO_VERSION>`` for an SA-PPO agent."""
        key = settings_key(self, drop_defaults=("adv_eps", "adv_steps", "adv_prob", "adv_pgd_steps", "sa_kappa"))
        key = key if self.recipe == 1 else f"{key}-r{self.recipe}"
        return f"{key}-sa{SA_PPO_VERSION}" if self.sa_kappa > 0 else key

    def record(self) -> dict:
        """What the cached weights were made from (checked when they are reused; the recipe once bumped)."""
        record = {k: v for k, v in asdict(self).items() if k != "sa_kappa" or v}
        sa_version = {"sa_ppo_version": SA_PPO_VERSION} if self.sa_kappa > 0 else {}
        return {**record, **({"recipe": self.recipe} if self.recipe > 1 else {}), **sa_version}


def new_sb3(setup: AgentSetup, env=None):
    """A fresh SB3 model for `setup` (seeded; on the CPU: these MLPs are faster there)."""
    sb3 = require("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    hyper = HYPER[(setup.env, setup.algo)]
    if env is None:
        env = make_vec_env(setup.env, n_envs=hyper["n_envs"], seed=setup.seed)
    cls = sb3.PPO if setup.algo == "ppo" else sb3.DQN
    if setup.sa_kappa > 0:
        from .defense import sa_ppo_class

        cls = sa_ppo_class()
    return cls("MlpPolicy", env, seed=setup.seed, device="cpu", verbose=0, **hyper["kwargs"])


def agent_path(setup: AgentSetup, cache: str | Path | None = None) -> Path:
    folder = Path(cache) if cache is not None else cache_dir("rl")
    return folder / f"{setup.env}-{setup.algo}-{setup.key()}.safetensors"


def pretrained_agent(setup: AgentSetup = AgentSetup(), cache: str | Path | None = None,
                     retrain: bool = False) -> Agent:
    """The agent for `setup`, trained with SB3 on first use (a defended one: fine-tuned from its base)
    and cached: the whole SB3 policy's tensors as safetensors, the observation scale in the JSON next to it."""
    from .rollout import measure_scale

    model = new_sb3(setup)
    path = agent_path(setup, cache)

    def train(_policy) -> dict:
        if setup.adv_eps > 0:
            from .defense import defended_agent

            base = pretrained_agent(setup.base(), cache)
            info = defended_agent(model, setup, base, agent_path(setup.base(), cache))
            scale = base.scale
        else:
            from .training import learn

            log.info("training %s on %s for %d steps (seed %d); cached at %s", setup.algo.upper(), setup.env,
                     setup.train_steps, setup.seed, path)
            info = learn(model, setup.algo, setup.env, setup.train_steps, HYPER[(setup.env, setup.algo)].get("keep_best"))
            scale = None
        policy, _ = policy_from_state(model.policy.state_dict())
        if scale is None:
            scale = measure_scale(policy, setup.env)
        return {"scale": scale.tolist(), "algo": setup.algo, "env": setup.env, **info}

    cached_weights(model.policy, path, train, setup.record(), retrain)
    info = json.loads(path.with_suffix(".json").read_text())
    policy, algo = policy_from_state(model.policy.state_dict())
    return Agent(policy, algo, setup.env, torch.tensor(info["scale"], dtype=torch.float32), info)


def read_sb3_state(path: str | Path) -> dict:
    """The tensors of an SB3 zip's ``policy.pth``, read with ``weights_only=True``; ``data`` is never read."""
    path = Path(path)
    check_utf8_path(path)
    try:
        with zipfile.ZipFile(path) as z:
            raw = z.read("policy.pth")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not an SB3 zip with a policy.pth ({e})") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors
        raise CheckpointError(f"{path}: policy.pth holds more than tensors and was not loaded "
                              f"(robustlab never unpickles user files): {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: policy.pth is not a state dict of tensors")
    return state


#: the activations an SB3 zip's ``data`` may name: the repr of the class, which SB3 writes as a plain JSON string
ACTIVATION_NAMES = {"<class 'torch.nn.modules.activation.Tanh'>": "tanh",
                    "<class 'torch.nn.modules.activation.ReLU'>": "relu"}


def sb3_zip_activation(path: Path) -> str | None:
    """The activation an SB3 zip's ``data`` names in ``policy_kwargs`` (``data`` read with ``json.loads``
    only: its cloudpickled ``:serialized:`` values stay strings, never unpickled); None when it names none
    (the algorithm's default) or ``data`` is not JSON. An activation robustlab cannot build is refused."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return None
    kwargs = data.get("policy_kwargs") if isinstance(data, dict) else None
    named = kwargs.get("activation_fn") if isinstance(kwargs, dict) else None
    if named is None:
        return None
    if named not in ACTIVATION_NAMES:
        raise CheckpointError(f"{path}'s policy uses {named}; robustlab builds {' or '.join(ACTIVATIONS)} MLPs only")
    return ACTIVATION_NAMES[named]


def check_fits(policy: PolicyNet, env: str, what) -> None:
    """Refuse, in one line, a policy whose input or action count is not the environment's."""
    from .envs import make_env

    environment = make_env(env)
    wanted = (int(torch.tensor(environment.observation_space.shape).prod()), int(environment.action_space.n))
    environment.close()
    linears = [m for m in policy.net if isinstance(m, nn.Linear)]
    got = (linears[0].in_features, linears[-1].out_features)
    if got != wanted:
        raise CheckpointError(f"{what} takes {got[0]} observations and scores {got[1]} actions; {env} gives "
                              f"{wanted[0]} observations and {wanted[1]} actions")


def load_agent(spec: str | Path = "pretrained", env: str = "CartPole-v1", algo: str = "ppo",
               activation: str | None = None, cache: str | Path | None = None) -> Agent:
    """``pretrained`` (the cached agent for env/algo), an SB3 ``.zip`` (any PPO/DQN MlpPolicy, loaded
    safely, its activation the one its ``data`` names, else `activation`, else the algorithm's; its
    observation scale measured on clean rollouts of `env`) or a cached ``.safetensors`` agent."""
    from .rollout import measure_scale

    if str(spec) == "pretrained":
        return pretrained_agent(AgentSetup(env=env, algo=algo), cache)
    path = Path(spec)
    if path.suffix == ".zip":
        named = sb3_zip_activation(path)
        if activation and named and activation != named:
            raise InputError(f"--activation {activation} contradicts {path}, whose policy uses {named}")
        policy, found = policy_from_state(read_sb3_state(path), activation or named)
        check_fits(policy, check_env(env), path)
        return Agent(policy, found, env, measure_scale(policy, env), {"file": str(path)})
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_utf8_path(path)
        side = path.with_suffix(".json")
        if not path.exists() or not side.exists():
            raise CheckpointError(f"no agent at {path} (with its {side.name})")
        info = json.loads(side.read_text())
        policy, found = policy_from_state(load_file(str(path)), activation)
        check_fits(policy, check_env(info.get("env", env)), path)
        return Agent(policy, found, info.get("env", env), torch.tensor(info["scale"]), info)
    raise InputError(f"--agent must be 'pretrained', an SB3 .zip or a cached .safetensors agent, got {spec}")
