"""Progress of the long evaluation loops: one rounded log line per attack of the cascade and per eps
when the stream is not a terminal (under pytest it is not, so tqdm's bars are off)."""
import logging
import re

import torch
import torch.nn as nn

import robustlab as rl
from robustlab.attacks import APGD, Square
from robustlab.evaluation import evaluate, robustness_curve

LONG_FLOAT = re.compile(r"\d\.\d{5,}")  # e.g. 0.9733333333333334


def _linear_problem(n=24):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 3  # four points misclassified: they are never attacked
    return model, x, y


def _suite(threat):
    return [APGD(threat, "ce", steps=5, seed=0), Square(threat, max_queries=30, seed=0)]


def _lines(caplog, word):
    return [r.getMessage() for r in caplog.records if r.name.startswith("robustlab") and word in r.getMessage()]


def test_one_rounded_log_line_per_attack_of_the_cascade(caplog):
    model, x, y = _linear_problem()
    threat = rl.ThreatModel("linf", 0.1)
    with caplog.at_level(logging.INFO, logger="robustlab"):
        rep = evaluate(model, (x, y), threat, _suite(threat), sanity=None, batch_size=500)
    per_attack = _lines(caplog, "points broke")
    assert len(per_attack) == 2
    assert " apgd-ce on 20 points broke " in per_attack[0] and " square on " in per_attack[1]
    # the last line's running robust accuracy is the report's, rounded to 4 decimals
    assert per_attack[-1].split("robust ")[1].split(" ")[0] == f"{rep.robust_accuracy:.4f}"
    broke = [int(re.search(r"broke (\d+)", m).group(1)) for m in per_attack]
    assert broke == [rep.per_attack["apgd-ce"], rep.per_attack["square"]]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("robustlab")]
    assert messages and not [m for m in messages if LONG_FLOAT.search(m)]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustlab"):
        evaluate(model, (x, y), threat, _suite(threat), sanity=None, progress=False)
    assert _lines(caplog, "points broke") == []  # progress off (ranks other than 0): no progress lines


def test_one_log_line_per_eps_of_a_robustness_curve(caplog):
    model, x, y = _linear_problem()
    threat = rl.ThreatModel("linf", 0.1)
    with caplog.at_level(logging.INFO, logger="robustlab"):
        curve = robustness_curve(model, (x, y), threat, [0.2, 0.05], _suite(threat), sanity=None)
    assert _lines(caplog, "robustness curve: eps") == ["robustness curve: eps 0.05 (1 of 2)",
                                                        "robustness curve: eps 0.2 (2 of 2)"]
    # the cascade at each eps attacks only the points still unbroken at the smaller one
    first = _lines(caplog, "points broke")[0]
    assert "apgd-ce on 20 points" in first and len(curve.reports) == 2


# ----- heartbeats on a non-terminal (robustlab.progress) ----------------------------------------------
def test_a_heartbeat_line_comes_while_a_step_runs_and_carries_the_outer_bars(caplog):
    """Under pytest stderr is not a terminal: progress_bar gives heartbeats; a line comes from the timer even
    while no update happens (inside one long attack), with done/total, the postfix, elapsed and ETA."""
    import time

    from robustlab.progress import Heartbeat, progress_bar

    with caplog.at_level(logging.INFO, logger="robustlab"):
        outer = progress_bar(total=4, desc="robustness curve", unit="eps", heartbeat_s=10)
        bar = progress_bar(total=500, desc="evaluate linf eps=0.3", unit="pt", heartbeat_s=0.05)
        assert isinstance(bar, Heartbeat) and bar.disable  # no live display: loops skip display-only work
        outer.update(1)
        bar.update(200)
        bar.set_postfix_str("square on 312 points")
        time.sleep(0.3)
        bar.close()
        outer.close()
        time.sleep(0.1)
    beats = _lines(caplog, "evaluate linf eps=0.3: 200/500 pt (40%), square on 312 points")
    assert beats, [r.getMessage() for r in caplog.records]
    assert all("robustness curve: 1/4 eps (25%)" in b and b.index("robustness curve") < b.index("evaluate linf eps=0.3")
               and "elapsed" in b and "ETA" in b for b in beats)
    n = len(caplog.records)
    time.sleep(0.15)
    assert len(caplog.records) == n, "a closed bar is silent"


def test_progress_bar_is_tqdm_on_a_terminal_and_silent_when_disabled(monkeypatch):
    import sys

    from tqdm.auto import tqdm

    from robustlab.progress import Heartbeat, progress_bar

    assert not isinstance(progress_bar(total=3, disable=True), Heartbeat)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress_bar(total=3, desc="x")
    assert isinstance(bar, tqdm) and not isinstance(bar, Heartbeat)
    bar.close()
    assert list(progress_bar(range(3), disable=True)) == [0, 1, 2]


def test_a_heartbeat_ends_with_its_loop_even_on_an_error_or_when_dropped():
    import gc

    from robustlab.progress import Heartbeat, progress_bar

    try:
        with progress_bar(total=3, desc="raising", heartbeat_s=10) as bar:
            raise ValueError("boom")
    except ValueError:
        pass
    assert bar not in Heartbeat.open_bars()
    dropped = progress_bar(total=3, desc="dropped", heartbeat_s=10)
    assert dropped in Heartbeat.open_bars()
    del dropped
    gc.collect()
    assert all(b.desc != "dropped" for b in Heartbeat.open_bars())


