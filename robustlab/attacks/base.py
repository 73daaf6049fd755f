"""The attack engine: one base class owns bounds, success bookkeeping, early stopping,
multi-eps calls and timing; each attack writes only its own step.

``Attack(threat, objective, **hparams)(model, x, target) -> AttackResult``.

The engine records every point an attack evaluates. Per sample it keeps the best point found:
a successful point beats an unsuccessful one, and between two points of the same status the one
with the higher objective loss wins. The reported ``x_adv`` is therefore never the last iterate
by accident, and ``success`` is exactly "some evaluated point inside the threat model succeeded".
Samples that succeed are removed from the working batch (``early_stop=True``), so they stop costing
compute; since every per-sample computation is independent of the rest of the batch (random
numbers are drawn for the whole batch, then indexed), early stopping never changes a success flag.

Host synchronisations (issue 21): a step reads nothing on the host, so a GPU never waits for it. Best points
are kept with ``torch.where``; NaN/inf faults are noted on the device and raised at the next host read; a
sample that succeeds stops being *live* at once (frozen, no longer counted or recorded) and leaves the
working batch at the next compaction, every ``shrink_every`` steps (one read each).
"""
from __future__ import annotations

import logging
import math
import numbers
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..cpu import fast_input_gradients
from ..errors import (InputError, ModelOutputError, check_batch, check_model_output, looks_like_probabilities,
                      warn_if_probabilities)
from ..objectives import CrossEntropy, Objective, get_objective, labels_checked
from .. import runtime
from ..progress import attack_steps
from ..runtime import eval_mode
from ..oracles import Oracle, OracleError, QueryBudgetExceeded
from ..targets import index_target
from ..threat import ThreatModel, lp_norm, per_sample

__all__ = ["Attack", "AttackContext", "AttackResult", "IterativeAttack", "TargetRows", "check_query_budget", "finite_or_raise",
           "target_groups", "index_target"]

log = logging.getLogger(__name__)


@dataclass
class AttackResult:
    """Outcome of one attack on one batch.

    Attributes:
        x_adv: best point per sample (successful if any evaluated point succeeded).
        success: bool[B], the objective's success at x_adv.
        loss: float[B], objective loss at x_adv.
        grad_calls: int[B], forward+backward passes spent on each sample.
        forward_calls: int[B], forward-only passes spent on each sample.
        queries: int[B], model evaluations of any kind (grad_calls + forward_calls).
        time_s: wall time.
        status: per sample, why the attack stopped, where the attack reports it (decision attacks, and
            any attack whose black box failed or ran out of budget): "success", "max_queries",
            "oracle_budget", "oracle_error", "no_start" or "done" (finished without success); else None.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    grad_calls: torch.Tensor
    forward_calls: torch.Tensor
    time_s: float
    attack: str
    threat: ThreatModel
    x: torch.Tensor | None = field(default=None, repr=False)
    status: list[str] | None = None

    @property
    def eps(self) -> float:
        return self.threat.eps

    @property
    def queries(self) -> torch.Tensor:
        return self.grad_calls + self.forward_calls

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else float("nan")

    @property
    def perturbation_norms(self) -> torch.Tensor:
        if self.x is None:
            raise ValueError("the clean inputs were not kept with this result")
        return lp_norm(self.x_adv - self.x, self.threat.norm)

    def summary(self) -> dict:
        out = {
            "attack": self.attack,
            "threat": self.threat.describe(),
            "n": int(self.success.numel()),
            "success_rate": self.success_rate,
            "grad_calls": int(self.grad_calls.sum()),
            "forward_calls": int(self.forward_calls.sum()),
            "time_s": self.time_s,
        }
        if self.status is not None:
            out["status"] = {s: self.status.count(s) for s in sorted(set(self.status))}
        if self.success.any():
            q = self.queries[self.success].double()
            out["queries_per_success_mean"] = float(q.mean())
            out["queries_per_success_median"] = float(q.median())
            if self.x is not None:
                norms = self.perturbation_norms[self.success].double()
                out["norm_of_successes_mean"] = float(norms.mean())
                out["norm_of_successes_median"] = float(norms.median())
        return out


def _check_dtype(model, x: torch.Tensor) -> None:
    """A clear error for inputs whose float type differs from the model's (float64 data, float32 weights)."""
    if isinstance(model, nn.Module):
        p = next((p for p in model.parameters() if torch.is_floating_point(p)), None)
        if p is not None and p.dtype != x.dtype:
            raise InputError(f"the inputs are {x.dtype} but the model's parameters are {p.dtype}; convert one of them "
                             f"(x.to({p.dtype}) or model.to({x.dtype}))")


def label_extremes(target: Any) -> list[torch.Tensor]:
    """(lowest, highest) of each integer tensor of a target (labels, target classes), as device scalars."""
    parts = target if isinstance(target, tuple) else (target,)
    out: list[torch.Tensor] = []
    for t in parts:
        if isinstance(t, torch.Tensor) and t.numel() and t.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            out.extend(t.aminmax())
    return out


def _nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    """bool[B]: rows of ``t`` holding a NaN or an inf, found on the device (the extremes of a row carry any NaN
    and +-inf, and unlike a sum they never overflow; amax and amin are ten times faster than aminmax per row)."""
    rows = t.reshape(t.shape[0], -1)
    return ~(torch.isfinite(rows.amax(1)) & torch.isfinite(rows.amin(1)))


