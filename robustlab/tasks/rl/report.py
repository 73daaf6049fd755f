"""Pages of rl runs, in the shared page style (``runs.write_run_page``): the return-vs-eps curves of
``rl evaluate`` and ``rl defend`` (mean episode return with its 95% confidence band, one line per agent
and attack, beside the fraction of steps whose greedy action the attack changed), and the episode strip
of ``rl attack``.

The strip shows a few frames of ONE seeded episode (the cell's first seed), clean and attacked: the
environment's own ``render_mode="rgb_array"`` frames (Gymnasium classic control draws them with pygame),
each titled with its step and the action taken. An attacked frame whose action differs from the one the
agent takes on the true observation is framed in red. The episodes are first run without rendering
(recording the actions), then replayed from the same seed with the recorded actions, rendering only the
frames shown: the environments are deterministic given the seed and the actions, so the replayed states
are the played ones. Without pygame the panels say so instead of showing a frame.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ...progress import progress_bar  # noqa: E402
from ...runs import run_page_sections, write_run_page  # noqa: E402
from ...runs.report_figures import FONT, save_figure  # noqa: E402
from .envs import make_env  # noqa: E402

log = logging.getLogger(__name__)

#: what each action does, per environment (Gymnasium's documentation)
ACTION_NAMES = {
    "CartPole-v1": ("push left", "push right"),
    "Acrobot-v1": ("torque -1", "torque 0", "torque +1"),
    "MountainCar-v0": ("accelerate left", "no push", "accelerate right"),
}
CHANGED = "#d62728"   # the frame colour of a step whose action the attack changed
CURVES, STRIP = "figures/return_vs_eps.png", "figures/episode_strip.png"
NO_PYGAME = "frames not rendered: Gymnasium's classic-control renderer needs pygame (pip install -e '.[rl]')"


def action_name(env: str, action: int) -> str:
    names = ACTION_NAMES.get(env, ())
    return names[action] if action < len(names) else f"action {action}"


# ----- the return-vs-eps curves (evaluate, defend) ------------------------------------------------
def curves_figure(cells: list, title: str = ""):
    """Left: mean return against eps with its 95% CI band, one line per (agent, attack) row of the
    table; right: the % of steps whose greedy action the attack changed. eps 0 is the clean return."""
    rows: dict[tuple[str, str], list] = {}
    for c in cells:
        rows.setdefault((c.agent, c.attack), []).append(c)
    several_agents = len({agent for agent, _ in rows}) > 1
    with plt.rc_context(FONT):
        fig, (ret, changed) = plt.subplots(1, 2, figsize=(11, 3.8))
        for (agent, attack), line in rows.items():
            line = sorted(line, key=lambda c: c.eps)
            eps = [c.eps for c in line]
            mean, ci = np.array([c.mean for c in line]), np.array([c.ci for c in line])
            label = f"{agent}, {attack}" if several_agents else attack
            drawn = ret.plot(eps, mean, marker="o", label=label)[0]
            ret.fill_between(eps, mean - ci, mean + ci, color=drawn.get_color(), alpha=0.2, lw=0)
            changed.plot(eps, [100 * c.changed for c in line], marker="o", color=drawn.get_color(), label=label)
        ret.set(xlabel="eps (x each dimension's clean std)", ylabel="episode return", title="return (95% CI band)")
        changed.set(xlabel="eps (x each dimension's clean std)", ylabel="steps with a changed action (%)",
                    title="actions changed", ylim=(-3, 103))
        changed.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig


def table_of(markdown: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a markdown table (``evaluate.markdown_table``'s): the page shows table.md's cells."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.strip().splitlines()]
    return lines[0], lines[2:]


def agent_text(agent, name: str, n: int, seed: int) -> str:
    """"pretrained PPO on CartPole-v1; eps in units of ...; 10 episodes, seeds 0..9"."""
    scale = ", ".join(f"{s:.3g}" for s in agent.scale.tolist())
    return (f"{name} {agent.algo.upper()} on {agent.env}; eps is in units of each observation dimension's std "
            f"under the clean policy ({scale}); {n} episode{'s' * (n > 1)} per cell, seeds {seed}..{seed + n - 1}.")


def curves_page(run, cells: list, table_md: str, title: str, setup: str) -> None:
    """report.html (and report.json) of an evaluate or defend run: the setup, the table, the curves."""
    save_figure(curves_figure(cells, title), run.path / CURVES)
    header, rows = table_of(table_md)
    write_run_page(run.path / "report.html", title, [("setup", setup)],
                   [("episode return against eps (mean ± 95% CI)", header, rows)], [CURVES])


# ----- the episode strip (attack) -----------------------------------------------------------------
@dataclass
class Trace:
    """One played episode: per step the action taken and the greedy action on the true observation."""

    actions: list[int]
    clean_actions: list[int]
    ret: float

    @property
    def changed(self) -> list[int]:
        """The steps whose action the attack changed."""
        return [t for t, (a, c) in enumerate(zip(self.actions, self.clean_actions)) if a != c]


def play(agent, seed: int, perturb=None, desc: str = "strip episode") -> Trace:
    """One greedy episode of `agent` from ``reset(seed=seed)``, each observation through `perturb`
    (``rollout.Perturb``) when given, recording the actions."""
    env = make_env(agent.env)
    obs, _ = env.reset(seed=seed)
    trace, done = Trace([], [], 0.0), False
    bar = progress_bar(desc=desc, unit="step")
    while not done:
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None]
        clean = int(agent.actions(x)[0])
        action = clean if perturb is None else int(agent.actions(perturb(x)[0])[0])
        trace.actions.append(action)
        trace.clean_actions.append(clean)
        obs, reward, terminated, truncated, _ = env.step(action)
        trace.ret += float(reward)
        done = terminated or truncated
        bar.update(1)
    bar.close()
    env.close()
    return trace


def render_steps(env_name: str, seed: int, actions: list[int], steps: list[int]) -> dict[int, np.ndarray] | None:
    """The ``rgb_array`` frames at `steps` of the episode replayed from `seed` with `actions`; None
    without pygame (one warning)."""
    import os

    from gymnasium.error import DependencyNotInstalled

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")          # frames are drawn off-screen: no window
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    env, frames = make_env(env_name, render_mode="rgb_array"), {}
    env.reset(seed=seed)
    try:
        for t, action in enumerate(actions[:max(steps, default=-1) + 1]):
            if t in steps:
                frames[t] = np.asarray(env.render())
            env.step(action)
    except DependencyNotInstalled:
        log.warning(NO_PYGAME)
        return None
    finally:
        env.close()
    return frames


def pick_steps(trace: Trace, k: int = 6) -> list[int]:
    """`k` steps spread over the attacked episode; where none of them is a changed one, the first changed
    step replaces the nearest of them."""
    n = len(trace.actions)
    steps = set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist())
    if trace.changed and not steps & set(trace.changed):
        first = trace.changed[0]
        steps.discard(min(steps, key=lambda t: abs(t - first)))
        steps.add(first)
    return sorted(steps)


def _panel(ax, frame, env: str, trace: Trace, t: int, attacked: bool) -> None:
    """One frame titled "step t: action"; a changed action in red, framed, with the clean one named."""
    ax.set_xticks([])
    ax.set_yticks([])
    if t >= len(trace.actions):
        ax.text(0.5, 0.5, "episode over", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(f"step {t}", fontsize=9)
        return
    if frame is not None:
        ax.imshow(frame)
    else:
        ax.text(0.5, 0.5, "no frame\n(pygame missing)", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    action, clean = trace.actions[t], trace.clean_actions[t]
    title = f"step {t}: {action_name(env, action)}"
    if attacked and action != clean:
        title += f"\n(clean obs.: {action_name(env, clean)})"
        for spine in ax.spines.values():
            spine.set(edgecolor=CHANGED, linewidth=3)
    ax.set_title(title, fontsize=9, color=CHANGED if attacked and action != clean else "black")


def strip_figure(env: str, seed: int, rows: list[tuple[str, Trace, dict | None]], steps: list[int]):
    """Rows of frames at `steps` (``rows``: label, trace, frames by step or None); the second row on is
    attacked: its changed actions are framed in red."""
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(len(rows), len(steps), figsize=(11, 2.1 * len(rows) + 0.5), squeeze=False)
        for r, (label, trace, frames) in enumerate(rows):
            for ax, t in zip(axes[r], steps):
                _panel(ax, (frames or {}).get(t), env, trace, t, attacked=r > 0)
            axes[r, 0].set_ylabel(f"{label}\nreturn {trace.ret:g}", fontsize=9)
        fig.suptitle(f"{env}, episode seed {seed}: red = the attack changed the action", fontsize=10)
        fig.tight_layout()
    return fig


def episode_strip(path: Path, agent, attack: str, eps: float, seed: int, perturb=None, k: int = 6) -> dict:
    """Play the seeded episode clean and under `perturb`, draw the strip to `path`; what it shows."""
    clean, attacked = play(agent, seed), play(agent, seed, perturb)
    steps = pick_steps(attacked, k)
    shown = render_steps(agent.env, seed, attacked.actions, steps)
    frames = [shown and render_steps(agent.env, seed, clean.actions, [s for s in steps if s < len(clean.actions)]),
              shown]
    label = f"{attack}, eps {eps:g}"
    save_figure(strip_figure(agent.env, seed, [("clean", clean, frames[0]), (label, attacked, frames[1])], steps),
                path)
    return {"seed": seed, "steps": steps, "clean_return": clean.ret, "attacked_return": attacked.ret,
            "changed_steps": attacked.changed, "rendered": frames[1] is not None,
            "shown": _shown_rows(agent.env, clean, attacked, steps)}


#: the columns of the strip's table (``_shown_rows``)
SHOWN = ["step", "clean episode: action", "attacked episode: action", "attacked episode: action on the true observation",
         "action changed"]


def _shown_rows(env: str, clean: Trace, attacked: Trace, steps: list[int]) -> list[list]:
    """Per shown step: the clean episode's action, the attacked episode's action taken and the one the
    agent takes on that step's true observation, and whether the attack changed it."""
    def name(actions, t):
        return action_name(env, actions[t]) if t < len(actions) else "(episode over)"

    return [[t, name(clean.actions, t), name(attacked.actions, t), name(attacked.clean_actions, t),
             "yes" if t in attacked.changed else ""] for t in steps]


