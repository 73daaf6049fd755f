"""Host synchronisations per step of APGD (CE: Linf, L2, L1; APGD-T), FAB-T, CW-L2 and DeepFool, counted on the
CPU with robustlab.hostsync (issue 21). For each attack, on a tiny MLP, the counts of a K-step and a
2K-step call pin:
  own:   syncs per step made by the attack's own code (apgd.py, fab.py, minnorm.py and the projections of
         threat.py): 0, except FAB-T's one convergence check of the exact projection (Newton, see
         fab._newton_root) and DeepFool's shrinks: on an accelerator after steps 1, 2, 4, 8, ... (0.1 per step
         from 10 to 20), on a CPU after every step (a read costs nothing there);
  step:  all syncs per step, (total(2K) - total(K)) / K, the engine's (base.py: record, early-stop and
         finite checks) and the objectives' included;
  total: every sync of the 2K-step call (setup and final judgement included).
Any sync added to a step changes `step` and `total` (and `own` when it is in the attack's code).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import robustlab as rl
from robustlab.attacks import APGD, APGDT, FABT
from robustlab.attacks.minnorm import CarliniWagnerL2, DeepFool
from robustlab import runtime
from robustlab.hostsync import _syncing_op, count_host_syncs


@pytest.fixture(autouse=True)
def as_on_an_accelerator(monkeypatch):
    """Count the code path an accelerator runs (checks deferred, the batch compacted every few steps) on this
    CPU, where the engine would otherwise read at once (``runtime.host_reads_are_free``)."""
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)

K = 10
ROOT = str(Path(rl.__file__).parent)
OWN = {str(Path(ROOT, *f)) for f in (("attacks", "apgd.py"), ("attacks", "fab.py"), ("attacks", "minnorm.py"), ("threat.py",))}


class OwnSyncs(TorchDispatchMode):
    """Counts the syncing ATen operations whose innermost robustlab frame is in one of the OWN files."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _syncing_op(str(func.overloadpacket).replace("aten::", "aten."), args, kwargs) is not None:
            frame = sys._getframe(1)
            while frame is not None and not (frame.f_code.co_filename.startswith(ROOT) and
                                             not frame.f_code.co_filename.endswith("hostsync.py")):
                frame = frame.f_back
            self.count += frame is not None and frame.f_code.co_filename in OWN
        return func(*args, **kwargs)


def _model() -> torch.nn.Module:
    """A 3x6x6 -> 10 MLP whose class 0 has a logit bias (50) that no input in the box overcomes: with
    labels 0 no point ever breaks, so every step of every target runs on every point."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        model[3].bias[0] = 50.0
    return model.eval()


def _batch():
    return torch.rand(16, 3, 6, 6, generator=torch.Generator().manual_seed(1)), torch.zeros(16, dtype=torch.long)


def _linf(eps=0.05):
    return rl.ThreatModel("linf", eps)


def _doubling(attack: DeepFool) -> DeepFool:
    """DeepFool with an accelerator's shrink schedule (after steps 1, 2, 4, 8, ...; a CPU shrinks every step)."""
    attack.shrink = "doubling"
    return attack


#: name -> (attack for a number of steps, targets (steps per step count), pinned (own, step, total))
CASES = {
    "apgd-ce-linf": (lambda n: APGD(_linf(), "ce", steps=n, early_stop=False), 1, (0.0, 0.0, 2)),
    "apgd-ce-linf-early-stop": (lambda n: APGD(_linf(), "ce", steps=n), 1, (0.0, 0.2, 5)),
    "apgd-ce-l2": (lambda n: APGD(rl.ThreatModel("l2", 0.5), "ce", steps=n, early_stop=False), 1, (0.0, 0.0, 2)),
    "apgd-ce-l1": (lambda n: APGD(rl.ThreatModel("l1", 3.0), "ce", steps=n, early_stop=False), 1, (0.0, 0.0, 2)),
    "apgd-t-linf": (lambda n: APGDT(_linf(), n_targets=2, steps=n), 2, (0.0, 0.2, 10)),
    "fab-t-linf": (lambda n: FABT(_linf(), n_targets=2, steps=n), 2, (1.0, 1.0, 44)),
    "fab-t-l2": (lambda n: FABT(rl.ThreatModel("l2", 0.5), n_targets=2, steps=n), 2, (1.0, 1.0, 44)),
    "cw-l2": (lambda n: CarliniWagnerL2(rl.ThreatModel("l2", 0.5), steps=n, binary_search_steps=1), 1,
              (0.0, 0.0, 3)),
    "deepfool-l2-cpu": (lambda n: DeepFool(rl.ThreatModel("l2", 0.5), steps=n), 1, (0.1, 0.1, 8)),  # as on an accelerator
    "deepfool-l2-accelerator": (lambda n: _doubling(DeepFool(rl.ThreatModel("l2", 0.5), steps=n)), 1, (0.1, 0.1, 8)),
    "deepfool-linf-no-early-stop": (lambda n: DeepFool(_linf(), steps=n, early_stop=False), 1, (0.0, 0.0, 2)),
}


def _count(make, steps: int) -> tuple[int, int]:
    model, (x, y) = _model(), _batch()
    attack = make(steps)
    with count_host_syncs() as syncs, OwnSyncs() as own:
        attack(model, x, y)
    return syncs.total, own.count


@pytest.mark.parametrize("name", CASES)
def test_host_syncs_per_step_pinned(name):
    make, per, (own_step, step, total) = CASES[name]
    t1, o1 = _count(make, K)
    t2, o2 = _count(make, 2 * K)
    measured = ((o2 - o1) / (K * per), (t2 - t1) / (K * per), t2)
    assert measured == (own_step, step, total), f"{name}: (own per step, syncs per step, total) = {measured}"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the accelerator path is counted above on the CPU"))])
def test_deepfool_shrink_schedules_agree(device):
    """Dropping broken rows after steps 1, 2, 4, ... (a device-side mask in between) or after every step
    gives every point the same success and the same passes, and the same point up to float rounding
    (the model sees other batch sizes)."""
    gen = torch.Generator().manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 10)).to(device).eval()
    x, y = torch.rand(24, 3, 6, 6, generator=gen).to(device), torch.randint(0, 10, (24,), generator=gen).to(device)
    results = []
    for shrink in ("every", "doubling"):
        attack = DeepFool(rl.ThreatModel("l2", 0.3), steps=12)
        attack.shrink = shrink
        results.append(attack(model, x, y))
    every, doubling = results
    assert 0 < int(every.success.sum()) < len(y)
    assert torch.equal(every.success, doubling.success)
    assert torch.equal(every.grad_calls, doubling.grad_calls) and torch.equal(every.forward_calls, doubling.forward_calls)
    torch.testing.assert_close(every.x_adv, doubling.x_adv, atol=1e-5, rtol=0)