class _DeferredFaults:
    """Faults of the model's outputs, input gradients and losses, noted on the device while an attack runs and
    raised at the engine's next host read (``AttackContext.read_host``) as the error the first of them makes:
    checking each pass at once would read a value on the host every step, which stalls a GPU.

    Each note keeps the rows it concerns (samples that are no longer attacked are left out, as the working
    batch would have dropped them) and ORs "some row is bad" into one device flag that the read carries."""

    def __init__(self, device: torch.device):
        self.flag = torch.zeros((), dtype=torch.bool, device=device)
        self.notes: list[tuple[str, torch.Tensor, str | None]] = []

    def note(self, kind: str, bad: torch.Tensor, detail: str | None = None) -> None:
        self.notes.append((kind, bad, detail))
        self.flag = self.flag | bad.any()

    def raise_first(self) -> None:
        """Raise the error of the first note with a bad row (the host reads here happen only on failure)."""
        for kind, bad, detail in self.notes:
            if not bool(bad.any()):
                continue
            if kind == "output":  # the model-output check's own message: NaN exactly at the bad rows' positions
                check_model_output(torch.where(bad, float("nan"), 0.0)[:, None], detail)
            if kind == "grad":
                raise ModelOutputError(
                    "the input gradient contains NaN or inf; the model or loss is not differentiable "
                    "at these inputs (check for log(0), sqrt(0) or a saturated softmax)"
                )
            if kind == "loss":
                raise ModelOutputError(
                    f"the objective's loss is NaN for {int(bad.sum())} samples, so points cannot be ranked; "
                    "check the targets (NaN or inf values must be outside the valid mask) and the model's outputs"
                )
        self.notes.clear()

    def clear(self) -> None:
        self.notes.clear()


