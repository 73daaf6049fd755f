"""Episodes: N seeded episodes run side by side, each observation attacked as it comes.

The attacker sees the observation the environment returns, perturbs it (``perturb``), and the agent
acts greedily on the perturbed one; the environment then moves on from the true state. The attack is
thus adaptive: it runs inside the episode it changes, never on a replayed clean trajectory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ...progress import progress_bar
from .envs import make_env

#: seeds of the clean rollouts that measure the observation scales (apart from evaluation seeds)
SCALE_SEED = 10_000


@dataclass
class Episodes:
    """Returns [N] and per-step counts over all episodes: steps, steps attacked, steps whose greedy
    action differs from the clean one, the largest perturbation in units of eps*scale (``max_ratio``)."""

    returns: np.ndarray
    steps: int = 0
    attacked: int = 0
    changed: int = 0
    max_ratio: float = 0.0
    observations: list = field(default_factory=list)

    @property
    def attacked_fraction(self) -> float:
        return self.attacked / max(self.steps, 1)

    @property
    def changed_fraction(self) -> float:
        return self.changed / max(self.steps, 1)


#: perturb(obs [B, D]) -> (obs' [B, D], attacked bool[B], ratio [B] of max_d |obs' - obs| / scale_d)
Perturb = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def run_episodes(policy: torch.nn.Module, env_name: str, n: int, seed: int = 0, perturb: Perturb | None = None,
                 keep_observations: bool = False, desc: str = "episodes") -> Episodes:
    """Run episodes seeded ``seed, seed + 1, ..., seed + n - 1`` until each ends (terminated or truncated)."""
    envs = [make_env(env_name) for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    live = list(range(n))
    out = Episodes(returns=np.zeros(n))
    bar = progress_bar(desc=desc, unit="step")
    while live:
        x = torch.as_tensor(np.stack([obs[i] for i in live]), dtype=torch.float32)
        with torch.no_grad():
            clean = policy(x).argmax(1)
        if perturb is not None:
            x_adv, attacked, ratio = perturb(x)
            with torch.no_grad():
                act = policy(x_adv).argmax(1)
            out.attacked += int(attacked.sum())
            out.max_ratio = max(out.max_ratio, float(ratio.max()))
        else:
            act = clean
        out.changed += int((act != clean).sum())
        out.steps += len(live)
        if keep_observations:
            out.observations.append(x)
        still = []
        for j, i in enumerate(live):
            obs[i], r, term, trunc, _ = envs[i].step(int(act[j]))
            out.returns[i] += r
            if not (term or trunc):
                still.append(i)
        live = still
        bar.update(1)
    bar.close()
    for e in envs:
        e.close()
    return out


def measure_scale(policy: torch.nn.Module, env_name: str, n: int = 10) -> torch.Tensor:
    """Each observation dimension's std over ``n`` clean greedy episodes (floored at 1e-6)."""
    eps = run_episodes(policy, env_name, n, seed=SCALE_SEED, keep_observations=True, desc="scale rollouts")
    return torch.cat(eps.observations).std(0).clamp_min(1e-6)


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for fewer than two values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)
