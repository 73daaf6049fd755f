"""`robustlab rl reproduce`: the return-vs-eps table of docs/results/rl.md.

Rows on CartPole-v1: PPO and DQN (cached, trained once) clean and under per-step PGD, the
strategically-timed PGD (with the fraction of steps attacked), RayS on the policy's actions only
(black-box), transfer from the other algorithm's agent; the defences under PGD: PPO adversarially
fine-tuned, PPO fine-tuned as long with nothing perturbed (the control), and PPO fine-tuned with
SA-PPO's regulariser at every (training eps, kappa) tried. On
Acrobot-v1 (3 actions): PPO under PGD, the worst-action targeted PGD, the timed PGD and RayS. (With
CartPole's 2 actions the worst-action attack is the untargeted one: the same points, so no row.) eps is in units of each observation dimension's
std under the clean policy. ``--quick``: tiny settings for a smoke test.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ...fileio import atomic_write_json, atomic_write_text, make_dirs
from .agents import AgentSetup, pretrained_agent
from .evaluate import markdown_table, return_curve

log = logging.getLogger(__name__)

FULL = dict(n=10, eps=[0.0, 0.5, 1.0, 2.0], bb_eps=[0.0, 2.0], budget=30, steps=10, adv_eps=1.0, adv_steps=40_000,
            sa=[(2.0, 1.0), (2.0, 0.1), (2.0, 0.03), (1.0, 1.0), (1.0, 0.1)], sa_steps=60_000, train_steps=None,
            acrobot_steps=None, acrobot_eps=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0], acrobot_bb_eps=[0.0, 0.25, 0.5])
QUICK = dict(n=2, eps=[0.0, 2.0], bb_eps=[0.0, 2.0], budget=10, steps=3, adv_eps=1.0, adv_steps=512,
             sa=[(2.0, 1.0)], sa_steps=512, train_steps=512, acrobot_steps=512, acrobot_eps=[0.0, 0.25],
             acrobot_bb_eps=[0.0, 0.25])


def _agents(cfg: dict, seed: int, cache) -> dict:
    """The table's agents by row name (trained and cached on first use)."""
    def agent(**kw):
        return pretrained_agent(AgentSetup(seed=seed, **kw), cache)

    base = dict(algo="ppo", steps=cfg["train_steps"])
    agents = {"PPO": agent(**base), "DQN": agent(algo="dqn", steps=cfg["train_steps"]),
              f"PPO adv. fine-tuned (eps {cfg['adv_eps']:g})": agent(**base, adv_eps=cfg["adv_eps"],
                                                                     adv_steps=cfg["adv_steps"])}
    # the control: the same fine-tuning steps with nothing perturbed (adversarial observations with prob. 0)
    agents[f"PPO fine-tuned {cfg['sa_steps']} steps, unperturbed (control)"] = agent(
        **base, adv_eps=1.0, adv_steps=cfg["sa_steps"], adv_prob=0.0)
    for eps, kappa in cfg["sa"]:   # every (training eps, kappa) tried, none left out
        agents[f"PPO SA-PPO (eps {eps:g}, kappa {kappa:g})"] = agent(**base, adv_eps=eps, adv_steps=cfg["sa_steps"],
                                                                     sa_kappa=kappa)
    agents["Acrobot PPO"] = agent(env="Acrobot-v1", algo="ppo", steps=cfg["acrobot_steps"])
    return agents


def _plan(cfg: dict, seed: int, cache) -> list[tuple]:
    """(row name, victim, attack, eps list, options) for every row of the table."""
    agents = _agents(cfg, seed, cache)
    steps = dict(steps=cfg["steps"])
    rows = []
    for name, other in (("PPO", "DQN"), ("DQN", "PPO")):
        victim = agents[name]
        rows += [(name, victim, "pgd", cfg["eps"], steps),
                 (name, victim, "timed", cfg["eps"], dict(steps, threshold=0.5)),
                 (name, victim, "rays", cfg["bb_eps"], dict(budget=cfg["budget"])),
                 (name, victim, "transfer", cfg["eps"], dict(steps, surrogate=agents[other]))]
    defended = [name for name in agents if name.startswith("PPO ")]
    rows += [(name, agents[name], "pgd", cfg["eps"], steps) for name in defended]
    acrobot, eps = agents["Acrobot PPO"], cfg["acrobot_eps"]   # smaller radii too: it breaks by eps 0.5
    rows += [("Acrobot PPO", acrobot, "pgd", eps, steps), ("Acrobot PPO", acrobot, "worst", eps, steps),
             ("Acrobot PPO", acrobot, "timed", eps, dict(steps, threshold=0.5)),
             ("Acrobot PPO", acrobot, "rays", cfg["acrobot_bb_eps"], dict(budget=cfg["budget"]))]
    return rows


def reproduce(out: Path, quick: bool = False, seed: int = 0, cache=None) -> str:
    """Measure every row, write ``table.md`` and ``results.json`` under `out`, return the table."""
    cfg = QUICK if quick else FULL
    make_dirs(out)
    start = time.perf_counter()
    cells = []
    for name, victim, attack, eps, options in _plan(cfg, seed, cache):
        cells += return_curve(victim, attack, eps, cfg["n"], seed, name, **options)
    table = markdown_table(cells)
    seconds = time.perf_counter() - start
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_json(out / "results.json", {"settings": cfg, "seconds": seconds, "cells": [c.row() for c in cells]})
    log.info("\n%s\n(%.0f s) wrote %s", table, seconds, out)
    return table