class AttackContext:
    """The working state the engine shares with an attack during one call: the protocol an attack's
    step is written against. Everything an attack may use is listed here; names starting with ``_``
    are the engine's own.

    State (read; change it only through the methods below):
        ``x``, ``target``, ``index``, ``threat``, ``n_active``: the samples still being attacked (their
        inputs, targets, positions in the whole batch, per-sample threat model, count);
        ``x_full``, ``target_full``, ``threat_full``: the whole batch; ``objective``, ``model``,
        ``is_oracle``, ``eot``, ``generator``; ``best_x``, ``best_loss``, ``success_full``: the best
        point per sample so far. ``grad_calls`` and ``forward_calls`` (per sample of the whole batch):
        an attack that runs the model through ``forward`` adds its passes there itself.
        ``status``: None, or per sample why the attack stopped (decision attacks set it).
    Active set: ``set_active(index)``, ``shrink(keep)``, ``unbroken()``, ``retarget(target)``; ``live``,
        ``set_live(mask)``: the active samples still attacked (bool on the device): a sample that is no longer
        live stays in the working batch until the next compaction, but its passes are neither counted nor
        recorded, and faults on it are not errors (the engine freezes its state).
    Host reads: ``read_host(*scalars)``: the values of device scalars in one synchronisation, raising first the
        error of any fault (NaN/inf output or gradient, NaN loss) noted since the last read.
    Model access (each checks the model's output):
        ``evaluate(v)``: forward pass, judged and recorded, counted;
        ``loss_and_grad(v)``: loss and input gradient (averaged over ``eot`` draws), judged, recorded, counted;
        ``output(x)``: the output only, counted, neither judged nor recorded;
        ``forward(x)``: the output, differentiable when x requires grad, not counted, not judged:
        for attacks that differentiate their own function of the output (C&W, DeepFool, FAB);
        ``judge(x, out)``: the objective's loss and success of outputs ``out`` at points ``x``, recorded;
        ``record(x, loss, success, idx)``: offer points as candidate results;
        ``probe(x_many, owners)``, ``probe_success(x_many, owners)``: probes (finite differences), counted,
        never candidate results.
    Helpers: ``point(v)`` (the input a threat variable stands for), ``target_of(sub)``,
        ``random_init()``, ``zero_variable()``, ``rand_full(shape)`` (random numbers drawn for the whole
        batch, then indexed, so early stopping never changes a sample's draws), ``queries_left(max_queries)``
        (what each active sample may still spend, the oracle's budget included).
    The ``sub`` argument of the model-access methods selects positions of the active set (None: all).
    """

    def __init__(self, model: Callable, x: torch.Tensor, target: Any, threat: ThreatModel,
                 objective: Objective, generator: torch.Generator):
        self.model = model
        self.threat_full = threat
        self.threat = threat
        self.objective = objective
        self.generator = generator
        self.x_full = x
        self.target_full = target
        n = x.shape[0]
        dev = x.device
        # one spare row after the batch: row writes that must not land go there (``write_rows``), so a masked
        # update is one index_copy_, with no host read
        self._best_x_rows = torch.cat([x, x[:1]])
        self.best_x = self._best_x_rows[:n]
        self.best_loss = torch.full((n,), float("-inf"), device=dev, dtype=x.dtype)
        self.success_full = torch.zeros(n, dtype=torch.bool, device=dev)
        self.grad_calls = torch.zeros(n, dtype=torch.long, device=dev)
        self.forward_calls = torch.zeros(n, dtype=torch.long, device=dev)
        self._checked_probabilities = False
        self._looks_like_probabilities: torch.Tensor | None = None
        #: (lowest, highest) integer label of the whole batch's target, read at the start of a call (None: unknown)
        self.label_range: tuple[float, float] | None = None
        self._live_full = torch.ones(n, dtype=torch.bool, device=dev)
        self._faults = _DeferredFaults(dev)
        #: the engine's ExitStack for the call (None outside ``Attack.__call__``): holds ``labels_checked``
        self._call_scope: ExitStack | None = None
        self.eot = 1
        self.status: list[str] | None = None
        self.set_active(torch.arange(n, device=dev))

    # ----- active set -----------------------------------------------------------------
    def set_active(self, index: torch.Tensor) -> None:
        self.index = index
        self.x = self.x_full[index]
        self.target = index_target(self.target_full, index)
        # per-sample state of the threat model (masks, warp maps) follows the samples
        self.threat = self.threat_full.subset(index) if self.threat_full.has_per_sample_state else self.threat_full

    def retarget(self, target: Any) -> None:
        """Attack the same samples towards another target (e.g. APGD-T's next target class)."""
        self.target_full = target
        self.set_active(self.index)

    def point(self, v: torch.Tensor, sub: torch.Tensor | None = None) -> torch.Tensor:
        """The input that the threat's variable `v` stands for (v itself for pixel threats)."""
        if self.threat.variable_is_point:
            return v
        threat = self.threat if sub is None else self.threat.subset(sub) if self.threat.has_per_sample_state else self.threat
        x = self.x if sub is None else self.x[sub]
        return threat.point(x, v)

    def shrink(self, keep: torch.Tensor) -> None:
        """Keep only the active samples where `keep` (bool over the active set) is True, or, without a host
        read, those at the positions `keep` (long) of the active set."""
        self.set_active(self.index[keep])

    @property
    def live(self) -> torch.Tensor:
        """Bool over the active set: still attacked (counted, recorded, checked)."""
        return self._live_full[self.index]

    def set_live(self, mask: torch.Tensor | None) -> None:
        """Mark which active samples are still attacked (None: all of them); no host read."""
        if mask is None:
            self._live_full[self.index] = True
        else:
            self._live_full.index_copy_(0, self.index, mask.to(self._live_full.device))

    def read_host(self, *scalars: torch.Tensor) -> list[float]:
        """The values of device scalars (bools and counts as floats) in one host read, the one synchronisation
        the engine makes every few steps; raises the error of the first fault noted since the last read."""
        dev = self._faults.flag.device
        dtype = torch.float32 if dev.type == "mps" else torch.float64
        looks = self._looks_like_probabilities
        flags = [self._faults.flag, torch.zeros((), dtype=torch.bool, device=dev) if looks is None else looks]
        values = torch.stack([torch.as_tensor(v, device=dev).to(dtype).reshape(()) for v in (*flags, *scalars)]
                             ).tolist()
        if values[0]:
            self._faults.raise_first()
        self._faults.clear()
        if values[1]:
            warn_if_probabilities(None, looks=True)
        self._looks_like_probabilities = None
        return values[2:]

    def _count(self, calls: torch.Tensor, idx: torch.Tensor, k: int = 1) -> None:
        """Add ``k`` passes to the live samples ``idx`` of the whole batch (repeats add up)."""
        calls.index_add_(0, idx, self._live_full[idx].to(calls.dtype) * k)

    @property
    def n_active(self) -> int:
        return int(self.index.numel())

    def unbroken(self) -> torch.Tensor:
        """Bool over the active set: not yet successful."""
        return ~self.success_full[self.index]

    # ----- model access ---------------------------------------------------------------
    @property
    def is_oracle(self) -> bool:
        return isinstance(self.model, Oracle)

    def _forward(self, x_adv: torch.Tensor, idx: torch.Tensor | None = None):
        if self.is_oracle:
            out = self.model(x_adv, ids=self.index if idx is None else idx)
            if isinstance(out, torch.Tensor) and torch.is_floating_point(out):
                check_model_output(out, "oracle output")
            return out
        gradient_pass = x_adv.requires_grad and torch.is_grad_enabled()  # strided convs' dx by phases
        with fast_input_gradients(x_adv.device) if gradient_pass else nullcontext():
            out = self.model(x_adv)
        if not isinstance(out, torch.Tensor):
            raise InputError(f"the model must return a tensor, got {type(out).__name__}")
        rows = self.index if idx is None else idx
        if torch.is_floating_point(out) and out.dim() and out.shape[0] == rows.numel() and out.numel():
            self._note_nonfinite("output", out.detach(), self._live_full[rows], "model output")
        else:
            check_model_output(out)
        if not self._checked_probabilities:
            self._checked_probabilities = True
            self._check_first_output(out.detach())
        return out

    def _check_first_output(self, out: torch.Tensor) -> None:
        """On the call's first output, with no host read: whether the outputs look like probabilities (warned at
        the next read), and, when the labels' extremes (read with the inputs' check, ``label_extremes``) lie in
        [0, classes), no label check on every pass any more (``labels_checked``); out-of-range labels keep the
        objective's own check and its error."""
        self._looks_like_probabilities = looks_like_probabilities(out)
        lo, hi = self.label_range or (None, None)
        if lo is not None and out.dim() == 2 and lo >= 0 and hi < out.shape[1] and self._call_scope is not None:
            self._call_scope.enter_context(labels_checked())

    def _note_nonfinite(self, kind: str, t: torch.Tensor, live: torch.Tensor, detail: str | None = None) -> None:
        """Note the live rows of `t` that hold a NaN or an inf (``_DeferredFaults``). Where a host read is free
        (``runtime.host_reads_are_free``: the CPU) one sum tells first whether there is any, which is cheaper
        than the per-row search; an overflowing sum only falls back to the search."""
        if runtime.host_reads_are_free(t.device) and bool(torch.isfinite(t.sum())):
            return
        self._faults.note(kind, _nonfinite_rows(t) & live, detail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on inputs of the active samples, checked; differentiable when ``x``
        requires grad (under ``torch.enable_grad``). Not counted and not judged: the caller adds its
        passes to ``grad_calls``/``forward_calls`` and offers points with ``judge`` or ``record``."""
        return self._forward(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on inputs of the active samples, counted as one query each, not judged."""
        with torch.no_grad():
            out = self._forward(x, self.index)
        self._count(self.forward_calls, self.index)
        return out

    def evaluate(self, x_adv: torch.Tensor, sub: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward pass at the threat variable `x_adv` (the point itself for pixel threats; active
        samples, or the positions `sub` of the active set). Returns (loss, success, output) and
        records the points."""
        x_adv = self.point(x_adv, sub)
        idx = self.index if sub is None else self.index[sub]
        with torch.no_grad():
            out = self._forward(x_adv, idx)
            self._count(self.forward_calls, idx)
            loss, succ = self.judge(x_adv, out, sub)
        return loss, succ, out

    def loss_and_grad(self, x_adv: torch.Tensor, sub: torch.Tensor | None = None, record: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, gradient of the summed loss with respect to the threat variable `x_adv` (the input
        itself for pixel threats), success and output; records the points (``record=False``: for
        iterates outside the threat model, e.g. APGD-L1's larger-eps phases)."""
        if self.is_oracle:
            raise InputError(
                "this attack needs input gradients, but the model is a black-box oracle; use a score- or "
                "decision-based attack (Square, SimBA, HopSkipJump, ...) or pass the differentiable model"
            )
        v = x_adv
        x_adv = self.point(v, sub).detach()
        loss, grad, out = self._loss_grad_once(x_adv, sub)
        for _ in range(self.eot - 1):  # EOT: average over draws of a randomised model
            l_i, g_i, o_i = self._loss_grad_once(x_adv, sub)
            loss, grad, out = loss + l_i, grad + g_i, out + o_i
        if self.eot > 1:
            loss, grad, out = loss / self.eot, grad / self.eot, out / self.eot
        idx = self.index if sub is None else self.index[sub]
        live = self._live_full[idx]
        self._note_nonfinite("grad", grad, live)
        self._faults.note("loss", torch.isnan(loss).reshape(-1) & live)
        self._count(self.grad_calls, idx, self.eot)
        out = out.detach()
        if not self.threat.variable_is_point:
            threat = self.threat if sub is None or not self.threat.has_per_sample_state else self.threat.subset(sub)
            grad = threat.pullback(self.x if sub is None else self.x[sub], v, grad)
        if not record:
            return loss.detach(), grad, self.objective.success(out, self.target_of(sub)), out
        loss, succ = self.judge(x_adv.detach(), out, sub, loss.detach())
        return loss, grad, succ, out

    def queries_left(self, max_queries: int, oracle: bool = True) -> torch.Tensor:
        """Queries each active sample may still spend: ``max_queries`` less what it spent, and (``oracle``)
        at most what an oracle with a budget has left for it."""
        left = max_queries - (self.grad_calls + self.forward_calls)[self.index]
        if oracle and self.is_oracle and getattr(self.model, "budget", None) is not None:
            left = torch.minimum(left, self.model.remaining(self.index).to(left.device))
        return left

    def probe(self, x_many: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Objective loss at probe points (e.g. finite differences): row i belongs to active sample
        ``owners[i]``. Counts one query per row for its owner; probes are not candidate results."""
        idx = self.index[owners]
        with torch.no_grad():
            out = self._forward(x_many, idx)
        self._count(self.forward_calls, idx)
        return self.objective.loss(out, index_target(self.target, owners))

    def probe_success(self, x_many: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Success (the decision only) at probe points; row i belongs to active sample ``owners[i]``."""
        idx = self.index[owners]
        with torch.no_grad():
            out = self._forward(x_many, idx)
        self._count(self.forward_calls, idx)
        return self.objective.success(out, index_target(self.target, owners)).to(x_many.device)

    def _loss_grad_once(self, x_adv, sub):
        x_req = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self._forward(x_req)
            loss = self.objective.loss(out, self.target_of(sub))
            grad, = torch.autograd.grad(loss.sum(), x_req)
        return loss.detach(), grad, out.detach()

    def target_of(self, sub: torch.Tensor | None = None) -> Any:
        """The target of the active samples at positions `sub` of the active set (None: all)."""
        return self.target if sub is None else index_target(self.target, sub)

    def judge(self, x_adv: torch.Tensor, out: torch.Tensor, sub: torch.Tensor | None = None,
              loss: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's (loss, success) of the model outputs `out` at the points `x_adv` (active
        samples, or positions `sub`); records the points. ``loss``: already computed, reused."""
        idx = self.index if sub is None else self.index[sub]
        target = self.target_of(sub)
        if loss is None:
            loss = self.objective.loss(out, target)
        succ = self.objective.success(out, target)
        self.record(x_adv, loss, succ, idx)
        return loss, succ

    def record(self, x_adv: torch.Tensor, loss: torch.Tensor, success: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep x_adv for the live samples ``idx`` (of the whole batch, no repeats) where it beats the best point
        so far: a success beats a failure, then the higher loss wins. Row by row on the device (no host read)."""
        success = success.to(self.success_full.device)
        loss = loss.to(self.best_loss.device, self.best_loss.dtype)
        prev_succ, prev_loss = self.success_full[idx], self.best_loss[idx]
        better = self._live_full[idx] & ((success & ~prev_succ) | ((success == prev_succ) & (loss > prev_loss)))
        self.write_rows(idx, better, x_adv)
        self.best_loss.index_copy_(0, idx, torch.where(better, loss, prev_loss))
        self.success_full.index_copy_(0, idx, prev_succ | (better & success))

    def write_rows(self, idx: torch.Tensor, mask: torch.Tensor, x_adv: torch.Tensor) -> None:
        """``best_x[idx[j]] = x_adv[j]`` where ``mask[j]``, with no host read: the other rows go to a spare row."""
        if self.best_x.data_ptr() != self._best_x_rows.data_ptr():  # best_x was replaced: update it in place
            self.best_x.index_copy_(0, idx, torch.where(per_sample(mask, x_adv), x_adv.to(self.best_x.dtype),
                                                        self.best_x[idx]))
            return
        dest = torch.where(mask, idx, torch.full_like(idx, self.best_x.shape[0]))
        self._best_x_rows.index_copy_(0, dest, x_adv.to(self.best_x.dtype))

    def random_init(self) -> torch.Tensor:
        """A random start of the threat's variable for the active samples (a point of the feasible
        set for pixel threats). The one random start of the engine: drawn for the whole batch and
        then indexed, so a sample's start never depends on which other samples are still active.
        """
        full = self.threat_full.init(self.x_full, generator=self.generator)
        return full[self.index]

    def zero_variable(self) -> torch.Tensor:
        """The unperturbed variable of the active samples (the clean inputs for pixel threats)."""
        if self.threat.variable_is_point:
            return self.x.clone()
        return self.threat.zero(self.x)

    def input_shaped_variable(self, attack: str) -> torch.Tensor:
        """``zero_variable()`` for an attack that searches the input's coordinates (Square's windows, SimBA's
        directions); a threat whose variable has another shape (a warp's parameters, one view of a stereo
        pair) is one InputError naming the attacks that work on it."""
        origin = self.zero_variable()
        if origin.shape != self.x.shape:
            raise InputError(f"{attack} searches a variable shaped like the input {tuple(self.x.shape[1:])}; this "
                             f"threat's variable has shape {tuple(origin.shape[1:])}: attack it with a gradient "
                             "attack (pgd, apgd)")
        return origin

    def rand_full(self, shape_tail: Sequence[int] = (), kind: str = "rand") -> torch.Tensor:
        """Random numbers with a leading batch dimension over the whole batch, indexed to the active set."""
        shape = (self.x_full.shape[0], *shape_tail)
        fn = torch.rand if kind == "rand" else torch.randn
        full = fn(shape, generator=self.generator, device=self.x_full.device, dtype=self.x_full.dtype)
        return full[self.index]


class TargetRows(AttackContext):
    """A working context whose rows are (sample, target) pairs of a parent context, for attacks run
    once per target class (APGD-T, FAB-T): all targets of a sample are attacked in one batch, and a
    sample's rows stop together as soon as one of them succeeds.

    Row ``j * N + i`` pairs sample ``i`` of the parent's whole batch (N samples) with its ``j``-th
    target, so random numbers drawn for the rows (``rand_full``) are, block by block, exactly the
    draws that running the targets one after the other would make (one restart). A sample's result
    is therefore the same as the sequential run's: it succeeds iff one target's trajectory succeeds.
    ``merge`` hands the best point of each sample over all its rows back to the parent, with the
    passes spent.
    """

    def __init__(self, parent: AttackContext, targets: torch.Tensor, target_of: Callable[[torch.Tensor], Any]):
        n, k = parent.x_full.shape[0], targets.shape[1]
        self.parent, self.n_targets, self._n = parent, k, n
        self.owner_full = torch.arange(n, device=parent.x_full.device).repeat(k)
        x_rows = parent.x_full.repeat(k, *([1] * (parent.x_full.dim() - 1)))
        threat = parent.threat_full.subset(self.owner_full) if parent.threat_full.has_per_sample_state else parent.threat_full
        super().__init__(parent.model, x_rows, target_of(targets.T.reshape(-1)), threat, parent.objective,
                         parent.generator)
        self.eot = parent.eot
        self._checked_probabilities = parent._checked_probabilities
        rows = (parent.index[None, :] + n * torch.arange(k, device=parent.index.device)[:, None]).reshape(-1)
        self.set_active(rows)

    def unbroken(self) -> torch.Tensor:
        """Bool over the active rows: no row of the same sample has succeeded (nor had the sample before)."""
        hits = torch.zeros(self._n, dtype=torch.long, device=self.owner_full.device)
        hits.index_add_(0, self.owner_full, self.success_full.long())
        broken = self.parent.success_full | (hits > 0).to(self.parent.success_full.device)
        return ~broken[self.owner_full[self.index]]

    def merge(self) -> None:
        """Record each sample's best row in the parent (successful first, then highest loss) and add the passes.
        A row never evaluated (loss -inf, no success) beats nothing, so every row is offered, with no host read."""
        every = torch.arange(self._n, device=self.owner_full.device)
        for j in range(self.n_targets):
            block = slice(j * self._n, (j + 1) * self._n)
            self.parent.record(self.best_x[block], self.best_loss[block], self.success_full[block], every)
        self.parent.grad_calls += self.grad_calls.view(self.n_targets, self._n).sum(0)
        self.parent.forward_calls += self.forward_calls.view(self.n_targets, self._n).sum(0)


#: the largest row batch (in input numbers: rows x numbers per input) that ``target_groups`` builds by default
#: on an accelerator (not measured here: no GPU; on a CPU the default is one target at a time)
ROWS_BUDGET = 1 << 22


def target_groups(ctx: AttackContext, clean_out: torch.Tensor, n_targets: int, targets_at_once: int | None,
                  early_stop: bool, target_of: Callable[[torch.Tensor, int], Any]):
    """Yield ``(rows, targets)``: a :class:`TargetRows` context per group of ``targets_at_once`` target
    classes (None: one at a time on a CPU, where larger batches cost more per row (measured: APGD-T
    35% slower with all 9 MNIST targets in one batch); on an accelerator as many as keep the rows'
    inputs within ``ROWS_BUDGET`` numbers, e.g. all 9 for 500 MNIST points, 2 for 500 CIFAR points, 1
    for ImageNet-sized inputs), the 2nd to (n_targets + 1)-th most likely classes
    of ``clean_out`` (the active samples' clean outputs), and the target class of each row of the
    whole row batch. With ``early_stop`` a group runs only on the samples still unbroken. Each
    group's results are merged into ``ctx`` after the caller has attacked it.
    ``target_of(classes, k)`` builds the rows' objective target from their target classes."""
    n_targets = min(int(n_targets), clean_out.shape[1] - 1)
    ranked = torch.zeros(ctx.x_full.shape[0], n_targets, dtype=torch.long, device=ctx.index.device)
    ranked[ctx.index] = clean_out.argsort(1, descending=True)[:, 1:n_targets + 1].to(ranked.device)
    if targets_at_once is None and ctx.x_full.device.type == "cpu":
        per = 1
    elif targets_at_once is None:  # as many targets as keep the row batch's inputs within ROWS_BUDGET numbers
        row = max(ctx.x_full[0].numel(), 1) * max(ctx.n_active, 1)
        per = max(1, min(n_targets, ROWS_BUDGET // row))
    else:
        per = int(targets_at_once)
    if per < 1:
        raise InputError(f"targets_at_once must be >= 1 (or None for all), got {targets_at_once}")
    for first in range(0, n_targets, per):
        if early_stop:
            ctx.set_active(ctx.index[ctx.unbroken()])
        if ctx.n_active == 0:
            return
        cols = ranked[:, first:first + per]
        rows = TargetRows(ctx, cols, lambda t, k=cols.shape[1]: target_of(t, k))
        yield rows, cols.T.reshape(-1)
        rows.merge()


def _subset_state(state: dict, keep: torch.Tensor, n: int) -> dict:
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            out[k] = v[keep]
        elif isinstance(v, tuple) and v and all(isinstance(t, torch.Tensor) and t.shape[0] == n for t in v):
            out[k] = tuple(t[keep] for t in v)
        else:
            out[k] = v
    return out


def _freeze(old: dict, new: dict, live: torch.Tensor) -> dict:
    """The step's new state for the live samples; the others keep their old state (no host read)."""
    def pick(v, o):
        if isinstance(v, torch.Tensor) and isinstance(o, torch.Tensor) and v.dim() and v.shape == o.shape \
                and v.shape[0] == live.numel():
            return torch.where(per_sample(live.to(v.device), v), v, o)
        return v

    out = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, tuple) and isinstance(o, tuple) and len(v) == len(o):
            out[k] = tuple(pick(a, b) for a, b in zip(v, o))
        else:
            out[k] = pick(v, o)
    return out


class Attack:
    """Base class of all attacks.

    Call with ``(model, x, target)``; pass ``eps=`` a number to override the threat model's
    radius, or a list of radii for a multi-eps call (returns one result per radius; for nested
    norm balls a sample broken at a smaller eps is reused at the larger ones).

    The base class owns ``__call__`` (bounds, bookkeeping, early stopping, verification, timing);
    an attack writes only its step (``run``, or ``init_state``/``step`` of an ``IterativeAttack``)
    against the :class:`AttackContext` protocol, and never overrides ``__call__``. Its constructor
    takes its own hyperparameters and passes ``**options`` (the engine's options below) on.

    Engine options (keyword-only, accepted by every attack):
        early_stop: drop samples from the working batch once they succeed (never changes a success flag).
        seed: seed of the engine's one random generator.
        eot: gradient draws averaged per step (Expectation over Transformation) for randomised
            models, >= 1; the final verdict is judged on the mean output of ``eot`` draws.
        eot_judge: how a randomised model's final verdict is judged: "mean" (on the mean output of
            ``eot`` draws) or "draw" (on one fresh draw, as AutoAttack's rand version does: a success
            must survive it).
        verify: re-judge successful points in one batch at the end (see ``_verify``); off only
            inside training loops.
        compile: run the model through ``torch.compile`` (True: TorchInductor; or a backend name),
            compiled once per model (``runtime.compiled_model``). Off by default: compiled kernels may
            round differently in the last bits, so results can differ from an uncompiled run's there.
    """

    name = "attack"
    default_objective: type[Objective] = CrossEntropy

    #: False for black-box attacks (they only query the model)
    needs_gradients: bool = True
    #: what a black-box attack needs to see: "score" (scores/logits) or "decision" (labels only)
    oracle_kind: str = "score"
    #: run an nn.Module model in eval mode during the attack (its mode is restored afterwards)
    eval_mode: bool = True

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *,
                 early_stop: bool = True, seed: int = 0, eot: int = 1, eot_judge: str = "mean", verify: bool = True,
                 compile: bool | str = False):
        if not all(hasattr(threat, a) for a in ("eps", "bounds", "with_eps", "apply")):
            raise InputError(f"threat must be a robustlab.ThreatModel (or a ParametricThreat), got {type(threat).__name__}")
        if isinstance(eot, bool) or not isinstance(eot, numbers.Integral) or eot < 1:
            raise InputError(f"eot must be an integer >= 1 (gradient draws per step), got {eot!r}")
        if eot_judge not in ("mean", "draw"):
            raise InputError(f"eot_judge must be 'mean' or 'draw', got {eot_judge!r}")
        self.threat = threat
        self.objective = get_objective(objective) if objective is not None else self.default_objective()
        self.early_stop = early_stop
        self.seed = seed
        self.eot, self.eot_judge, self.verify = int(eot), eot_judge, bool(verify)
        if not isinstance(compile, (bool, str)):
            raise InputError(f"compile must be True, False or a torch.compile backend name, got {compile!r}")
        self.compile = compile

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides Attack.__call__: the engine owns the call; write the "
                            "attack's step (run, or init_state/step) instead")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat.describe()}, {self.objective!r})"

    def __call__(self, model: Callable, x: torch.Tensor, target: Any,
                 eps: float | Sequence[float] | None = None, *, threat: Any = None) -> AttackResult | list[AttackResult]:
        """Attack `x`. ``eps`` overrides the radius (a list: one result per radius); ``threat``
        replaces the attack's threat model for this call (e.g. its ``subset`` for some samples)."""
        base = self.threat if threat is None else threat
        model = runtime.compiled_model(model, self.compile)  # off by default; compiled once per model
        if isinstance(eps, (list, tuple)):
            return self._multi_eps(model, x, target, [float(e) for e in eps], base)
        return self._call_one(model, x, target, base if eps is None else base.with_eps(eps))

    def _multi_eps(self, model, x, target, eps_list: list[float], base=None) -> list[AttackResult]:
        base = self.threat if base is None else base
        order = sorted(range(len(eps_list)), key=lambda i: eps_list[i])
        results: list[AttackResult | None] = [None] * len(eps_list)
        prev: AttackResult | None = None
        for i in order:
            threat = base.with_eps(eps_list[i])
            if prev is None or not threat.variable_is_point:
                res = self._call_one(model, x, target, threat)
            else:
                todo = (~prev.success).nonzero().flatten()
                res = AttackResult(
                    x_adv=prev.x_adv.clone(), success=prev.success.clone(), loss=prev.loss.clone(),
                    grad_calls=torch.zeros_like(prev.grad_calls), forward_calls=torch.zeros_like(prev.forward_calls),
                    time_s=0.0, attack=self.name, threat=threat, x=x,
                    status=list(prev.status) if prev.status is not None else None,
                )
                if todo.numel():
                    sub_threat = threat.subset(todo) if threat.has_per_sample_state else threat
                    sub = self._call_one(model, x[todo], index_target(target, todo), sub_threat)
                    for name in ("x_adv", "success", "loss", "grad_calls", "forward_calls"):
                        getattr(res, name)[todo] = getattr(sub, name)
                    if sub.status is not None:
                        res.status = res.status or ["success" if s else "done" for s in res.success.tolist()]
                        for j, i in enumerate(todo.tolist()):
                            res.status[i] = sub.status[j]
                    res.time_s = sub.time_s
            results[i] = res
            prev = res
        return results  # type: ignore[return-value]

    def _call_one(self, model, x, target, threat: ThreatModel) -> AttackResult:
        extremes = label_extremes(target)
        label_values = check_batch(x, target, threat.bounds, extra=[v.to(x.device) for v in extremes])
        _check_dtype(model, x)
        if threat.has_per_sample_state and hasattr(threat, "check_batch"):
            threat.check_batch(x)
        elif threat.has_per_sample_state and threat.mask.shape[0] != x.shape[0]:
            raise InputError(f"the threat's per-sample mask covers {threat.mask.shape[0]} samples but the batch has "
                             f"{x.shape[0]}; pass threat=threat.subset(index) for these samples")
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        ctx = AttackContext(model, x.detach(), target, threat, self.objective, gen)
        ctx.eot = max(1, int(self.eot))
        if label_values:
            ctx.label_range = (min(label_values[0::2]), max(label_values[1::2]))
        start = time.perf_counter()
        with eval_mode(getattr(model, "module", model) if self.eval_mode else None), ExitStack() as scope:
            ctx._call_scope = scope
            scope.enter_context(attack_steps(self.name))  # its steps in the heartbeat line (host counts)
            scope.enter_context(labels_checked(False))  # this call's labels are checked anew (calls may nest)
            try:
                if threat.eps > 0 or not self.needs_positive_eps:
                    self.run(ctx)
                else:
                    ctx.evaluate(ctx.x)
            except (OracleError, QueryBudgetExceeded) as e:  # keep what was found; say why the rest stopped
                ctx.read_host()  # a fault noted before the black box failed is the error to report
                self._stopped_early(ctx, e)
            n_success = int(ctx.read_host(ctx.success_full.sum())[0])  # the call's last read: faults, then this
            if self.verify and not ctx.is_oracle and (n_success or self.eot_judge == "draw"):
                self._verify(ctx, n_success)
        elapsed = time.perf_counter() - start
        status = ctx.status
        if status is not None:  # success is the final word (verification may have withdrawn one)
            status = ["success" if ok else ("done" if st == "success" else st)
                      for ok, st in zip(ctx.success_full.tolist(), status)]
        return AttackResult(
            x_adv=ctx.best_x, success=ctx.success_full, loss=ctx.best_loss,
            grad_calls=ctx.grad_calls, forward_calls=ctx.forward_calls,
            time_s=elapsed, attack=self.name, threat=threat, x=x.detach(), status=status,
        )

    def _stopped_early(self, ctx: AttackContext, e: Exception) -> None:
        """The status of each sample after the black box failed or ran out of budget (host reads: once a call)."""
        why = "oracle_budget" if isinstance(e, QueryBudgetExceeded) else "oracle_error"
        log.warning("%s stopped early (%s): %s; returning the best points found so far", self.name, why, e)
        status = list(ctx.status or ["done"] * ctx.x_full.shape[0])
        live = ctx.live.tolist()  # the samples the black box failed on; finished ones keep theirs
        active = {i for i, ok in zip(ctx.index.tolist(), live) if ok}
        success = ctx.success_full.tolist()
        for i, st in enumerate(status):
            if i in active and not success[i] and st not in ("no_start", "max_queries"):
                status[i] = why
        ctx.status = status

    def _verify(self, ctx: AttackContext, n_success: int) -> None:
        """Re-judge successful points in one pass: points found exactly on a decision boundary can
        flip with the batch composition (float summation order); success must hold at x_adv as returned."""
        if self.eot_judge == "draw":  # every point is judged on one fresh draw, successful or not
            idx = torch.arange(ctx.success_full.numel(), device=ctx.success_full.device)
            with torch.no_grad():
                out = ctx.model(ctx.best_x)
            ctx.success_full[idx] = ctx.objective.success(out, ctx.target_full).to(idx.device)
            return
        # the successful samples, in order, without a host read (their count is known)
        idx = (~ctx.success_full).to(torch.uint8).argsort(stable=True)[:n_success]
        with torch.no_grad():
            out = sum(ctx.model(ctx.best_x[idx]) for _ in range(ctx.eot)) / ctx.eot
        ok = ctx.objective.success(out, index_target(ctx.target_full, idx)).to(idx.device)
        ctx.success_full.index_copy_(0, idx, ok)  # withdraw those that did not verify
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %d boundary points did not verify", self.name, int((~ok).sum()))

    #: eps = 0 means "no perturbation": only the clean point is evaluated.
    needs_positive_eps = True

    def run(self, ctx: AttackContext) -> None:
        raise NotImplementedError


