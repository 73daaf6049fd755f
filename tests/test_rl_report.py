"""The rl task's report pages: return-vs-eps curves with their confidence bands (evaluate, defend) and the
episode strip (attack), on a hand-made CartPole controller (no training) and 1-2 short episodes."""
import importlib.util
import json
import struct

import pytest
import torch

pytest.importorskip("gymnasium", reason="the rl task needs gymnasium and stable-baselines3: pip install -e '.[rl]'")
pytest.importorskip("stable_baselines3", reason="the rl task needs gymnasium and stable-baselines3: pip install -e '.[rl]'")

from robustlab.tasks.rl.evaluate import Cell, markdown_table  # noqa: E402
from robustlab.tasks.rl.report import CHANGED, NO_PYGAME, Trace, curves_figure, pick_steps, strip_figure  # noqa: E402

SCALE = [0.1, 0.2, 0.02, 0.2]
HAS_PYGAME = importlib.util.find_spec("pygame") is not None


def controller_agent(tmp_path):
    """A hand-made CartPole policy written as a .safetensors agent (an SB3 PPO state dict + its JSON):
    push towards the side the pole falls to (hidden unit tanh(theta + 0.5 theta_dot), head -/+ it)."""
    from safetensors.torch import save_file

    state = {"mlp_extractor.policy_net.0.weight": torch.tensor([[0.0, 0.0, 10.0, 5.0]]),
             "mlp_extractor.policy_net.0.bias": torch.zeros(1),
             "action_net.weight": torch.tensor([[-1.0], [1.0]]), "action_net.bias": torch.zeros(2)}
    path = tmp_path / "controller.safetensors"
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps({"scale": SCALE, "env": "CartPole-v1", "algo": "ppo"}))
    return path


def png_width(path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def cell(agent, attack, eps, mean, ci, changed):
    return Cell(agent, attack, eps, mean, ci, 1.0, changed, True, [mean])


def test_curves_draw_one_line_and_band_per_row():
    cells = [cell("ppo", "pgd", 0.0, 500, 0, 0), cell("ppo", "pgd", 1.0, 100, 40, 0.5),
             cell("ppo", "fgsm", 0.0, 500, 0, 0), cell("ppo", "fgsm", 1.0, 300, 20, 0.2)]
    fig = curves_figure(cells)
    ret, changed = fig.axes
    assert [line.get_label() for line in ret.lines] == ["pgd", "fgsm"]
    assert list(ret.lines[0].get_ydata()) == [500, 100] and list(changed.lines[1].get_ydata()) == [0, 20]
    band = ret.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 60 and band.max() == 500                    # mean ± CI: 100 - 40 at eps 1
    assert len(ret.collections) == 2


def test_strip_marks_exactly_the_changed_actions():
    attacked = Trace(actions=[0, 1, 0, 1], clean_actions=[0, 0, 0, 0], ret=4.0)
    clean = Trace(actions=[0, 1, 0, 1, 0, 1], clean_actions=[0, 1, 0, 1, 0, 1], ret=6.0)
    assert attacked.changed == [1, 3] and pick_steps(attacked, 2) == [0, 3]
    assert pick_steps(Trace([0] * 9 + [1] + [0] * 10, [0] * 20, 20.0), 3) == [0, 9, 19]   # 9 replaces 10
    fig = strip_figure("CartPole-v1", 0, [("clean", clean, None), ("pgd", attacked, None)], [0, 1, 2, 3])
    marked = [[ax.spines["top"].get_linewidth() == 3 for ax in fig.axes[4 * r:4 * r + 4]] for r in (0, 1)]
    assert marked == [[False] * 4, [False, True, False, True]]
    assert fig.axes[5].title.get_text() == "step 1: push right\n(clean obs.: push left)"
    assert fig.axes[5].title.get_color() == CHANGED and fig.axes[1].title.get_color() == "black"


def test_cli_attack_and_evaluate_write_their_reports(tmp_path, monkeypatch):
    from robustlab.cli import main

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    agent, runs = controller_agent(tmp_path), tmp_path / "runs"
    assert main(["--no-progress", "rl", "attack", "--runs", str(runs), "--name", "a", "--agent", str(agent),
                 "--attack", "pgd", "--eps", "2", "--n", "1", "--steps", "3"]) == 0
    page = json.loads((runs / "a" / "report.json").read_text())
    strip = runs / "a" / "figures" / "episode_strip.png"
    assert (runs / "a" / "report.html").exists() and strip.exists() and 900 <= png_width(strip) <= 1200
    shown = next(rows for caption, _, rows in page["tables"] if caption == "frames of the episode strip")
    assert len(shown) == 6 and any(r[4] == "yes" for r in shown)
    assert all((r[4] == "yes") == (r[2] != r[3]) for r in shown)       # changed = action taken != on the true obs.
    assert (["frames", NO_PYGAME] in page["sections"]) != HAS_PYGAME
    assert main(["--no-progress", "rl", "evaluate", "--runs", str(runs), "--name", "b", "--agent", str(agent),
                 "--attacks", "pgd", "--eps", "0,2", "--n", "2", "--steps", "2"]) == 0
    page = json.loads((runs / "b" / "report.json").read_text())
    (_, header, rows), = page["tables"]
    table = (runs / "b" / "table.md").read_text()
    assert header == ["agent", "attack", "eps=0", "eps=2"] and f"| {' | '.join(rows[0])} |" in table
    assert page["figures"] == ["figures/return_vs_eps.png"] and (runs / "b" / "figures" / "return_vs_eps.png").exists()
    assert (runs / "b" / "report.html").exists()


def test_report_page_of_an_rl_run_is_the_stored_one(tmp_path):
    from robustlab.runs import Run
    from robustlab.taskspec import get_task
    from robustlab.tasks.rl.report import curves_page

    run = Run(tmp_path / "r")
    cells = [cell("ppo", "pgd", 0.0, 500, 0, 0), cell("ppo", "pgd", 1.0, 100, 40, 0.5)]
    curves_page(run, cells, markdown_table(cells), "rl evaluation r", "a hand-made controller")
    sections, tables, figures = get_task("rl").report_sections(run.path)
    assert sections == [("setup", "a hand-made controller")] and figures == ["figures/return_vs_eps.png"]
    assert tables[0][2] == [["ppo", "pgd", "500.0 ± 0.0", "100.0 ± 40.0"]]
