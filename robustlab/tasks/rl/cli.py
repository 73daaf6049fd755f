"""`robustlab rl train | attack | evaluate | reproduce`.

``train`` trains (or reuses the cached) SB3 agent and writes its weights (safetensors + JSON) under the
run's checkpoints/; with ``--adv-eps`` it is the defence (adversarial fine-tuning, or SA-PPO's
regulariser with ``--sa-kappa``). ``attack`` measures
one attack at one eps, ``evaluate`` the return-vs-eps table of several, each in a run directory.
``--agent`` names a policy: ``pretrained`` (the cached agent for --env/--algo), an SB3 ``.zip`` (read
without unpickling) or a ``.safetensors`` agent written by ``robustlab rl train``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from ...argtypes import add_run_args, float_list, name_list

log = logging.getLogger(__name__)

AGENT_FILE = "agent.safetensors"


def _agent_args(p) -> None:
    from .agents import ALGOS
    from .envs import ENVS

    p.add_argument("--env", default="CartPole-v1", choices=list(ENVS), help="the Gymnasium environment")
    p.add_argument("--algo", default="ppo", choices=list(ALGOS), help="the SB3 algorithm of the agent")


def _attack_args(p) -> None:
    p.add_argument("--agent", default="pretrained", help="pretrained, an SB3 .zip or a .safetensors agent")
    p.add_argument("--activation", default=None, choices=["tanh", "relu"], help="of an SB3 zip's MLP (default: the algorithm's)")
    p.add_argument("--n", type=int, default=10, help="seeded episodes per eps and attack")
    p.add_argument("--steps", type=int, default=10, help="PGD steps per observation")
    p.add_argument("--threshold", type=float, default=0.5, help="timed attack: attack when max pi - min pi exceeds it")
    p.add_argument("--budget", type=int, default=100, help="black-box queries per observation")
    p.add_argument("--target-action", type=int, default=None, help="targeted: the action to force")
    p.add_argument("--surrogate", default="dqn", help="transfer: the surrogate's algorithm (its cached agent)")


def add_cli(sub) -> None:
    from .attacks import ATTACKS

    rl = sub.add_parser("rl", help="reinforcement learning: train agents, attack observations, evaluate, reproduce",
                        description="Per-step observation attacks on SB3 PPO/DQN agents in Gymnasium classic control.")
    s = rl.add_subparsers(dest="rl_command", required=True)
    p = s.add_parser("train", help="train (or reuse the cached) agent; --adv-eps: adversarial fine-tuning")
    add_run_args(p, "rl-train")
    _agent_args(p)
    p.add_argument("--steps", type=int, default=None, help="environment steps (default: the tuned table's)")
    p.add_argument("--adv-eps", type=float, default=0.0, help="defence: fine-tune on PGD observations of this eps")
    p.add_argument("--adv-steps", type=int, default=50_000, help="defence: fine-tuning steps")
    p.add_argument("--sa-kappa", type=float, default=0.0,
                   help="defence: SA-PPO's KL regulariser of this weight at --adv-eps instead of adversarial observations")
    p.add_argument("--n", type=int, default=10, help="clean evaluation episodes")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")
    p = s.add_parser("attack", help="one attack at one eps: return over N episodes")
    add_run_args(p, "rl-attack")
    _agent_args(p)
    _attack_args(p)
    p.add_argument("--attack", default="pgd", choices=list(ATTACKS), help="the per-step attack")
    p.add_argument("--eps", type=float, default=1.0, help="Linf radius in units of each dimension's clean std")
    p = s.add_parser("evaluate", help="return against eps for several attacks (table with 95%% confidence intervals)")
    add_run_args(p, "rl-evaluate")
    _agent_args(p)
    _attack_args(p)
    p.add_argument("--attacks", type=name_list, default=["pgd"], help=f"comma list of {', '.join(ATTACKS)}")
    p.add_argument("--eps", type=float_list, default=[0.0, 0.5, 1.0, 2.0],
                   help="comma list of Linf radii in units of each dimension's clean std")
    p = s.add_parser("reproduce", help="the return-vs-eps table of docs/results/rl.md")
    p.add_argument("--out", default="runs/rl-reproduce", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not the table)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes")


def _start(args, kind: str):
    from ...runs.rundir import Run

    run = Run(Path(args.runs) / args.name)  # inside run_cli()'s Run.writing
    run.write_config({"kind": kind, "task": "rl", **vars(args)})
    return run


def cmd_train(args) -> int:
    from ...fileio import atomic_write_bytes
    from .agents import AgentSetup, agent_path, pretrained_agent
    from .evaluate import evaluate_cell

    setup = AgentSetup(env=args.env, algo=args.algo, steps=args.steps, seed=args.seed, adv_eps=args.adv_eps,
                       adv_steps=args.adv_steps if args.adv_eps > 0 else 0, sa_kappa=args.sa_kappa)
    run = _start(args, "rl-agent")
    agent = pretrained_agent(setup, retrain=args.retrain)
    src = agent_path(setup)
    atomic_write_bytes(run.checkpoints / AGENT_FILE, src.read_bytes())
    atomic_write_bytes((run.checkpoints / AGENT_FILE).with_suffix(".json"), src.with_suffix(".json").read_bytes())
    clean = evaluate_cell(agent, "none", 0.0, args.n, seed=args.seed, name=args.algo)
    run.write_summary({"setup": asdict(setup), "scale": agent.scale.tolist(), "clean": clean.row()})
    log.info("%s on %s: clean return %.1f ± %.1f over %d episodes; wrote %s", args.algo.upper(), args.env,
             clean.mean, clean.ci, args.n, run.path)
    return 0


def _victim_and_options(args):
    from .agents import load_agent

    victim = load_agent(args.agent, args.env, args.algo, args.activation)
    options = dict(steps=args.steps, threshold=args.threshold, budget=args.budget, target_action=args.target_action)
    return victim, options


def _surrogate(args, attack: str):
    from .agents import load_agent

    return {"surrogate": load_agent("pretrained", args.env, args.surrogate)} if attack == "transfer" else {}


def cmd_attack(args) -> int:
    from .evaluate import evaluate_cell

    victim, options = _victim_and_options(args)
    run = _start(args, "rl-attack")
    cell = evaluate_cell(victim, args.attack, args.eps, args.n, args.seed, args.algo, **options,
                         **_surrogate(args, args.attack))
    run.write_summary({"cell": cell.row(), "scale": victim.scale.tolist()})
    log.info("%s eps=%g: return %.1f ± %.1f, %.0f%% of steps attacked, %.0f%% actions changed; wrote %s",
             args.attack, args.eps, cell.mean, cell.ci, 100 * cell.attacked, 100 * cell.changed, run.path)
    return 0


def cmd_evaluate(args) -> int:
    from ...fileio import atomic_write_text
    from .attacks import ATTACKS
    from .evaluate import markdown_table, return_curve
    from ...errors import InputError

    bad = [a for a in args.attacks if a not in ATTACKS]
    if bad:
        raise InputError(f"unknown rl attack {bad[0]!r}; known: {', '.join(ATTACKS)}")
    victim, options = _victim_and_options(args)
    run = _start(args, "rl-evaluate")
    cells = [c for a in args.attacks
             for c in return_curve(victim, a, args.eps, args.n, args.seed, args.algo, **options, **_surrogate(args, a))]
    table = markdown_table(cells)
    atomic_write_text(run.path / "table.md", table + "\n", inside=run.path)
    run.write_summary({"cells": [c.row() for c in cells], "scale": victim.scale.tolist()})
    log.info("\n%s\nwrote %s", table, run.path)
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(Path(args.out), quick=args.quick, seed=args.seed)
    return 0


KINDS = {"train": "rl-agent", "attack": "rl-attack", "evaluate": "rl-evaluate"}


def run_cli(args) -> int:
    """Run one RL verb; those writing a run through ``Run.writing`` (name checked, lock held, links refused)."""
    from ...runs.rundir import Run

    command = {"train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate,
               "reproduce": cmd_reproduce}[args.rl_command]
    if args.rl_command not in KINDS:
        return command(args)
    with Run.writing(args.runs, args.name, KINDS[args.rl_command]):
        return command(args)