class IterativeAttack(Attack):
    """An attack made of ``restarts`` x ``steps`` updates of a per-sample state.

    Subclasses implement ``init_state(ctx, restart) -> dict`` and ``step(ctx, state, i) -> dict``;
    the state is a dict whose tensors have the active batch as first dimension (the engine
    subsets them when samples succeed). ``state["x_adv"]`` is the current iterate; after the last
    step the engine evaluates it once (forward only).

    Engine options besides :class:`Attack`'s (keyword-only):
        keep_last: return the last iterate instead of the best point (transfer attacks: with a
            randomised surrogate the "best" point is judged by one random draw; the last iterate
            transfers better).
        judge_final: with keep_last, evaluate the last iterate once more to report its success and
            loss; off for adversarial training, which needs only the point (success flags then
            describe earlier iterates).
        shrink_every: steps between two compactions of the working batch when samples stop (early
            stopping, budgets); each is one host read, a stall on a GPU (None: the attack's default).
            Never changes a result or a query count.
    """

    steps: int = 10
    restarts: int = 1

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *,
                 keep_last: bool = False, judge_final: bool = True, shrink_every: int | None = None, **options):
        super().__init__(threat, objective, **options)
        self.keep_last, self.judge_final = bool(keep_last), bool(judge_final)
        if shrink_every is not None:
            if isinstance(shrink_every, bool) or not isinstance(shrink_every, numbers.Integral) or shrink_every < 1:
                raise InputError(f"shrink_every must be an integer >= 1 (steps between compactions), got {shrink_every!r}")
            self.shrink_every = int(shrink_every)

    @classmethod
    def for_training(cls, *args, **kwargs) -> "IterativeAttack":
        """The training-time preset (adversarial training's inner maximisation): no early stopping,
        the last iterate is returned as is, with no extra forward pass to judge it and no final
        re-verification; success flags then describe earlier iterates. Same arguments as the
        constructor."""
        options = dict(early_stop=False, keep_last=True, judge_final=False, verify=False)
        return cls(*args, **{**options, **kwargs})

    def run(self, ctx: AttackContext) -> None:
        self._every = self.compaction_interval(ctx.x_full.device)
        attack_steps.plan(self.restarts * self.steps)
        for restart in range(self.restarts):
            if not self._begin_restart(ctx, restart):
                return
            state = self._after(ctx, self.init_state(ctx, restart), broken=False, compact=self._every == 1)
            if state is None:
                continue
            state = self._run_steps(ctx, state)
            if state is not None:
                self._finish(ctx, state)

    #: whether the final iterate still needs a forward pass to be judged
    evaluate_final = True
    #: per-sample query budget of a score-based attack (None: bounded by its steps alone)
    max_queries: int | None = None
    #: steps between two compactions of the working batch (one host read each; 1: after every step; None: by
    #: device, see ``compaction_interval``). In between, a sample that succeeds or spends its budget stops being
    #: live: its state is frozen and its passes are neither counted nor recorded, so success flags and query
    #: counts are those of compacting after every step (the points can differ in rounding: a row's output
    #: depends in its last bits on the batch size)
    shrink_every: int | None = None
    #: the compaction interval on an accelerator when ``shrink_every`` is None: 5 meets the 0.25 host reads per
    #: step of a 20-step attack (issue 21)
    ACCELERATOR_SHRINK_EVERY = 5

    def compaction_interval(self, device: torch.device) -> int:
        """``shrink_every``, or by device: 1 where a host read costs nothing (``runtime.host_reads_are_free``: the
        CPU), and compacting after every step keeps results bit-identical to earlier versions;
        ``ACCELERATOR_SHRINK_EVERY`` elsewhere."""
        if self.shrink_every is not None:
            return self.shrink_every
        return 1 if runtime.host_reads_are_free(device) else self.ACCELERATOR_SHRINK_EVERY

    @property
    def _drops_samples(self) -> bool:
        return self.early_stop or self.max_queries is not None

    def _runnable(self, ctx: AttackContext, broken: bool = True) -> torch.Tensor:
        """Bool over the active set, on the device: not yet successful (with early stopping and ``broken``) and
        with queries left (with ``max_queries``)."""
        keep = ctx.unbroken() if self.early_stop and broken else \
            torch.ones(ctx.n_active, dtype=torch.bool, device=ctx.index.device)
        if self.max_queries is not None:
            keep = keep & (ctx.queries_left(self.max_queries, oracle=False) > 0).to(keep.device)
        return keep

    def _begin_restart(self, ctx: AttackContext, restart: int) -> bool:
        """The working batch of a restart: every sample, or with early stopping the active ones still unbroken;
        compacted with one host read except on the first restart of an attack that compacts every few steps.
        False when no sample is left."""
        if not self.early_stop:
            ctx.set_active(torch.arange(ctx.x_full.shape[0], device=ctx.x_full.device))
        ctx.set_live(self._runnable(ctx) if self._drops_samples else None)
        if self._drops_samples and (restart > 0 or self._every == 1):
            self._compact(ctx, {})
        return ctx.n_active > 0

    def _run_steps(self, ctx: AttackContext, state: dict) -> dict | None:
        """The steps of one restart; the state of samples no longer live is frozen. None when none is left."""
        frozen = self._drops_samples and self._every > 1
        for i in range(self.steps):
            attack_steps.step()
            new = self.step(ctx, state, i)
            state = _freeze(state, new, ctx.live) if frozen else new
            compact = (i + 1) % self._every == 0 and i + 1 < self.steps
            state = self._after(ctx, state, broken=True, compact=compact)
            if state is None:
                return None
        return state

    def _after(self, ctx: AttackContext, state: dict, broken: bool, compact: bool) -> dict | None:
        """After a step (``broken``: successes stop samples) or the start of a restart: update which samples are
        live, on the device; with ``compact``, drop the others from the working batch (one host read). None
        when no sample is left."""
        if not (self.early_stop and broken or self.max_queries is not None):
            return state
        ctx.set_live(ctx.live & self._runnable(ctx, broken))
        if compact:
            state = self._compact(ctx, state)
        return state if ctx.n_active else None

    def _compact(self, ctx: AttackContext, state: dict) -> dict:
        """Drop the samples no longer live from the working batch and the state; one host read (their count)."""
        live = ctx.live
        n_live, n = int(ctx.read_host(live.sum())[0]), ctx.n_active
        if n_live == n:
            return state
        keep = (~live).to(torch.uint8).argsort(stable=True)[:n_live]  # the live positions, in order
        ctx.shrink(keep)
        return _subset_state(state, keep, n)

    def _finish(self, ctx: AttackContext, state: dict) -> None:
        """The last iterate: returned as is (``keep_last``, judged with ``judge_final``) or evaluated once; for
        the live samples only."""
        live = ctx.live
        if self.keep_last:
            ctx.write_rows(ctx.index, live, ctx.point(state["x_adv"]))
            if self.judge_final:
                loss, succ, _ = ctx.evaluate(state["x_adv"])
                ctx.best_loss.index_copy_(0, ctx.index, torch.where(
                    live, loss.to(ctx.best_loss.dtype), ctx.best_loss[ctx.index]))
                ctx.success_full.index_copy_(0, ctx.index, torch.where(
                    live, succ.to(ctx.success_full.device), ctx.success_full[ctx.index]))
        elif self.evaluate_final:
            ctx.evaluate(state["x_adv"])

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        raise NotImplementedError

    def step(self, ctx: AttackContext, state: dict, i: int) -> dict:
        raise NotImplementedError


def check_query_budget(value, attack: str, minimum: int = 1, why: str = "", name: str = "max_queries") -> int:
    """``value`` as an int, or an InputError naming the minimum: budgets are positive, and at least one
    step of the attack (``why`` says what that step costs). The message names the CLI flag too."""
    flag = "--" + name.replace("_", "-")
    name = f"{name} ({flag})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value != int(value) \
            or value < 1:
        raise InputError(f"{attack}'s {name} must be a positive integer (>= 1), got {value!r}")
    if value < minimum:
        raise InputError(f"{attack}'s {name} must be at least {minimum} ({why}), got {value!r}")
    return int(value)


def finite_or_raise(value: float, name: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
