"""Evaluation at scale: the points of a robustness curve sharded across torch.distributed ranks
(``robustlab launch --nproc N -- evaluate ...``), gathered into the report a single process makes.

Points are dealt out in whole batches (batch k to rank k mod N) and every rank evaluates its batches
with exactly the composition a single process gives them; attacks are seeded per call and draw their
random numbers per batch, so the gathered per-point results equal a single-process run on the same
seed. Each rank keeps its own resumable cells (``cells_dir/rank<r>``), so a killed run resumes per shard.

On GPUs (NCCL) every rank's own GPU is current (``distributed.init_from_env`` sets it), which
``all_gather_object`` uses for its buffers; the gathered payloads hold CPU tensors only, so a rank unpickles
no tensor onto another rank's GPU and the gathered report is the same on any device.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ..runtime import world
from ..targets import index_target
from ..threat import ThreatModel
from ..data.batches import materialize
from .suite import EvaluationReport, RobustnessCurve, build_suite, cascade_check, robustness_curve

__all__ = ["sharded_robustness_curve", "to_cpu", "world"]


def to_cpu(value: Any) -> Any:
    """`value` with every tensor (in nested lists, tuples and dicts) moved to the CPU, for pickling."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_cpu(v) for v in value)
    return value


def sharded_robustness_curve(model, data: Any, threat: ThreatModel, eps: Sequence[float], attacks="standard", *,
                             n: int | None = None, batch_size: int = 500, sanity: str | None = "cheap",
                             cells_dir: str | Path | None = None, **kwargs) -> RobustnessCurve:
    """``robustness_curve`` on every rank's share of the points, gathered (on every rank) into one
    curve identical to a single-process run; one process simply runs ``robustness_curve``."""
    rank, size = world()
    if size == 1:
        return robustness_curve(model, data, threat, eps, attacks, n=n, batch_size=batch_size, sanity=sanity,
                                cells_dir=cells_dir, **kwargs)
    x, target = materialize(data, n, batch_size)
    total = x.shape[0]
    batches = [torch.arange(i, min(i + batch_size, total)) for i in range(0, total, batch_size)]
    mine = [b for k, b in enumerate(batches) if k % size == rank]
    idx = torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)
    start = time.perf_counter()
    progress = kwargs.pop("progress", True) and rank == 0
    if idx.numel():
        local = robustness_curve(model, (x[idx], index_target(target, idx)), threat, eps, attacks, batch_size=batch_size,
                                 sanity=None, progress=progress,
                                 cells_dir=None if cells_dir is None else Path(cells_dir) / f"rank{rank}", **kwargs)
        payload = to_cpu([(r.clean_correct, r.robust_correct, r.broken_by, r.attack_time_s, r.metrics, r.examples,
                           r.attack_names) for r in local.reports])
    else:
        payload = None
    gathered: list = [None] * size
    dist.all_gather_object(gathered, (idx, payload))
    eps_sorted = sorted(float(e) for e in eps)
    reports = []
    objective = kwargs.get("objective")
    for j, e in enumerate(eps_sorted):
        clean = torch.zeros(total, dtype=torch.bool)
        robust = torch.zeros(total, dtype=torch.bool)
        broken: list = [None] * total
        times: dict[str, float] = {}
        sums: dict[str, float] = {}
        examples = None
        names: list[str] = []
        for r_idx, r_payload in gathered:
            if r_payload is None:
                continue
            c, rb, bb, t, m, ex, names = r_payload[j]
            clean[r_idx], robust[r_idx] = c, rb
            for p, b in zip(r_idx.tolist(), bb):
                broken[p] = b
            for k, v in t.items():
                times[k] = times.get(k, 0.0) + v
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v * len(r_idx)
            if examples is None and ex and ex.get("x") is not None and len(ex["x"]):
                examples = ex
        t_e = threat.with_eps(e)
        report = EvaluationReport(t_e, clean, robust, broken, names, times, time.perf_counter() - start,
                                  examples or {}, None, {k: v / total for k, v in sums.items()},
                                  getattr(objective, "name", "ce"))
        if sanity and e > 0 and rank == 0:
            from .sanity import sanity_checks

            report.sanity = sanity_checks(model, (x, target), t_e, sanity, n=min(200, total), objective=objective)
            suite = build_suite(attacks, t_e, seed=kwargs.get("seed", 0), objective=objective)
            report.sanity.checks.append(cascade_check(suite, names, broken))
        reports.append(report)
    return RobustnessCurve(eps_sorted, reports)
