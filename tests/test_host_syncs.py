"""Host synchronisations of the gradient attacks (issue 21), counted on a CPU with robustlab.hostsync.

Each attack runs for 10 and for 20 steps on the same 64 digits (eps 0.1: some points break on the way, some
never do). The increment per step, (total(20) - total(10)) / 10, is pinned exactly, so one more sync in a step
fails the test; so is the total of a call (setup: one read for the inputs' and labels' check; the end: one
read for faults and the success count; early stopping: one read per compaction, every 5 steps on an
accelerator, ``IterativeAttack.ACCELERATOR_SHRINK_EVERY``, which the cases set; on a CPU the default compacts
after every step, where a read is free). Before issue 21 PGD-20 made about 300.
"""
import pytest
import torch

import robustlab as rl
from robustlab.attacks import APGD, BIM, FGSM, MIFGSM, PGD, Square
from robustlab.attacks.base import IterativeAttack
from robustlab import runtime
from robustlab.hostsync import count_host_syncs


@pytest.fixture(autouse=True)
def as_on_an_accelerator(monkeypatch):
    """Count the code path an accelerator runs (checks deferred, the batch compacted every few steps) on this
    CPU, where the engine would otherwise read at once (``runtime.host_reads_are_free``)."""
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)

THREAT = rl.ThreatModel("linf", 0.1)
ACCEL = IterativeAttack.ACCELERATOR_SHRINK_EVERY  # the compaction interval off the CPU

# attack -> (total for 10 steps, total for 20 steps); the compactions of early stopping: after steps 5 (10
# steps) and 5, 10, 15 (20 steps), none after the last step
CASES = {
    "pgd": (lambda steps: PGD(THREAT, steps=steps, shrink_every=ACCEL), (3, 5)),
    "pgd, early_stop=False": (lambda steps: PGD(THREAT, steps=steps, early_stop=False), (2, 2)),
    "bim": (lambda steps: BIM(THREAT, steps=steps, shrink_every=ACCEL), (3, 5)),
    "mifgsm": (lambda steps: MIFGSM(THREAT, steps=steps, shrink_every=ACCEL), (3, 5)),
    "pgd.for_training": (lambda steps: PGD.for_training(THREAT, steps=steps), (2, 2)),
}


@pytest.fixture(scope="module")
def points(digits_test):
    x, y = digits_test
    return x[:64], y[:64]


def syncs(attack, model, x, y) -> tuple[int, rl.attacks.AttackResult]:
    with count_host_syncs() as counter:
        result = attack(model, x, y)
    return counter.total, result


@pytest.mark.parametrize("name", CASES)
def test_syncs_per_step_and_per_call_are_pinned(digits_model, points, name):
    make, expected = CASES[name]
    (t10, r10), (t20, r20) = (syncs(make(s), digits_model, *points) for s in (10, 20))
    assert 0 < int(r20.success.sum()) < len(points[1]), "a case where some points break and some do not"
    assert (t10, t20) == expected
    per_step = (t20 - t10) / 10
    assert per_step == {"pgd": 0.2, "bim": 0.2, "mifgsm": 0.2}.get(name, 0.0)
    assert t20 <= 0.25 * 20  # issue 21's target: setup and final judgement included


def test_fgsm_makes_two_reads(digits_model, points):
    total, result = syncs(FGSM(THREAT, shrink_every=ACCEL), digits_model, *points)
    assert total == 2 and result.success.any()


def test_an_added_sync_in_a_step_is_caught(digits_model, points, monkeypatch):
    """The pins above fail when a step reads one value on the host."""
    step = PGD.step

    def step_with_a_read(self, ctx, state, i):
        float(state["x_adv"].sum())
        return step(self, ctx, state, i)

    monkeypatch.setattr(PGD, "step", step_with_a_read)
    t10, _ = syncs(PGD(THREAT, steps=10, early_stop=False), digits_model, *points)
    t20, _ = syncs(PGD(THREAT, steps=20, early_stop=False), digits_model, *points)
    assert (t20 - t10) / 10 == 1.0 and (t10, t20) != CASES["pgd, early_stop=False"][1]


def test_nothing_breaks_reads_once_per_compaction(digits_model, points):
    """With no success the working batch keeps its size: still one read per ``shrink_every`` steps."""
    x, y = points
    tiny = rl.ThreatModel("linf", 1e-4)
    with torch.no_grad():
        right = digits_model(x).argmax(1) == y
    totals = [syncs(PGD(tiny, steps=s, shrink_every=ACCEL), digits_model, x[right], y[right])[0] for s in (10, 20)]
    assert totals == [3, 5]
    # shrink_every=1 (the default on a CPU, where a read is free): also at the restart's start
    assert [syncs(PGD(tiny, steps=20, shrink_every=k), digits_model, x[right], y[right])[0] for k in (1, 4, 20)] \
        == [2 + 1 + 19, 2 + 4, 2]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [lambda k: PGD(THREAT, steps=12, shrink_every=k),
                                  lambda k: PGD(THREAT, steps=6, restarts=2, shrink_every=k),
                                  lambda k: MIFGSM(THREAT, steps=12, shrink_every=k),
                                  lambda k: PGD(THREAT, steps=12, keep_last=True, shrink_every=k)],
                         ids=["pgd", "pgd-restarts", "mifgsm", "pgd-keep-last"])
