"""`robustlab rl train | attack | evaluate | defend | reproduce`, declared once (``runs.taskcli``).

``train`` trains (or reuses the cached) SB3 agent and writes its weights (safetensors + JSON) under the
run's checkpoints/; with ``--adv-eps`` it is the defence (adversarial fine-tuning, or SA-PPO's
regulariser with ``--sa-kappa``). ``defend`` writes the defended agent the same way and, in the same
run, evaluates it and its base agent against the adaptive per-step attacks (PGD and the worst-action
attack) at the eps it was trained for. ``attack`` measures one attack at one eps, ``evaluate`` the
return-vs-eps table of several, each in a run directory with its report.html (``rl.report``: the
return-vs-eps curves of evaluate and defend, the episode strip of attack). ``--agent`` names a policy: ``pretrained``
(the cached agent for --env/--algo), an SB3 ``.zip`` (read without unpickling) or a ``.safetensors``
agent written by ``robustlab rl train``. The flags come from the models in ``rl.settings``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from ...errors import InputError
from ...fileio import atomic_write_bytes, atomic_write_text
from ...runs.taskcli import TaskCommand, Verb
from .settings import (AgentSettings, AttackSettings, DefenceSettings, DefendSettings, OneAttackSettings,
                       ReproduceSettings, SweepSettings, TrainingSettings, VictimSettings)

log = logging.getLogger(__name__)

AGENT_FILE = "agent.safetensors"


def _setup(args, steps):
    """The agent's ``AgentSetup``; the defence's fields only with ``--adv-eps`` > 0 (else the undefended
    agent, whatever they say: its cache key is the same)."""
    from .agents import AgentSetup

    agent = AgentSetup(env=args.env, algo=args.algo, steps=steps, seed=args.seed)
    if args.adv_eps == 0:
        return agent
    return AgentSetup(**{**asdict(agent), **args.settings[DefenceSettings].model_dump()})


def _write_agent(run, setup, retrain: bool):
    """The agent for `setup` (cached, or trained now), its weights and JSON copied into the run's checkpoints/."""
    from .agents import agent_path, pretrained_agent

    agent = pretrained_agent(setup, retrain=retrain)
    src = agent_path(setup)
    atomic_write_bytes(run.checkpoints / AGENT_FILE, src.read_bytes())
    atomic_write_bytes((run.checkpoints / AGENT_FILE).with_suffix(".json"), src.with_suffix(".json").read_bytes())
    return agent


def cmd_train(args) -> int:
    from .evaluate import evaluate_cell

    setup = _setup(args, args.steps)
    agent = _write_agent(args.run, setup, args.retrain)
    clean = evaluate_cell(agent, "none", 0.0, args.n, seed=args.seed, name=args.algo)
    args.run.write_summary({"setup": asdict(setup), "scale": agent.scale.tolist(), "clean": clean.row()})
    log.info("%s on %s: clean return %.1f ± %.1f over %d episodes; wrote %s", args.algo.upper(), args.env,
             clean.mean, clean.ci, args.n, args.run.path)
    return 0


def _write_table(run, cells, **summary) -> str:
    from .evaluate import markdown_table

    table = markdown_table(cells)
    atomic_write_text(run.path / "table.md", table + "\n", inside=run.path)
    run.write_summary({"cells": [c.row() for c in cells], **summary})
    return table


def cmd_defend(args) -> int:
    """The defended agent (fine-tuned from its base, cached) and both agents' returns under PGD and the
    worst-action attack at eps 0 and --adv-eps, in one run."""
    from .agents import pretrained_agent
    from .evaluate import return_curve
    from .report import agent_text, curves_page

    if args.adv_eps <= 0:
        raise InputError(f"`robustlab rl defend` needs --adv-eps > 0 (the training radius), got {args.adv_eps:g}")
    setup = _setup(args, args.base_steps)
    defended = _write_agent(args.run, setup, args.retrain)
    base = pretrained_agent(setup.base())
    eps = [0.0, args.adv_eps]
    cells = [c for name, agent in ((f"{args.algo} base", base), (f"{args.algo} defended", defended))
             for attack in ("pgd", "worst")
             for c in return_curve(agent, attack, eps, args.n, args.seed, name, steps=args.steps)]
    table = _write_table(args.run, cells, setup=asdict(setup), scale=defended.scale.tolist(),
                         defence=defended.info.get("defence"))
    curves_page(args.run, cells, table, f"rl defence {args.run.name}",
                agent_text(defended, f"defended (--adv-eps {args.adv_eps:g})", args.n, args.seed))
    log.info("\n%s\nwrote %s", table, args.run.path)
    return 0


