"""Black-box access with query accounting: score oracles and decision oracles.

An oracle wraps a function of a batch (float in [0, 1], or uint8 for real systems) and

- counts queries, in total and per sample when the caller passes sample ids (the attack engine does);
- enforces a per-sample budget exactly: a batch that would take a sample past it is refused whole,
  before any row is sent or charged (``QueryBudgetExceeded`` names the samples);
- memoises identical queries (a repeated input costs nothing) and checks, on the first repeats, that
  the target is deterministic (warns and stops memoising if it is not);
- batches large queries, and optionally records every input and output so a result can be replayed;
- retries a flaky black box (``retries=3, backoff=0.1``: waits 0.1, 0.2, 0.4 s between tries) and
  raises ``OracleError`` (with the black box's own error attached) when it still fails. Attacks
  catch ``OracleError`` and ``QueryBudgetExceeded`` and return the best points found so far, with a
  per-sample ``status`` saying why each stopped.

A differentiable model converts to either kind: ``ScoreOracle.from_model(model)``,
``DecisionOracle.from_model(model)``.
"""
from __future__ import annotations

import hashlib
import logging
import time
import warnings
from typing import Any, Callable, Sequence

import torch

from .errors import InputError, RobustlabError


class QueryBudgetExceeded(RobustlabError, RuntimeError):
    """A sample asked for more queries than the oracle's per-sample budget."""


class OracleError(RobustlabError, RuntimeError):
    """The black box raised (after the oracle's retries); ``__cause__`` is its own exception."""


class NonDeterministicOracleWarning(UserWarning):
    pass


log = logging.getLogger(__name__)


class Oracle:
    """Base class; see the module docstring. ``fn`` maps a batch to outputs of the same length."""

    kind = "oracle"

    def __init__(self, fn: Callable, *, budget: int | None = None, batch_size: int | None = 256,
                 memoize: bool = True, record: bool = False, input_dtype: str = "float",
                 check_determinism: int = 8, retries: int = 0, backoff: float = 0.0):
        if budget is not None and budget < 1:
            raise InputError(f"the query budget must be >= 1 per sample, got {budget}")
        if retries < 0 or backoff < 0:
            raise InputError(f"retries and backoff must be >= 0, got retries={retries}, backoff={backoff}")
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.failed_calls = 0  # calls of the black box that raised (retried or not)
        if input_dtype not in ("float", "uint8"):
            raise InputError("input_dtype must be 'float' (values in [0, 1]) or 'uint8' (0..255)")
        self.fn = fn
        self.budget = budget
        self.batch_size = batch_size
        self.memoize = memoize
        self.record = record
        self.input_dtype = input_dtype
        self.total_queries = 0
        self.per_sample: dict[int, int] = {}
        self.cache_hits = 0
        self.verification_queries = 0  # re-queries of cached inputs that check determinism (not charged to samples)
        self.log: list[tuple[torch.Tensor, Any]] = []
        self._cache: dict[bytes, Any] = {}
        self._determinism_checks_left = check_determinism
        self.deterministic: bool | None = None

    # ----- conversions -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Callable, **kwargs) -> "Oracle":
        raise NotImplementedError

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_dtype == "uint8":
            return (x.detach() * 255).round().clamp(0, 255).to(torch.uint8)
        return x.detach()

    # ----- bookkeeping -------------------------------------------------------------------
    def queries_of(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return torch.tensor([self.per_sample.get(i, 0) for i in ids], dtype=torch.long)

    def remaining(self, ids) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return self.budget - self.queries_of(ids)

    def reset(self) -> None:
        self.total_queries = 0
        self.per_sample.clear()
        self.cache_hits = 0
        self.log.clear()

    def replay(self) -> list[tuple[torch.Tensor, Any]]:
        """(inputs, outputs) of every real query, in order (needs ``record=True``)."""
        if not self.record:
            raise InputError("this oracle was built with record=False; pass record=True to replay its queries")
        return list(self.log)

    # ----- querying ----------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, ids: Sequence[int] | torch.Tensor | None = None):
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise InputError("oracle queries must be a batch tensor [B, ...]")
        q = self._prepare(x)
        n = q.shape[0]
        id_list = None if ids is None else (ids.tolist() if isinstance(ids, torch.Tensor) else list(ids))
        if id_list is not None and len(id_list) != n:
            raise InputError(f"{len(id_list)} sample ids for a batch of {n}")
        keys = [self._key(q[i]) for i in range(n)] if self.memoize else [None] * n
        outputs: list[Any] = [None] * n
        todo = []
        for i, k in enumerate(keys):
            if k is not None and k in self._cache:
                outputs[i] = self._cache[k]
                self.cache_hits += 1
            else:
                todo.append(i)
        if self._determinism_checks_left > 0 and len(todo) < n:
            self._check_determinism(q, keys, todo)
        if todo:
            if id_list is not None and self.budget is not None:
                self._check_budget([id_list[i] for i in todo])
            fresh = self._query(q[todo])
            for j, i in enumerate(todo):
                outputs[i] = fresh[j]
                if keys[i] is not None:
                    self._cache[keys[i]] = fresh[j]
                if id_list is not None:
                    self.per_sample[id_list[i]] = self.per_sample.get(id_list[i], 0) + 1
            self.total_queries += len(todo)
        return self._collate(outputs)

    def _check_budget(self, owners: list[int]) -> None:
        """Refuse the whole batch, before any row is sent or charged, when some sample's count plus its
        rows in it would pass the budget: no row beyond the budget ever reaches the black box, and the
        budget left stays usable by a request that fits (``remaining(ids)`` says how much)."""
        rows: dict[int, int] = {}
        for i in owners:
            rows[i] = rows.get(i, 0) + 1
        over = [i for i, k in rows.items() if self.per_sample.get(i, 0) + k > self.budget]
        if over:
            raise QueryBudgetExceeded(
                f"samples {over[:10]} exhausted their budget of {self.budget} queries (sample {over[0]}: "
                f"{self.per_sample.get(over[0], 0)} used, {rows[over[0]]} more asked; nothing of this batch was "
                "sent); raise the oracle's budget or lower the attack's query limit"
            )

    def _key(self, row: torch.Tensor) -> bytes:
        return hashlib.blake2b(row.contiguous().cpu().numpy().tobytes(), digest_size=16).digest()

    def _check_determinism(self, q, keys, todo):
        hits = [i for i in range(q.shape[0]) if i not in set(todo)][: self._determinism_checks_left]
        self._determinism_checks_left -= len(hits)
        again = self._query(q[hits])
        self.total_queries += len(hits)
        self.verification_queries += len(hits)
        for j, i in enumerate(hits):
            if not _same(again[j], self._cache[keys[i]]):
                self.deterministic = False
                self.memoize = False
                self._cache.clear()
                self._determinism_checks_left = 0
                warnings.warn(
                    "the oracle returned a different answer for the same input: it is not deterministic. "
                    "Memoisation is now off; use an EOT attack (averaging over repeats) for randomised targets.",
                    NonDeterministicOracleWarning, stacklevel=4,
                )
                return
        if self._determinism_checks_left <= 0 and self.deterministic is None:
            self.deterministic = True

    def _query(self, q: torch.Tensor) -> list:
        step = self.batch_size or q.shape[0]
        out: list = []
        for s in range(0, q.shape[0], step):
            chunk = q[s:s + step]
            res = self._call_with_retries(chunk)
            rows = self._split(res, chunk.shape[0])
            if self.record:
                self.log.append((chunk.cpu(), res.detach().cpu() if isinstance(res, torch.Tensor) else list(res)))
            out.extend(rows)
        return out

    def _call_with_retries(self, chunk: torch.Tensor):
        """fn(chunk), retried up to ``retries`` times with exponential backoff; OracleError if it still fails."""
        for attempt in range(self.retries + 1):
            try:
                with torch.no_grad():
                    return self.fn(chunk)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                self.failed_calls += 1
                if attempt == self.retries:
                    raise OracleError(
                        f"the black box raised {type(e).__name__}: {e} (on a batch of {chunk.shape[0]}, after "
                        f"{self.retries} retries); if it is flaky, build the oracle with retries=3, backoff=0.5"
                    ) from e
                wait = self.backoff * 2 ** attempt
                log.info("black box raised %s: %s; retry %d/%d in %.2g s", type(e).__name__, e, attempt + 1,
                            self.retries, wait)
                if wait > 0:
                    time.sleep(wait)
        raise AssertionError  # unreachable

    def _split(self, res, n: int) -> list:
        raise NotImplementedError

    def _collate(self, outputs: list):
        raise NotImplementedError


def _same(a, b) -> bool:
    """Equal decisions, or scores equal up to float round-off (batching changes summation order)."""
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.shape == b.shape):
            return False
        if torch.is_floating_point(a):
            return torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        return torch.equal(a, b)
    return a == b


