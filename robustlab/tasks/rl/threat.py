"""The observation threat: Linf with a radius per dimension, eps * scale_d, where scale_d is dimension
d's standard deviation under the clean policy (observations have different ranges: a cart's position
in metres, a pole's angular velocity in rad/s).

The shared engine's attacks act in standardised coordinates z = obs / scale, where this set is the
plain Linf ball of radius eps (``ball``): the attacked model is ``ScaledInput(policy)``, z -> policy(z * scale),
and a perturbation found there maps back exactly, |obs' - obs|_d = |z' - z|_d * scale_d <= eps * scale_d.
The observation space's own box is not imposed: the attacker forges the sensor reading (CartPole's
velocities are unbounded). The engine's bounds are the wide box |z| <= Z_BOUND, which the decision
attacks' noise starts and ray searches need to be finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...errors import InputError, check_eps
from ...threat import ThreatModel

#: the engine's box in standardised coordinates (|z| <= Z_BOUND): far beyond any observation a clean
#: episode reaches (tens of stds at most)
Z_BOUND = 1000.0


class ScaledInput(nn.Module):
    """The policy seen in standardised coordinates: z -> policy(z * scale)."""

    def __init__(self, policy: nn.Module, scale: torch.Tensor):
        super().__init__()
        self.policy = policy
        self.register_buffer("scale", scale.detach().float().clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.policy(z * self.scale)


@dataclass(frozen=True)
class ObservationThreat:
    """Linf radius ``eps * scale[d]`` on observation dimension d (``scale`` [D], > 0)."""

    scale: torch.Tensor
    eps: float

    def __post_init__(self):
        object.__setattr__(self, "eps", check_eps(self.eps))
        s = torch.as_tensor(self.scale, dtype=torch.float32).flatten()
        if s.numel() == 0 or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise InputError(f"observation scales must be finite and > 0, got {s.tolist()}")
        object.__setattr__(self, "scale", s)

    def ball(self) -> ThreatModel:
        """The engine's threat model in standardised coordinates."""
        return ThreatModel("linf", self.eps, bounds=(-Z_BOUND, Z_BOUND))

    def to_z(self, obs: torch.Tensor) -> torch.Tensor:
        z = obs / self.scale.to(obs)
        if bool((z.abs() > Z_BOUND).any()):
            raise InputError(f"an observation lies more than {Z_BOUND:g} of its scale from 0: {obs.tolist()}")
        return z

    def perturbed(self, obs: torch.Tensor, z: torch.Tensor, z_adv: torch.Tensor) -> torch.Tensor:
        """The observation an attack's point z_adv stands for: obs + (z_adv - z) * scale."""
        return obs + (z_adv - z) * self.scale.to(obs)

    def model(self, policy: nn.Module) -> ScaledInput:
        return ScaledInput(policy, self.scale)

    def ratio(self, obs: torch.Tensor, obs_adv: torch.Tensor) -> torch.Tensor:
        """Per sample, max_d |obs'_d - obs_d| / scale_d (the perturbation's size in units of eps)."""
        return ((obs_adv - obs).abs() / self.scale.to(obs)).amax(1)

    def contains(self, obs: torch.Tensor, obs_adv: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Per-sample bool: |obs' - obs|_d <= eps * scale_d on every dimension d."""
        return self.ratio(obs, obs_adv) <= self.eps * (1 + tol) + tol

    def describe(self) -> str:
        return f"linf eps={self.eps:g} x per-dimension std {[round(v, 4) for v in self.scale.tolist()]}"