def test_compacting_every_few_steps_changes_no_result(digits_model, points, device, make):
    """Samples that break between two compactions are frozen, not counted and not recorded: success flags and
    query counts equal those of compacting after every step. The points agree up to float rounding: a model's
    kernels may sum in another order for another batch size."""
    model = digits_model.to(device)
    x, y = (t.to(device) for t in points)
    every = make(1)(model, x, y)
    for k in (3, 5, 100):
        r = make(k)(model, x, y)
        assert torch.equal(r.success, every.success)
        assert torch.equal(r.grad_calls, every.grad_calls) and torch.equal(r.forward_calls, every.forward_calls)
        torch.testing.assert_close(r.x_adv, every.x_adv, rtol=0, atol=1e-6)
        torch.testing.assert_close(r.loss, every.loss, rtol=1e-5, atol=1e-5)
    digits_model.to("cpu")


def test_a_fault_after_the_first_step_is_still_the_same_error(points):
    """Faults are noted on the device and raised at the next read, with the error an immediate check gave."""
    x, y = points

    class NaNLater(torch.nn.Module):
        """Finite outputs at the clean points, NaN once an input moved away from them."""

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(64, 10)
            self.clean = x.flatten(1)

        def forward(self, v):
            out = self.lin(v.flatten(1))
            moved = (v.flatten(1) - self.clean[: len(v)]).abs().amax(1) > 0
            return torch.where(moved[:, None], torch.full_like(out, float("nan")), out)

    with pytest.raises(rl.ModelOutputError, match=r"^model output contains NaN or inf for samples \[0, 1, 2"):
        PGD(THREAT, steps=12, random_start=False, early_stop=False)(NaNLater(), x, y)


def test_a_fault_on_a_sample_that_already_broke_is_no_error(digits_model, points):
    """A sample that succeeded leaves the attack at once, as when the batch was compacted after every step: a
    NaN output at its frozen state (a point the attack never judges) is not an error. Without early stopping
    the same point is attacked, and the NaN is the model output error."""
    x, y = points
    clean = x.flatten(1)
    with torch.no_grad():
        wrong = digits_model(x).argmax(1) != y
    assert wrong.any() and not wrong.all()

    class NaNWhenBrokenAndMoved(torch.nn.Module):
        def forward(self, v):
            gap = (v.flatten(1)[:, None] - clean[None]).abs().amax(2)  # [rows, samples]
            nan = (gap.amin(1) > 0) & wrong[gap.argmin(1)]  # moved away from a misclassified clean point
            out = digits_model(v)
            return torch.where(nan[:, None], torch.full_like(out, float("nan")), out)

    attack = lambda k, **kw: PGD(THREAT, steps=10, random_start=False, shrink_every=k, **kw)  # noqa: E731
    results = [attack(k)(NaNWhenBrokenAndMoved(), x, y) for k in (1, 5)]
    assert torch.equal(results[0].success, results[1].success) and torch.equal(results[1].success[wrong], wrong[wrong])
    assert torch.equal(results[0].grad_calls, results[1].grad_calls)
    with pytest.raises(rl.ModelOutputError, match="model output contains NaN"):
        attack(5, early_stop=False)(NaNWhenBrokenAndMoved(), x, y)


@pytest.mark.parametrize("name, make", [
    ("apgd", lambda steps: APGD(THREAT, steps=steps, shrink_every=ACCEL)),
    ("square", lambda steps: Square(THREAT, max_queries=steps, shrink_every=ACCEL)),
])
def test_issue_target_for_apgd_and_square_on_the_accelerator_schedule(digits_model, points, name, make):
    """At most 0.25 host reads per step over a 20-step call, setup and final judgement included (issue 21)."""
    totals = [syncs(make(s), digits_model, *points)[0] for s in (10, 20)]
    print(name, totals)
    assert totals[1] <= 0.25 * 20


def test_the_compaction_interval_follows_the_device(monkeypatch):
    """On a CPU a read is free: compact after every step (results bit-identical to earlier versions); off the
    CPU every ACCELERATOR_SHRINK_EVERY steps; an explicit shrink_every wins."""
    monkeypatch.undo()  # this CPU as it is
    assert PGD(THREAT).compaction_interval(torch.device("cpu")) == 1
    assert PGD(THREAT).compaction_interval(torch.device("cuda", 0)) == ACCEL == 5
    assert PGD(THREAT, shrink_every=3).compaction_interval(torch.device("cuda", 0)) == 3
    assert rl.attacks.SimBA(THREAT).compaction_interval(torch.device("cuda", 0)) == 1