class ScoreOracle(Oracle):
    """Returns scores: a tensor [B, C] (logits or probabilities), [B] (one score per sample) or
    [B, ...] (e.g. disparity maps for a regression objective)."""

    kind = "score"

    @classmethod
    def from_model(cls, model: Callable, **kwargs) -> "ScoreOracle":
        oracle = cls(model, **kwargs)
        oracle.module = model  # attacks put a wrapped nn.Module in eval mode (and restore it)
        return oracle

    def _split(self, res, n):
        if not isinstance(res, torch.Tensor):
            res = torch.as_tensor(res)
        if res.dim() == 0 or res.shape[0] != n:
            raise InputError(
                f"a score oracle must return a tensor [B, C] or [B] (or [B, ...] maps) for a batch of {n}, "
                f"got shape {tuple(res.shape)}"
            )
        if not torch.is_floating_point(res):
            res = res.float()
        return list(res.detach())

    def _collate(self, outputs):
        return torch.stack(outputs)


class DecisionOracle(Oracle):
    """Returns only decisions: a label per sample (tensor [B]) or any hashable (e.g. a string)."""

    kind = "decision"

    @classmethod
    def from_model(cls, model: Callable, **kwargs) -> "DecisionOracle":
        def decide(x):
            return model(x).argmax(1)
        oracle = cls(decide, **kwargs)
        oracle.module = model  # attacks put a wrapped nn.Module in eval mode (and restore it)
        return oracle

    def _split(self, res, n):
        if isinstance(res, torch.Tensor):
            if res.dim() != 1 or res.shape[0] != n:
                raise InputError(
                    f"a decision oracle must return one decision per sample (shape [{n}]), got shape "
                    f"{tuple(res.shape)}; use ScoreOracle for scores"
                )
            return list(res.detach())
        res = list(res)
        if len(res) != n:
            raise InputError(f"a decision oracle must return {n} decisions, got {len(res)}")
        return res

    def _collate(self, outputs):
        if outputs and isinstance(outputs[0], torch.Tensor):
            return torch.stack(outputs)
        return outputs