def attack_page(run, agent, cell, name: str, seed: int, perturb=None) -> dict:
    """report.html (and report.json) of an attack run: the cell's numbers and the episode strip."""
    strip = episode_strip(run.path / STRIP, agent, cell.attack, cell.eps, seed, perturb)
    numbers = [["episode return", f"{cell.mean:.1f} ± {cell.ci:.1f}"],
               ["steps attacked", f"{100 * cell.attacked:.0f}%"], ["steps with a changed action", f"{100 * cell.changed:.0f}%"],
               ["within the bound", "yes" if cell.within_bound else "NO"]]
    notes = [("setup", agent_text(agent, name, len(cell.returns), seed)),
             ("episode strip", f"Episode seed {seed} played clean (return {strip['clean_return']:g}) and attacked by "
              f"a fresh {cell.attack} attack (return {strip['attacked_return']:g}; the attack's random starts make "
              f"it one draw of that episode); the attack changed the action on {len(strip['changed_steps'])} of "
              f"its steps.")]
    if not strip["rendered"]:
        notes.append(("frames", NO_PYGAME))
    tables = [(f"{cell.attack} at eps {cell.eps:g} over {len(cell.returns)} episodes", ["", "value"], numbers),
              ("frames of the episode strip", SHOWN, strip["shown"])]
    write_run_page(run.path / "report.html", f"rl attack {run.name}", notes, tables, [STRIP])
    return strip


report_sections = run_page_sections  # what ``robustlab report`` shows of an rl run
