"""`robustlab rl reproduce`: the return-vs-eps table of docs/results/rl.md on CartPole-v1.

Rows: PPO and DQN (cached, trained once) clean and under per-step PGD, the strategically-timed PGD
(with the fraction of steps attacked), RayS on the policy's actions only (black-box), transfer from
the other algorithm's agent, and the adversarially fine-tuned PPO under PGD. eps is in units of each
observation dimension's std under the clean policy. ``--quick``: tiny settings for a smoke test.
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
            train_steps=None)
QUICK = dict(n=2, eps=[0.0, 2.0], bb_eps=[0.0, 2.0], budget=10, steps=3, adv_eps=1.0, adv_steps=512,
             train_steps=512)


def _plan(cfg: dict, seed: int, cache) -> list[tuple]:
    """(row name, victim, attack, eps list, options) for every row of the table."""
    ppo = pretrained_agent(AgentSetup(algo="ppo", steps=cfg["train_steps"], seed=seed), cache)
    dqn = pretrained_agent(AgentSetup(algo="dqn", steps=cfg["train_steps"], seed=seed), cache)
    defended = pretrained_agent(AgentSetup(algo="ppo", steps=cfg["train_steps"], seed=seed, adv_eps=cfg["adv_eps"],
                                           adv_steps=cfg["adv_steps"]), cache)
    steps = dict(steps=cfg["steps"])
    rows = []
    for name, victim, other in (("PPO", ppo, dqn), ("DQN", dqn, ppo)):
        rows += [(name, victim, "pgd", cfg["eps"], steps),
                 (name, victim, "timed", cfg["eps"], dict(steps, threshold=0.5)),
                 (name, victim, "rays", cfg["bb_eps"], dict(budget=cfg["budget"])),
                 (name, victim, "transfer", cfg["eps"], dict(steps, surrogate=other))]
    rows.append((f"PPO adv. fine-tuned (eps {cfg['adv_eps']:g})", defended, "pgd", cfg["eps"], steps))
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
