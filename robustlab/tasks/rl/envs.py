"""The environments: Gymnasium classic control, built lazily (Gymnasium is an optional dependency)."""
from __future__ import annotations

from ...errors import InputError

#: the environments the task knows: id -> one line
ENVS = {
    "CartPole-v1": "balance a pole on a cart (4 observations, 2 actions, return <= 500)",
    "Acrobot-v1": "swing a two-link arm up (6 observations, 3 actions, return >= -500)",
    "MountainCar-v0": "drive an under-powered car up a hill (2 observations, 3 actions, return >= -200)",
}

MISSING = "the rl task needs gymnasium and stable-baselines3: pip install -e '.[rl]'"


def require(module: str = "gymnasium"):
    """Import gymnasium or stable_baselines3, or raise a one-line InputError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(MISSING) from None


def check_env(name: str) -> str:
    if name not in ENVS:
        raise InputError(f"unknown environment {name!r}; known: {', '.join(ENVS)}")
    return name


def make_env(name: str, render_mode: str | None = None):
    """One Gymnasium environment (reset it with a seed before use)."""
    gym = require("gymnasium")
    return gym.make(check_env(name), render_mode=render_mode)
