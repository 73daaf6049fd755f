"""`robustlab rl reproduce`: the return-vs-eps tables of docs/results/rl.md.

Rows on CartPole-v1: PPO and DQN (cached, trained once) clean and under per-step PGD, the
strategically-timed PGD (with the fraction of steps attacked), RayS on the policy's actions only
(black-box), transfer from the other algorithm's agent; the defences under PGD: PPO adversarially
fine-tuned, PPO fine-tuned as long with nothing perturbed (the control), and PPO fine-tuned with
SA-PPO's regulariser at every (training eps, kappa) tried. On Acrobot-v1 and MountainCar-v0 (3
actions): PPO (Acrobot) and DQN (MountainCar) under PGD and the worst-action targeted PGD; on Acrobot
also the timed PGD and RayS. (With CartPole's 2 actions the worst-action attack is the untargeted one:
the same points, so no row.) eps is in units of each observation dimension's std under the clean policy.

The second table repeats the CartPole PPO rows (the base agent, adversarial fine-tuning, the control and
SA-PPO at each (eps, kappa) of ``seed_sa``) for every training seed of ``seeds`` (``--seeds``), on the
same evaluation episodes (``--seed``): mean and standard deviation across seeds; the first table's
agents are those of the first training seed. ``--quick``: tiny settings for a
smoke test (one seed).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...fileio import atomic_write_json, atomic_write_text, confined, make_dirs
from ...runs.rundir import Run, RunLockedError
from .agents import AgentSetup, pretrained_agent
from .evaluate import markdown_table, return_curve

log = logging.getLogger(__name__)

FULL = dict(n=10, eps=[0.0, 0.5, 1.0, 2.0], bb_eps=[0.0, 2.0], budget=30, steps=10, adv_eps=1.0, adv_steps=40_000,
            sa=[(2.0, 1.0), (2.0, 0.1), (2.0, 0.03), (1.0, 1.0), (1.0, 0.1)], sa_steps=60_000, train_steps=None,
            acrobot_steps=None, acrobot_eps=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0], acrobot_bb_eps=[0.0, 0.25, 0.5],
            mountaincar_steps=None, mountaincar_eps=[0.0, 0.1, 0.25, 0.5, 1.0], seeds=[0, 1, 2],
            seed_sa=[(2.0, 0.1), (1.0, 0.1), (1.0, 1.0)], attack_fraction=0.25)
QUICK = dict(n=2, eps=[0.0, 2.0], bb_eps=[0.0, 2.0], budget=10, steps=3, adv_eps=1.0, adv_steps=512,
             sa=[(2.0, 1.0)], sa_steps=512, train_steps=512, acrobot_steps=512, acrobot_eps=[0.0, 0.25],
             acrobot_bb_eps=[0.0, 0.25], mountaincar_steps=512, mountaincar_eps=[0.0, 0.25], seeds=[0],
             seed_sa=[(2.0, 1.0)], attack_fraction=0.25)


def _ppo_setups(cfg: dict, sa) -> dict:
    """The CartPole PPO rows by name, as ``AgentSetup`` keywords: the base agent and its defences (the
    SA-PPO ones at every (training eps, kappa) in `sa`)."""
    base = dict(algo="ppo", steps=cfg["train_steps"])
    setups = {"PPO": base,
              f"PPO adv. fine-tuned (eps {cfg['adv_eps']:g})": dict(base, adv_eps=cfg["adv_eps"], adv_steps=cfg["adv_steps"]),
              # the control: the same fine-tuning steps with nothing perturbed (adversarial observations with prob. 0)
              f"PPO fine-tuned {cfg['sa_steps']} steps, unperturbed (control)": dict(
                  base, adv_eps=1.0, adv_steps=cfg["sa_steps"], adv_prob=0.0)}
    for eps, kappa in sa:
        setups[f"PPO SA-PPO (eps {eps:g}, kappa {kappa:g})"] = dict(base, adv_eps=eps, adv_steps=cfg["sa_steps"],
                                                                    sa_kappa=kappa)
    return setups


def _agents(cfg: dict, seed: int, cache) -> dict:
    """The table's agents by row name (trained and cached on first use)."""
    def agent(**kw):
        return pretrained_agent(AgentSetup(seed=seed, **kw), cache)

    ppo = {name: agent(**kw) for name, kw in _ppo_setups(cfg, cfg["sa"]).items()}   # every (eps, kappa) tried
    agents = {"PPO": ppo.pop("PPO"), "DQN": agent(algo="dqn", steps=cfg["train_steps"]), **ppo}
    agents["Acrobot PPO"] = agent(env="Acrobot-v1", algo="ppo", steps=cfg["acrobot_steps"])
    agents["MountainCar DQN"] = agent(env="MountainCar-v0", algo="dqn", steps=cfg["mountaincar_steps"])
    return agents


