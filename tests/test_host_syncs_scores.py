"""Host synchronisations per iteration of the score-based attacks (Square Linf/L2/L1, SimBA, NES,
Bandits-TD), counted on the CPU with robustlab.hostsync (issue 21).

A sync is the attack's own when, of the frames on its call stack in the attack's module or in the
engine (attacks/base.py, and objectives.py, through which the engine judges points), the innermost is
in the attack's module: its step and what the step calls directly (the threat's projection included).
The engine's share: recording points, dropping spent or finished samples, checking outputs and labels. Per iteration means
(count over 2k iterations - count over k) / k, setup and final judgement cancelling out.

Both shares are pinned exactly, on the accelerator's code path: a sync added to an iteration fails the test.
The engine's one read every ``IterativeAttack.ACCELERATOR_SHRINK_EVERY`` = 5 iterations is the compaction of
samples that spent ``max_queries`` (1 in 6 iterations of the counted span).
"""
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import attacks as A
from robustlab.attacks import simba as simba_module, square as square_module
from robustlab import runtime
from robustlab.hostsync import count_host_syncs


@pytest.fixture(autouse=True)
def as_on_an_accelerator(monkeypatch):
    """Count the code path an accelerator runs (checks deferred, the batch compacted every few steps) on this
    CPU, where the engine would otherwise read at once (``runtime.host_reads_are_free``)."""
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)

ENGINE_FILES = (str(Path(A.base.__file__).resolve()), str(Path(rl.objectives.__file__).resolve()))
K = 6  # iterations of the short run; the long run makes 2K

#: per iteration: (the attack's own syncs, the engine's share), both exact
PINS = {
    "square-linf": (0, 1 / 6),
    "square-l2": (0, 1 / 6),
    "square-l1": (0, 1 / 6),   # the exact L1-ball-and-box projection (threat.project_l1_box) is sync-free too
    "simba": (0, 0),       # two queries an iteration; no max_queries here, so no compaction
    "nes": (0, 1 / 6),
    "bandits": (0, 1 / 6),
}

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def make(name: str, k: int):
    """The attack `name` making k iterations (one forward pass of its step each, two for SimBA)."""
    return {
        "square-linf": lambda: A.Square(rl.ThreatModel("linf", 0.05), max_queries=k + 1, early_stop=False),
        "square-l2": lambda: A.Square(rl.ThreatModel("l2", 1.0), max_queries=k + 1, early_stop=False),
        "square-l1": lambda: A.Square(rl.ThreatModel("l1", 4.0), max_queries=k + 1, early_stop=False),
        "simba": lambda: A.SimBA(rl.ThreatModel("l2", 1.0), steps=k, early_stop=False),
        "nes": lambda: A.NES(rl.ThreatModel("linf", 0.05), n_samples=2, max_queries=5 * k + 1, early_stop=False),
        "bandits": lambda: A.BanditsTD(rl.ThreatModel("linf", 0.05), max_queries=3 * k + 1, early_stop=False),
    }[name]()


class ByOwner(Counter):
    """hostsync's per-operation counter that also tells, per sync, whether the attack's module (``own``)
    or the engine (``engine``) made it: every count passes through ``__setitem__``."""

    def __init__(self, module_file: str):
        super().__init__()
        self.module_file, self.owners = module_file, Counter()

    def __setitem__(self, key, value):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename not in (self.module_file, *ENGINE_FILES):
            frame = frame.f_back
        self.owners["own" if frame is not None and frame.f_code.co_filename == self.module_file else "engine"] += 1
        super().__setitem__(key, value)


def syncs(name: str, k: int, device: str) -> Counter:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 10)).to(device).eval()
    x = torch.rand(16, 1, 12, 12, device=device)
    y = torch.arange(16, device=device) % 10
    attack = make(name, k)
    with count_host_syncs() as counter:
        counter.by_op = ByOwner(str(Path(sys.modules[type(attack).__module__].__file__).resolve()))
        attack(model, x, y)
    return counter.by_op.owners


def per_iteration(name: str, device: str) -> tuple[float, float]:
    short, long = syncs(name, K, device), syncs(name, 2 * K, device)
    return (long["own"] - short["own"]) / K, (long["engine"] - short["engine"]) / K


@pytest.fixture
def simba_on_all(monkeypatch):
    """SimBA's accelerator path (the second query on every sample, masked) on any device."""
    monkeypatch.setattr(simba_module, "second_query_on_all", lambda ctx: not ctx.is_oracle)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(PINS))
def test_syncs_per_iteration_are_pinned(name, device, simba_on_all):
    own, engine = per_iteration(name, device)
    assert own == PINS[name][0], f"{name}: the attack's own host syncs per iteration"
    assert engine == PINS[name][1], f"{name}: the engine's host syncs per iteration"


def test_an_added_sync_is_counted_as_the_attacks_own(monkeypatch):
    """The attribution sees a sync that the attack's step adds (here through a helper Square calls)."""
    pixels = square_module._window_pixels

    def reads_the_host(top, *args):
        int(top.max())
        return pixels(top, *args)

    monkeypatch.setattr(square_module, "_window_pixels", reads_the_host)
    assert per_iteration("square-linf", "cpu")[0] == PINS["square-linf"][0] + 1


@pytest.mark.parametrize("make_attack", [
    lambda: A.SimBA(rl.ThreatModel("l2", 0.4), steps=30, basis="pixel", step_size=0.2),
    lambda: A.SimBA(rl.ThreatModel("linf", 0.05), steps=30, max_queries=40, step_size=0.2),
])
def test_simba_gives_the_same_points_with_the_second_query_on_all(make_attack, monkeypatch):
    """The accelerator path (masked second query) returns what the subset path returns, queries included."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(12, 1, 8, 8)
    y = model(x).argmax(1)
    subset = make_attack()(model, x, y)
    monkeypatch.setattr(simba_module, "second_query_on_all", lambda ctx: True)
    on_all = make_attack()(model, x, y)
    for field in ("x_adv", "success", "loss", "forward_calls"):
        assert torch.equal(getattr(subset, field), getattr(on_all, field)), field
    assert 0 < int(subset.success.sum()) < 12