def _victim(args):
    from .agents import load_agent

    return load_agent(args.agent, args.env, args.algo, args.activation)


def _surrogate(args, attack: str) -> dict:
    """The transfer attack's surrogate: the cached agent of ``--surrogate`` (default: the other algorithm),
    never the victim itself (that would be a white-box attack reported as a transfer)."""
    from .agents import ALGOS, load_agent

    if attack != "transfer":
        return {}
    algo = args.surrogate or next(a for a in ALGOS if a != args.algo)
    if args.agent == "pretrained" and algo == args.algo:
        raise InputError(f"--surrogate {algo} is the victim itself (the cached {algo} agent); "
                         "transfer from another algorithm")
    return {"surrogate": load_agent("pretrained", args.env, algo)}


def _victim_record(args, victim) -> dict:
    """What the summary says of the attacked agent: --agent, its algorithm and environment as loaded, its scales."""
    return {"victim": {"agent": args.agent, "algo": victim.algo, "env": victim.env}, "scale": victim.scale.tolist()}


def cmd_attack(args) -> int:
    from .attacks import StepAttack
    from .evaluate import evaluate_cell
    from .report import attack_page

    victim = _victim(args)
    options = {**args.settings[AttackSettings].options(), **_surrogate(args, args.attack)}
    cell = evaluate_cell(victim, args.attack, args.eps, args.n, args.seed, victim.algo, **options)
    args.run.write_summary({"cell": cell.row(), **_victim_record(args, victim)})
    perturb = None if args.attack == "none" else StepAttack(victim, args.attack, args.eps, seed=args.seed, **options)
    attack_page(args.run, victim, cell, args.agent, args.seed, perturb)
    log.info("%s eps=%g: return %.1f ± %.1f, %.0f%% of steps attacked, %.0f%% actions changed; wrote %s",
             args.attack, args.eps, cell.mean, cell.ci, 100 * cell.attacked, 100 * cell.changed, args.run.path)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import return_curve
    from .report import agent_text, curves_page

    victim = _victim(args)
    options = args.settings[AttackSettings].options()
    cells = [c for a in args.attacks
             for c in return_curve(victim, a, args.eps, args.n, args.seed, victim.algo, **options,
                                   **_surrogate(args, a))]
    table = _write_table(args.run, cells, **_victim_record(args, victim))
    curves_page(args.run, cells, table, f"rl evaluation {args.run.name}",
                agent_text(victim, args.agent, args.n, args.seed))
    log.info("\n%s\nwrote %s", table, args.run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), quick=args.quick, seed=args.seed, seeds=args.seeds, overwrite=args.overwrite)
    return 0


COMMAND = TaskCommand(
    "rl", "reinforcement learning: train agents, attack observations, defend, evaluate, reproduce",
    "Per-step observation attacks on SB3 PPO/DQN agents in Gymnasium classic control.", (
        Verb("train", "train (or reuse the cached) agent; --adv-eps: adversarial fine-tuning", cmd_train,
             (AgentSettings, TrainingSettings, DefenceSettings), kind="rl-agent"),
        Verb("attack", "one attack at one eps: return over N episodes", cmd_attack,
             (AgentSettings, VictimSettings, AttackSettings, OneAttackSettings), kind="rl-attack"),
        Verb("evaluate", "return against eps for several attacks (table with 95% confidence intervals)",
             cmd_evaluate, (AgentSettings, VictimSettings, AttackSettings, SweepSettings), kind="rl-evaluate"),
        Verb("defend", "a defended agent (adversarial fine-tuning or SA-PPO) and its evaluation against "
             "PGD and the worst-action attack at --adv-eps", cmd_defend,
             (AgentSettings, DefenceSettings, DefendSettings), kind="rl-defend", defaults={"adv_eps": 1.0}),
        Verb("reproduce", "the return-vs-eps table of docs/results/rl.md", cmd_reproduce, (ReproduceSettings,)),
    ))
