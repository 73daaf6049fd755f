"""Evaluation of a classifier's robustness: a cascade of attacks, per-sample worst case.

Each attack in the cascade runs only on the points still correctly classified and unbroken;
a point is robust only if it is correctly classified and every attack failed on it. Robust
accuracy comes with a 95% Wilson confidence interval over the evaluated points.

Every evaluation runs in float32: autocast is off inside ``evaluate`` (and so ``robustness_curve``)
even when the caller trains under mixed precision, so no reported number comes from a bf16/fp16 pass.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..progress import progress_bar

from ..attacks import APGD, APGDDLR, APGDT, FABT, Attack, Square, create_attack
from ..targets import concat_targets, index_target, target_to
from ..argtypes import name_list
from ..data.batches import first_batches, materialize
from ..runtime import content_digest, device_of, eval_mode, model_digest, plain_settings
from ..errors import InputError, check_batch, check_logits, check_positive_int
from ..cells import Cells
from ..objectives import CrossEntropy, Objective
from ..threat import ThreatModel

log = logging.getLogger(__name__)

SUITES = ("standard", "rand", "rand-draw", "fast")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _is_classification(objective: Objective) -> bool:
    return getattr(objective, "task", None) == "classification"


def build_suite(attacks: str | Sequence[Attack | str], threat: ThreatModel, seed: int = 0,
                objective: Objective | None = None) -> list[Attack]:
    """The cascade for a suite name, or a list of attacks / attack names.

    For classification objectives (the default):
    - "standard": the AutoAttack protocol: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each
      100 iterations, then Square (5,000 queries, p_init 0.8). L1 (AutoAttack-L1, Croce & Hein 2021):
      l1-APGD-CE with 5 restarts and APGD-T with 5 targets, both with the 3-2-1 x eps schedule, FAB-T, Square-L1.
    - "rand": for randomised defences: APGD-CE and APGD-DLR with EOT over 20 draws per step; a point
      counts as broken when the mean output of 20 draws is wrong at it. "rand-draw" judges each
      success on one fresh draw instead, as AutoAttack does (per point the two can differ; the mean
      judgement is the more stable, the fresh draw the one a deployed randomised model faces).
    - "fast": APGD-CE and APGD-T (3 targets), 20 iterations: a quick look, not a trustworthy number.
    For any other task's objective (regression, sequences) the suites attack that objective:
    "standard" = APGD (100 steps) then Square (5,000 queries; linf/l2 pixel threats), "rand" = APGD
    with EOT over 20 draws, "fast" = APGD with 20 steps. Named attacks get the task's objective.
    """
    generic = objective is not None and not _is_classification(objective)
    pixel = threat.variable_is_point and threat.norm in ("linf", "l2", "l1")
    if isinstance(attacks, str) and attacks in SUITES and generic:
        if attacks == "standard":
            suite = [APGD(threat, objective, steps=100, seed=seed)]
            if pixel:
                suite.append(Square(threat, objective, max_queries=5000, p_init=0.8, seed=seed))
            return suite
        if attacks in ("rand", "rand-draw"):
            judge = "draw" if attacks == "rand-draw" else "mean"
            return [APGD(threat, objective, steps=100, seed=seed, eot=20, eot_judge=judge)]
        return [APGD(threat, objective, steps=20, seed=seed)]
    if isinstance(attacks, str):
        if attacks == "standard":
            l1 = threat.norm == "l1"  # AutoAttack-L1: 5 restarts of l1-APGD (3-2-1 eps schedule), 5 targets
            suite = [APGD(threat, "ce", steps=100, restarts=5 if l1 else 1, seed=seed),
                     APGDT(threat, n_targets=5 if l1 else 9, steps=100, seed=seed),
                     FABT(threat, n_targets=9, steps=100, seed=seed)]
            if threat.variable_is_point:
                suite.append(Square(threat, max_queries=5000, p_init=0.8, seed=seed))
            return suite
        if attacks in ("rand", "rand-draw"):
            rand = dict(eot=20, eot_judge="draw" if attacks == "rand-draw" else "mean")
            return [APGD(threat, "ce", steps=100, seed=seed, **rand), APGDDLR(threat, steps=100, seed=seed, **rand)]
        if attacks == "fast":
            return [APGD(threat, "ce", steps=20, seed=seed), APGDT(threat, n_targets=3, steps=20, seed=seed)]
        attacks = name_list(attacks, allow_empty=True)
    if not attacks:
        raise InputError("the attack list is empty: robust accuracy would equal clean accuracy; name at least one "
                         "attack (e.g. 'apgd-ce,square') or a suite: 'standard', 'rand', 'fast'")
    extra = {"objective": objective} if objective is not None and not _is_classification(objective) else {}
    return [a if isinstance(a, Attack) else create_attack(a, threat, seed=seed, **extra) for a in attacks]


def classification_metrics(output: torch.Tensor, target: Any) -> dict[str, torch.Tensor]:
    """Per-sample metrics of a classifier: accuracy (1 if argmax is the label)."""
    y = target[0] if isinstance(target, (tuple, list)) else target
    return {"accuracy": (output.argmax(1) == y).float()}


@dataclass
class EvaluationReport:
    """Per-sample outcome of an evaluation and its summary numbers.

    ``clean_correct``: the objective does not succeed on the clean point (for a classifier: it is
    classified correctly). ``robust_correct``: clean-correct and no attack of the cascade succeeded.
    ``metrics``: the task's metrics averaged over the points, clean and at each point's worst case
    (``adversarial_<name>``: the successful point if any, else the highest-loss point found).
    """

    threat: ThreatModel
    clean_correct: torch.Tensor
    robust_correct: torch.Tensor
    broken_by: list[str | None]
    attack_names: list[str]
    attack_time_s: dict[str, float]
    time_s: float
    examples: dict[str, Any] = field(default_factory=dict, repr=False)
    sanity: Any = None  # SanityReport of the gradient-masking checks, when run
    metrics: dict[str, float] = field(default_factory=dict)
    objective: str = "ce"
    x_adv: torch.Tensor | None = field(default=None, repr=False)  # each point's worst case (keep_points=True)

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy_ci(self) -> tuple[float, float]:
        return wilson_interval(int(self.robust_correct.sum()), self.n)

    @property
    def per_attack(self) -> dict[str, int]:
        """Number of points each attack broke first (points already misclassified count as 'clean')."""
        counts = {name: 0 for name in ["clean", *self.attack_names]}
        for b in self.broken_by:
            if b is not None:
                counts[b] = counts.get(b, 0) + 1
        return counts

    def to_dict(self) -> dict:
        lo, hi = self.robust_accuracy_ci
        return {
            "threat": self.threat.describe(), "norm": self.threat.norm, "eps": self.threat.eps,
            "objective": self.objective, "n": self.n, "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy, "robust_accuracy_ci95": [lo, hi], "per_attack": self.per_attack,
            "metrics": self.metrics, "attack_time_s": self.attack_time_s, "time_s": self.time_s,
            "sanity": self.sanity.to_dict() if self.sanity is not None else None,
        }

    def __str__(self) -> str:
        lo, hi = self.robust_accuracy_ci
        extra = "".join(f", {k} {v:.4g}" for k, v in self.metrics.items() if k != "clean_accuracy")
        return (f"{self.threat.describe()}: clean {self.clean_accuracy:.2%}, robust {self.robust_accuracy:.2%} "
                f"[{lo:.2%}, {hi:.2%}] on {self.n} points ({self.time_s:.1f}s){extra}")


def _in_float32(evaluate_fn: Callable) -> Callable:
    """`evaluate_fn(model, ...)` with autocast off on the CPU and on the model's device, whatever
    autocast its caller runs under: the final judgement (clean outputs, every attack, the metrics) is float32."""
    @functools.wraps(evaluate_fn)
    def wrapper(model, *args, **kwargs):
        with torch.autocast("cpu", enabled=False), torch.autocast(device_of(model).type, enabled=False):
            return evaluate_fn(model, *args, **kwargs)

    return wrapper


@_in_float32
def evaluate(model, data, threat: ThreatModel, attacks: str | Sequence[Attack | str] = "standard", *,
             objective: Objective | None = None, metrics: Callable | None = None,
             batch_size: int = 500, n: int | None = None, seed: int = 0, n_examples: int = 8,
             sanity: str | None = "cheap", already_broken: torch.Tensor | None = None,
             progress: bool = True, keep_points: bool = False, cells_dir: str | Path | None = None,
             start_points: torch.Tensor | None = None) -> EvaluationReport:
    """Robustness of `model` on `data` under `threat`, by a cascade of attacks, for any task.

    Args:
        data: an (x, target) pair, a robustlab Dataset, a DataLoader or any iterable of batches.
        attacks: "standard" (for classifiers the AutoAttack protocol: APGD-CE, APGD-T, FAB-T, Square),
            "rand" (EOT over 20 draws, for randomised defences), "fast", a comma-separated string or a
            list of names / Attack objects (see ``build_suite``).
        objective: the task's objective (default: cross-entropy, i.e. classification). A point is
            clean-correct when ``objective.success`` is False at it, and robust when no attack makes
            it True.
        metrics: ``metrics(output, target) -> dict[str, Tensor[B]]`` per-sample task metrics
            (default: classification accuracy), reported clean and at each point's worst case.
        n: evaluate at most the first n points.
        sanity: "cheap" (default) runs the cheap gradient-masking checks on the first 200 points and
            flags points that only a black-box attack of the cascade broke; "all" runs every check;
            None runs none. Verdicts land in ``report.sanity``.
        already_broken: bool per point, in the order of `data`: points known to be broken (at a
            smaller eps of nested balls); they are not attacked again.
        keep_points: keep every point's worst case in ``report.x_adv`` (on the CPU).
        start_points: per point, in the order of `data`, the adversarial points already found for the
            ``already_broken`` ones (the task metrics are then measured there, not at the clean point).
        cells_dir: resumable evaluation: after every (attack, batch) cell the batch's state is written
            there atomically; a rerun with the same settings continues after the last finished cell
            (attacks are seeded per call, so the result equals an uninterrupted run). A cell is reused
            only for the same model (architecture and weights, see ``runtime.model_digest``), the same
            points and targets, and the same threat, cascade, seed and batch size; any other is
            recomputed, saying so in one log line.
    """
    check_positive_int(batch_size, "batch_size")
    run = _Evaluation(model, threat, attacks, objective=objective, metrics=metrics, seed=seed, batch_size=batch_size,
                      n_examples=n_examples, already_broken=already_broken, start_points=start_points,
                      progress=progress, keep_points=keep_points, cells_dir=cells_dir)
    with eval_mode(model), progress_bar(total=_points_known(data, n), desc=f"evaluate {threat.describe()}", unit="pt", leave=False,
                                        disable=not progress) as bar:
        for xb, yb in first_batches(data, n, batch_size):
            run.batch(xb, yb)
            bar.update(xb.shape[0])
            bar.set_postfix_str(run.progress_note())  # counts on the host already: no read from the device
    report = run.report(data, sanity)
    log.info("%s", report)
    return report


def _points_known(data, n: int | None) -> int | None:
    """How many points ``evaluate`` reads, where known without reading any (the bar's total, for its ETA): `n`,
    capped by the size of an (x, y) pair or of a data set; for a loader, `n` alone."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        size = data[0].shape[0]
    elif callable(getattr(data, "batches", None)) and hasattr(data, "__len__"):
        size = len(data)
    else:
        return n
    return size if n is None else min(n, size)


@dataclass
class _BatchState:
    """One batch along the cascade: which points are still robust, which an attack broke here (and
    which attack: ``broken_by``), each point's worst case so far (a successful point, else the
    highest loss found) and the seconds each attack took on the batch. ``done``: attacks finished."""

    robust: torch.Tensor
    broken_here: torch.Tensor
    x_worst: torch.Tensor
    worst_loss: torch.Tensor
    broken_by: list[str | None]
    times: dict[str, float]
    done: int = 0

    def to_cell(self) -> dict:
        return {"done": self.done, "robust": self.robust.cpu(),
                "broken_here": self.broken_here.cpu(), "x_worst": self.x_worst.cpu(),
                "worst_loss": self.worst_loss.cpu(), "broken_by": list(self.broken_by), "attack_time": self.times}

    @classmethod
    def from_cell(cls, state: dict, device) -> "_BatchState":
        return cls(state["robust"].to(device), state["broken_here"].to(device), state["x_worst"].to(device),
                   state["worst_loss"].to(device), list(state["broken_by"]), dict(state["attack_time"]), state["done"])


class _Evaluation:
    """The running totals of ``evaluate``: batch by batch, the clean check, the attack cascade on
    the points still robust (resumable per (eps, batch) cell), the task metrics and the examples."""

    def __init__(self, model, threat: ThreatModel, attacks, *, objective, metrics, seed: int, batch_size: int,
                 n_examples: int, already_broken, start_points, progress: bool, keep_points: bool, cells_dir):
        self.model, self.threat, self.seed, self.batch_size = model, threat, seed, batch_size
        self.objective = objective if objective is not None else CrossEntropy()
        self.metrics = metrics if metrics is not None else (
            classification_metrics if _is_classification(self.objective) else None)
        self.suite = build_suite(attacks, threat, seed=seed, objective=self.objective)
        names = [a.name for a in self.suite]
        self.names = names if len(set(names)) == len(names) else [f"{nm}#{i}" for i, nm in enumerate(names)]
        self.n_examples, self.already_broken, self.start_points = n_examples, already_broken, start_points
        self.progress, self.keep_points = progress, keep_points
        # resumable: one torch cell per (eps, batch), valid only for the same model, points and settings
        self.cells = None if cells_dir is None else Cells(cells_dir, payload="torch")
        self.identity = None if cells_dir is None else {
            "settings": [threat.describe(), repr(float(threat.eps)), list(self.names), int(seed), int(batch_size),
                         plain_settings(self.objective), [plain_settings(a) for a in self.suite]],
            "weights": model_digest(model)}  # once per call: architecture and every weight
        self.device = device_of(model)
        self.clean_all, self.robust_all, self.broken_by, self.kept = [], [], [], []
        self.sums: dict[str, float] = {}
        self.attack_time = {nm: 0.0 for nm in self.names}
        self.examples: dict[str, list] = {"x": [], "x_adv": [], "y": [], "pred_adv": []}
        self.seen = 0
        self.broken = 0  # points the attacks broke so far (host counts the cascade reads anyway)
        self.start = time.perf_counter()

    def batch(self, xb, yb) -> None:
        """Evaluate one batch: clean outputs, the cascade (from its cell if resumed), metrics, totals."""
        fingerprint = self._fingerprint(xb, yb)
        xb, yb = xb.to(self.device), target_to(yb, self.device)
        check_batch(xb, yb, self.threat.bounds)
        with torch.no_grad():
            out_clean = self.model(xb)
        if self.metrics is classification_metrics:
            check_logits(out_clean)
        correct = ~self.objective.success(out_clean, yb).to(self.device)
        cell = f"eps{self.threat.eps:g}-{self.threat.norm}-points{self.seen:06d}-{self.seen + xb.shape[0]:06d}"
        state = self._resume(cell, fingerprint) or self._start_batch(xb, correct)
        if self.threat.eps > 0:
            self._cascade(xb, yb, state, cell, fingerprint)
        self._record(xb, yb, out_clean, correct, state)

    def _fingerprint(self, xb, yb) -> dict | None:
        """What this batch's cell is valid for: the settings, the model and the batch's data (its inputs,
        targets and the points already broken at a smaller eps). None without cells."""
        if self.cells is None:
            return None
        skip = None if self.already_broken is None else self.already_broken[self.seen:self.seen + xb.shape[0]]
        return {**self.identity, "data": content_digest(xb, yb, skip)}

    def _start_batch(self, xb, correct) -> _BatchState:
        """The state before any attack: robust = clean-correct and not broken at a smaller eps."""
        nb, seen = xb.shape[0], self.seen
        robust = correct.clone()
        broken: list[str | None] = ["clean" if not c else None for c in correct.tolist()]
        x_worst = xb.clone()
        if self.already_broken is not None:
            skip = self.already_broken[seen:seen + nb].to(self.device)
            robust &= ~skip
            for i, sk in enumerate(skip.tolist()):
                if sk and broken[i] is None:
                    broken[i] = "smaller-eps"
            if self.start_points is not None:
                x_worst[skip] = self.start_points[seen:seen + nb].to(device=self.device, dtype=xb.dtype)[skip]
        worst_loss = torch.full((nb,), float("-inf"), device=self.device)
        return _BatchState(robust, torch.zeros_like(robust), x_worst, worst_loss, broken, {nm: 0.0 for nm in self.names})

    def _resume(self, cell: str, fingerprint: dict | None) -> _BatchState | None:
        """The batch's state from its cell (the attack seconds it records count again), or None."""
        saved = self.cells.load(cell, fingerprint) if self.cells is not None else None
        if saved is None:
            return None
        state = _BatchState.from_cell(saved, self.device)
        self.broken += int(saved["broken_here"].sum())  # the saved copy is on the host
        for k, v in state.times.items():
            self.attack_time[k] += v
        return state

    def _cascade(self, xb, yb, state: _BatchState, cell: str, fingerprint: dict | None) -> None:
        """Each attack in turn on the points still robust; the cell is saved after each attack."""
        seen, nb = self.seen, xb.shape[0]
        batch_threat = self.threat.subset(torch.arange(seen, seen + nb)) if self.threat.has_per_sample_state else self.threat
        with progress_bar(total=len(self.suite), initial=state.done, desc=f"cascade on points {seen}-{seen + nb}",
                          unit="attack", leave=False, disable=not self.progress) as bar:
            for a_index, (attack, name) in enumerate(zip(self.suite, self.names)):
                if a_index < state.done:
                    continue
                todo = state.robust.nonzero().flatten()
                if todo.numel() == 0:
                    break
                bar.set_postfix_str(f"{name} on {todo.numel()} points, {self.broken} broken so far")
                self._attack(attack, name, xb, yb, todo, batch_threat, state)
                bar.update(1)
                state.done = a_index + 1
                if self.cells is not None:
                    self.cells.save(cell, state.to_cell(), fingerprint)

    def _attack(self, attack: Attack, name: str, xb, yb, todo, batch_threat: ThreatModel, state: _BatchState) -> None:
        """One attack on the points `todo`: the points it breaks lose robustness, worst cases update."""
        t0 = time.perf_counter()
        sub_threat = batch_threat.subset(todo) if batch_threat.has_per_sample_state else batch_threat
        res = attack(self.model, xb[todo], index_target(yb, todo), threat=sub_threat.with_eps(self.threat.eps))
        seconds = time.perf_counter() - t0
        self.attack_time[name] += seconds
        state.times[name] += seconds
        hit = todo[res.success]
        state.robust[hit] = False
        state.broken_here[hit] = True
        # each point's worst case: a successful point, else the highest loss found so far
        sel = res.success.to(self.device) | (res.loss.to(state.worst_loss) > state.worst_loss[todo])
        state.x_worst[todo[sel]] = res.x_adv[sel].to(state.x_worst.dtype)
        state.worst_loss[todo[sel]] = res.loss[sel].to(state.worst_loss)
        for i in hit.tolist():
            state.broken_by[i] = name
        self.broken += hit.numel()
        if self.progress:
            log.info("%s, points %d-%d: %s on %d points broke %d, robust %.4f (%.1fs)", self.threat.describe(),
                     self.seen, self.seen + xb.shape[0], name, todo.numel(), hit.numel(),
                     float(state.robust.float().mean()), seconds)

    def progress_note(self) -> str:
        """The evaluation bar's postfix: points broken by the attacks so far and the robust accuracy over the
        points done (both from host copies: no device read)."""
        robust = sum(int(r.sum()) for r in self.robust_all)
        return f"{self.broken} broken, robust {robust / max(self.seen, 1):.3f}"

    def _record(self, xb, yb, out_clean, correct, state: _BatchState) -> None:
        """Add the batch to the totals: metric sums (clean and at the worst cases), outcomes, examples."""
        if self.metrics is not None:
            with torch.no_grad():
                out_adv = self.model(state.x_worst) if self.threat.eps > 0 else out_clean
            for prefix, out in (("clean", out_clean), ("adversarial", out_adv)):
                for k, v in self.metrics(out, yb).items():
                    key = f"{prefix}_{k}"
                    self.sums[key] = self.sums.get(key, 0.0) + float(torch.as_tensor(v, dtype=torch.float64).sum())
        if self.keep_points:
            self.kept.append(state.x_worst.cpu())
        self.clean_all.append(correct.cpu())
        self.robust_all.append(state.robust.cpu())
        self.broken_by.extend(state.broken_by)
        _collect_examples(self.model, self.examples, xb, state.x_worst, yb, state.broken_here, self.n_examples)
        self.seen += xb.shape[0]

    def report(self, data, sanity: str | None) -> EvaluationReport:
        """The report over every batch, with the gradient-masking checks when asked for."""
        if self.seen == 0:
            raise InputError("no data to evaluate")
        ex = {k: _cat(v)[:self.n_examples] if v else torch.empty(0) for k, v in self.examples.items()}
        checks = None
        if sanity and self.threat.eps > 0:
            from .sanity import sanity_checks

            checks = sanity_checks(self.model, data, self.threat, sanity, n=min(200, self.seen), objective=self.objective)
            checks.checks.append(cascade_check(self.suite, self.names, self.broken_by))
        return EvaluationReport(self.threat, torch.cat(self.clean_all), torch.cat(self.robust_all), self.broken_by,
                                self.names, self.attack_time, time.perf_counter() - self.start, ex, checks,
                                {k: round(v / self.seen, 6) for k, v in self.sums.items()},
                                getattr(self.objective, "name", "objective"),
                                torch.cat(self.kept) if self.kept else None)


def _cat(parts: list):
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else concat_targets(parts)


def cascade_check(suite, names, broken_by):
    """Did a black-box attack of the cascade break points that every white-box attack before it missed?"""
    from .checks import Check

    counts = {nm: sum(1 for b in broken_by if b == nm) for nm in names}
    black = [nm for a, nm in zip(suite, names) if getattr(a, "needs_gradients", True) is False]
    by_black = sum(counts[nm] for nm in black)
    ev = {"per_attack": counts, "black_box_attacks": black}
    if not black:
        return Check.not_run("cascade_black_box", "no black-box attack in the cascade", ev)
    if by_black > max(2, 0.005 * len(broken_by)):
        return Check("cascade_black_box", "warn",
                     f"{by_black} points were broken only by black-box attacks ({', '.join(black)}) after the "
                     "gradient-based ones failed: a sign of masked gradients", ev)
    return Check("cascade_black_box", "pass",
                 f"black-box attacks broke {by_black} points the gradient attacks missed (at most 2 or 0.5% tolerated)", ev)


def _collect_examples(model, examples, xb, x_adv, yb, broken, k):
    have = sum(t.shape[0] for t in examples["x"])
    if have >= k or not broken.any():
        return
    idx = broken.nonzero().flatten()[: k - have]
    with torch.no_grad():
        out = model(x_adv[idx])
    pred = out.argmax(1) if out.dim() == 2 else out
    examples["x"].append(xb[idx].cpu())
    examples["x_adv"].append(x_adv[idx].cpu())
    examples["y"].append(target_to(index_target(yb, idx), torch.device("cpu")))
    examples["pred_adv"].append(pred.cpu())


@dataclass
class RobustnessCurve:
    eps: list[float]
    reports: list[EvaluationReport]

    @property
    def robust_accuracy(self) -> list[float]:
        return [r.robust_accuracy for r in self.reports]

    def to_dict(self) -> dict:
        return {"eps": self.eps, "reports": [r.to_dict() for r in self.reports]}


def robustness_curve(model, data, threat: ThreatModel, eps: Sequence[float],
                     attacks: str | Sequence[Attack | str] = "standard", *, n: int | None = None,
                     batch_size: int = 500, **kwargs) -> RobustnessCurve:
    """Robust accuracy over a list of eps, for any task (``objective=``, ``metrics=`` as in
    ``evaluate``). The data are read once in a fixed order (a shuffled loader is safe). The balls
    are nested, so a point broken at a smaller eps counts as broken at every larger one (its
    adversarial example is still feasible) and larger eps only attack the survivors."""
    x, target = materialize(data, n, batch_size)
    eps_sorted = sorted(float(e) for e in eps)
    reports: list[EvaluationReport] = []
    broken, points = None, None
    keep = kwargs.pop("keep_points", False)
    progress = kwargs.get("progress", True)
    for i, e in enumerate(progress_bar(eps_sorted, desc="robustness curve", unit="eps", leave=False,
                                       disable=not progress)):
        if progress:
            log.info("robustness curve: eps %g (%d of %d)", e, i + 1, len(eps_sorted))
        rep = evaluate(model, (x, target), threat.with_eps(e), attacks, already_broken=broken, start_points=points,
                       batch_size=batch_size, keep_points=True, **kwargs)
        reports.append(rep)
        broken, points = ~rep.robust_correct, rep.x_adv  # a point broken here stays broken, at its adversarial point
    if not keep:
        for rep in reports:
            rep.x_adv = None
    return RobustnessCurve(eps_sorted, reports)
