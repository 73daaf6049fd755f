"""Episode return against eps: N seeded episodes per cell, the attack run inside each episode, the mean
return with its Student-t 95% confidence interval, the fraction of steps attacked and of steps whose
greedy action changed, the timed attack's threshold, and the check that every perturbation stayed within
eps x scale."""
from __future__ import annotations

from dataclasses import dataclass

from .agents import Agent
from .attacks import StepAttack
from .rollout import mean_ci, run_episodes


@dataclass
class Cell:
    """One (agent, attack, eps) measurement."""

    agent: str
    attack: str
    eps: float
    mean: float
    ci: float
    attacked: float
    changed: float
    within_bound: bool
    returns: list
    threshold: float | None = None   # the timed attack's beta on c(s) (-inf: every step)

    def row(self) -> dict:
        row = {k: getattr(self, k) for k in ("agent", "attack", "eps", "mean", "ci", "attacked", "changed",
                                             "within_bound", "returns")}
        if self.threshold is not None:   # JSON has no -inf: None says "every step"
            row["threshold"] = self.threshold if self.threshold > float("-inf") else None
        return row


def evaluate_cell(victim: Agent, attack: str, eps: float, n: int, seed: int = 0, name: str = "agent",
                  **attack_options) -> Cell:
    """Run ``n`` episodes (seeds ``seed``..) of `victim` under `attack` at radius `eps` (x the victim's scales)."""
    perturb = None if attack == "none" or eps == 0 else StepAttack(victim, attack, eps, seed=seed, **attack_options)
    eps_run = run_episodes(victim.policy, victim.env, n, seed, perturb, desc=f"{name} {attack} eps={eps:g}")
    mean, ci = mean_ci(eps_run.returns)
    within = eps_run.max_ratio <= eps * (1 + 1e-5) + 1e-6
    threshold = perturb.threshold if perturb is not None and attack == "timed" else None
    return Cell(name, attack, float(eps), mean, ci, eps_run.attacked_fraction, eps_run.changed_fraction, within,
                eps_run.returns.tolist(), threshold)


def return_curve(victim: Agent, attack: str, eps_list, n: int, seed: int = 0, name: str = "agent",
                 **attack_options) -> list[Cell]:
    """One cell per eps (eps = 0: the clean return)."""
    return [evaluate_cell(victim, attack, e, n, seed, name, **attack_options) for e in eps_list]


def markdown_table(cells: list[Cell]) -> str:
    """Rows (agent, attack), columns eps: mean return ± 95% CI, with the attacked fraction where it is not 1."""
    eps_list = sorted({c.eps for c in cells})
    rows: dict[tuple[str, str], dict[float, Cell]] = {}
    for c in cells:
        rows.setdefault((c.agent, c.attack), {})[c.eps] = c
    head = "| agent | attack | " + " | ".join(f"eps={e:g}" for e in eps_list) + " |"
    lines = [head, "|---|---|" + "---|" * len(eps_list)]
    for (agent, attack), by_eps in rows.items():
        parts = []
        for e in eps_list:
            c = by_eps.get(e)
            if c is None:
                parts.append("")
                continue
            text = f"{c.mean:.1f} ± {c.ci:.1f}"
            if c.attack == "timed" and c.eps > 0:   # at eps 0 the attack is not run: no fraction to show
                text += f" ({100 * c.attacked:.0f}% attacked)"
            parts.append(text)
        lines.append(f"| {agent} | {attack} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