# ----- what the bars carry: points broken so far, running loss and accuracy (issue 26) -----------------
def _postfixes(monkeypatch):
    """Every postfix a heartbeat is given, as (its description, the text)."""
    from robustlab.progress import Heartbeat

    seen: list[tuple[str, str]] = []
    totals = _postfixes.totals = {}  # each bar's total (a known total gives the heartbeat its ETA)
    original = Heartbeat.set_postfix_str

    def record(self, s="", refresh=True):
        seen.append((self.desc, str(s)))
        totals[self.desc] = self.total
        original(self, s, refresh)

    monkeypatch.setattr(Heartbeat, "set_postfix_str", record)
    return seen


def test_the_evaluation_bars_carry_the_points_broken_so_far(monkeypatch):
    model, x, y = _linear_problem()
    threat = rl.ThreatModel("linf", 0.1)
    seen = _postfixes(monkeypatch)
    rep = evaluate(model, (x, y), threat, _suite(threat), sanity=None, batch_size=12)
    cascade = [s for d, s in seen if d.startswith("cascade")]
    # batch 0-12 then 12-24: the count carries over batches and grows by what each attack broke
    broke = [int(re.search(r"(\d+) broken so far", s).group(1)) for s in cascade]
    assert broke == sorted(broke) and broke[0] == 0 and cascade[0].startswith("apgd-ce on ")
    last = [s for d, s in seen if d.startswith("evaluate")][-1]
    n_broken = rep.per_attack["apgd-ce"] + rep.per_attack["square"]
    assert last == f"{n_broken} broken, robust {rep.robust_accuracy:.3f}" and n_broken > 0
    assert _postfixes.totals["evaluate linf eps=0.1"] == 24  # known from the pair without n=: an ETA from the start


def test_the_epoch_bar_shows_loss_and_accuracy_with_one_read_per_heartbeat(monkeypatch):
    """The running loss/accuracy is read at the first step and then at most once per half heartbeat: on the
    accelerator's path (host reads not free) an epoch's syncs do not grow with its steps."""
    from robustlab import runtime
    from robustlab.hostsync import count_host_syncs
    from robustlab.training import TrainConfig, loop

    class UncheckedCE(rl.objectives.CrossEntropy):
        """Cross-entropy without the label-range check (its scalar reads are the objective's, not the bar's)."""

        def loss(self, output, target):
            return nn.functional.cross_entropy(output, target, reduction="none")

        def success(self, output, target):
            return output.argmax(1) != target

    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)
    seen = _postfixes(monkeypatch)
    totals = {}
    for n in (128, 512):  # 2 and 8 steps, well inside one heartbeat interval
        data = rl.load_dataset("digits", "train").take(torch.arange(n))
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        cfg = TrainConfig(optimizer="sgd", epochs=1, batch_size=64, eval_n=64, eval_steps=2, eps=0.1)
        state = loop._start(net, data, cfg, None, UncheckedCE(), None)
        with count_host_syncs() as syncs:
            loop._run_epoch(state, 0, data, None, True)
        totals[n] = syncs.total
    assert totals[128] == totals[512], totals
    epoch = [s for d, s in seen if d.startswith("epoch 1/1")]
    assert len(epoch) == 2 and re.fullmatch(r"loss \d\.\d{3}, acc \d\.\d{3}, lr 0\.001", epoch[0]), epoch


def test_postfix_due_follows_the_bar():
    from robustlab.progress import postfix_due, progress_bar

    beat = progress_bar(total=10, desc="x", heartbeat_s=60)
    assert postfix_due(beat, 0) and not postfix_due(beat, 20)  # once, then not before 30 s
    beat.close()
    quiet = progress_bar(total=10, disable=True)
    assert not postfix_due(quiet, 0)


def test_the_heartbeat_line_shows_the_running_attacks_steps():
    """Inside one long attack call the innermost line says how far the attack is (host counts, no device read)."""
    import torch

    from robustlab.attacks import create_attack
    from robustlab.progress import Heartbeat, attack_steps
    from robustlab.threat import ThreatModel

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            seen.append(bar.line())
            return self.lin(x.flatten(1))

    torch.manual_seed(0)
    model = Spy()
    attack = create_attack("pgd", ThreatModel("linf", 0.1, bounds=(-10.0, 10.0)), steps=7, restarts=2, early_stop=False)
    bar = Heartbeat(None, 1, "evaluate", "pt", interval=3600)
    try:
        attack(model, torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    finally:
        bar.close()
    assert any("pgd step 3 of 14" in line for line in seen)
    assert any("pgd step 14 of 14" in line for line in seen)
    assert "pgd step" not in bar.line()  # the attack ended
    bar = Heartbeat(None, 1, "attack", "pt", interval=3600)
    try:
        with attack_steps("outer"):  # nested calls: the innermost shows; the outer resumes when it ends
            attack_steps.plan(5)
            attack_steps.step(2)
            with attack_steps("inner"):
                attack_steps.step()
                assert bar.line().startswith("attack: 0/1 pt (0%), inner step 1, elapsed")
            assert bar.line().startswith("attack: 0/1 pt (0%), outer step 2 of 5, elapsed")
    finally:
        bar.close()