def _plan(cfg: dict, seed: int, cache) -> list[tuple]:
    """(row name, victim, attack, eps list, options) for every row of the table."""
    agents = _agents(cfg, seed, cache)
    steps = dict(steps=cfg["steps"])
    timed = dict(steps, attack_fraction=cfg["attack_fraction"])   # towards the least-preferred action
    rows = []
    for name, other in (("PPO", "DQN"), ("DQN", "PPO")):
        victim = agents[name]
        rows += [(name, victim, "pgd", cfg["eps"], steps),
                 (name, victim, "timed", cfg["eps"], timed),
                 (name, victim, "rays", cfg["bb_eps"], dict(budget=cfg["budget"])),
                 (name, victim, "transfer", cfg["eps"], dict(steps, surrogate=agents[other]))]
    defended = [name for name in agents if name.startswith("PPO ")]
    rows += [(name, agents[name], "pgd", cfg["eps"], steps) for name in defended]
    acrobot, eps = agents["Acrobot PPO"], cfg["acrobot_eps"]   # smaller radii too: it breaks by eps 0.5
    rows += [("Acrobot PPO", acrobot, "pgd", eps, steps), ("Acrobot PPO", acrobot, "worst", eps, steps),
             ("Acrobot PPO", acrobot, "timed", eps, timed),
             ("Acrobot PPO", acrobot, "rays", cfg["acrobot_bb_eps"], dict(budget=cfg["budget"]))]
    car, eps = agents["MountainCar DQN"], cfg["mountaincar_eps"]
    rows += [("MountainCar DQN", car, attack, eps, steps) for attack in ("pgd", "worst")]
    return rows


def seed_study(cfg: dict, seeds, episode_seed: int, cache, done: list) -> dict[int, list]:
    """The CartPole PPO agent and its defences (SA-PPO at each (eps, kappa) of ``seed_sa``) trained with each
    training seed in `seeds`, each under PGD at ``eps`` on the same episodes (seeds `episode_seed`..):
    training seed -> cells. The cells of `done` (the main table's, whose agents use the first seed) are reused."""
    setups = _ppo_setups(cfg, cfg["seed_sa"])
    out = {seeds[0]: [c for c in done if c.agent in setups and c.attack == "pgd"]}
    for seed in seeds[1:]:
        out[seed] = [c for name, kw in setups.items()
                     for c in return_curve(pretrained_agent(AgentSetup(seed=seed, **kw), cache), "pgd", cfg["eps"],
                                           cfg["n"], episode_seed, name, steps=cfg["steps"])]
    return out


def seeds_table(by_seed: dict[int, list]) -> str:
    """Rows (agent, attack), columns eps: the mean over training seeds of each seed's mean return, ± the
    standard deviation across seeds, then each seed's mean in brackets (in the order of the seeds)."""
    seeds = list(by_seed)
    cells = {(c.agent, c.attack, c.eps, s): c.mean for s, cs in by_seed.items() for c in cs}
    eps_list = sorted({k[2] for k in cells})
    head = "| agent | attack | " + " | ".join(f"eps={e:g}" for e in eps_list) + " |"
    lines = [head, "|---|---|" + "---|" * len(eps_list)]
    for agent, attack in dict.fromkeys((k[0], k[1]) for k in cells):
        parts = []
        for e in eps_list:
            means = np.array([cells[(agent, attack, e, s)] for s in seeds if (agent, attack, e, s) in cells])
            spread = means.std(ddof=1) if means.size > 1 else 0.0
            parts.append(f"{means.mean():.1f} ± {spread:.1f} [{' / '.join(f'{m:.0f}' for m in means)}]")
        lines.append(f"| {agent} | {attack} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


RESULTS = ("table.md", "results.json")


@contextlib.contextmanager
def _writing(out: Path, overwrite: bool):
    """Hold `out`'s write lock (a second ``reproduce`` into it fails at once) with every write inside it refusing
    symbolic links; refuse an `out` that already holds results unless `overwrite`."""
    make_dirs(out)
    with contextlib.ExitStack() as held_open:
        try:
            held_open.enter_context(Run(out, create=False).lock())
        except RunLockedError:
            raise InputError(f"{out} is being written by another robustlab process (its .lock is held); wait for "
                             "it to finish, or pass another --out") from None
        held = [name for name in RESULTS if (out / name).exists()]   # checked under the lock: no race
        if held and not overwrite:
            raise InputError(f"{out} already holds reproduction results ({', '.join(held)}); pass another output "
                             "folder (--out), move them, or pass --overwrite")
        held_open.enter_context(confined(out))
        yield


def reproduce(out: Path, quick: bool = False, seed: int = 0, seeds=None, cache=None, overwrite: bool = False) -> str:
    """Measure every row on the episodes seeded `seed`.. with the agents of the first training seed of
    `seeds` (default: the config's), and the defences across all of them; write ``table.md`` and
    ``results.json`` under `out` (refused where they exist, unless `overwrite`), return the tables."""
    out = Path(out)
    with _writing(out, overwrite):
        return _measure(out, QUICK if quick else FULL, seed, seeds, cache)


def _measure(out: Path, cfg: dict, seed: int, seeds, cache) -> str:
    seeds = list(dict.fromkeys(seeds if seeds is not None else cfg["seeds"]))
    start = time.perf_counter()
    cells = []
    for name, victim, attack, eps, options in _plan(cfg, seeds[0], cache):
        cells += return_curve(victim, attack, eps, cfg["n"], seed, name, **options)
    by_seed = seed_study(cfg, seeds, seed, cache, cells)
    table = markdown_table(cells) + f"\n\nAcross training seeds {', '.join(map(str, seeds))}:\n\n" + seeds_table(by_seed)
    seconds = time.perf_counter() - start
    atomic_write_text(out / "table.md", table + "\n", inside=out)
    atomic_write_json(out / "results.json", {"settings": cfg, "seeds": seeds, "seconds": seconds,
                                             "cells": [c.row() for c in cells],
                                             "seed_cells": {str(s): [c.row() for c in cs] for s, cs in by_seed.items()}},
                      inside=out)
    log.info("\n%s\n(%.0f s) wrote %s", table, seconds, out)
    return table
