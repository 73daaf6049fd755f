"""SimBA (Guo et al. 2019): simple black-box attack along random orthonormal directions."""
from __future__ import annotations

import math

import torch

from .. import runtime
from ..errors import InputError
from ..objectives import CrossEntropy, Objective
from ..threat import ThreatModel, per_sample
from .base import AttackContext, IterativeAttack, check_query_budget


def dct_matrix(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix: row u is the u-th cosine basis vector of length n."""
    return dct_rows(torch.arange(n, device=device), n, dtype)


def dct_rows(u: torch.Tensor, n: int, dtype=torch.float32) -> torch.Tensor:
    """Rows ``u`` [B] of the orthonormal DCT-II matrix of size n, [B, n], without building the n x n
    matrix (a 1 s waveform has n = 16,000: the matrix would take 1 GB)."""
    k = torch.arange(n, dtype=dtype, device=u.device)
    m = torch.cos(math.pi / n * (k[None, :] + 0.5) * u.to(dtype)[:, None]) * math.sqrt(2.0 / n)
    return torch.where(u[:, None] == 0, m / math.sqrt(2.0), m)


class SimBA(IterativeAttack):
    """SimBA: walk a random permutation of orthonormal directions q; try x - step*q and keep it if
    the objective improves (the true-class probability drops, for CE), else try x + step*q.

    ``basis="pixel"`` uses single coordinates; ``basis="dct"`` uses the orthonormal 2-D DCT basis,
    the low frequencies (``freq_dims`` x ``freq_dims`` per channel, default H/4) first (SimBA-DCT). The iterate is projected onto the threat
    model after every move. ``steps`` bounds the number of directions tried (each costs 1-2 queries,
    after one for the clean point); ``max_queries`` (optional) bounds each sample's queries exactly: a
    sample that has spent it stops, and one with a single query left tries x - step*q only. On a
    ``VariableThreat`` the walk runs on the threat's variable from its zero, ``step_size`` in its units.
    """

    name = "simba"
    needs_gradients = False
    shrink_every = 1  # its accelerator path forwards rows of its own (_evaluate_rows): compacted after every step
    default_objective = CrossEntropy
    evaluate_final = False

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, step_size: float = 0.2,
                 basis: str = "dct", freq_dims: int | None = None, steps: int = 1000, max_queries: int | None = None,
                 **options):
        super().__init__(threat, objective, **options)
        if basis not in ("pixel", "dct"):
            raise InputError("basis must be 'pixel' or 'dct'")
        self.step_size, self.basis, self.freq_dims = float(step_size), basis, freq_dims
        self.steps = check_query_budget(steps, "SimBA", name="steps")
        self.max_queries = None if max_queries is None else check_query_budget(max_queries, "SimBA")

    def init_state(self, ctx: AttackContext, restart: int) -> dict:
        b, c, h, w = ctx.x.shape
        if self.basis == "pixel":
            order = ctx.rand_full((c * h * w,)).argsort(1)
        else:
            # every DCT direction, the low-frequency block (u, v < freq_dims) first, each part in random order
            f = self.freq_dims or max(h // 4, 2)
            ch, u, v = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
            low = ((u < f) & (v < f)).flatten().to(ctx.x.device)
            keys = ctx.rand_full((c * h * w,)) + (~low).to(ctx.x.dtype)[None]     # low block sorts first
            order = keys.argsort(1)
        origin = ctx.input_shaped_variable("SimBA")  # the clean inputs; a VariableThreat's zero variable
        loss, _, _ = ctx.evaluate(origin)
        state = {"x_adv": origin, "loss": loss, "order": order}
        return state

    def _directions(self, s: dict, k: torch.Tensor, shape) -> torch.Tensor:
        b, c, h, w = shape
        q = torch.zeros(b, c * h * w, dtype=s["x_adv"].dtype, device=k.device)
        if self.basis == "pixel":
            q.scatter_(1, k[:, None], 1.0)
            return q.reshape(shape)
        ch, rem = k // (h * w), k % (h * w)
        u, v = rem // w, rem % w
        dtype = s["x_adv"].dtype
        img = dct_rows(u, h, dtype)[:, :, None] * dct_rows(v, w, dtype)[:, None, :]   # [B, H, W], unit norm
        q = q.reshape(shape)
        q[torch.arange(b, device=k.device), ch] = img
        return q

    def step(self, ctx: AttackContext, s: dict, i: int) -> dict:
        x_adv = s["x_adv"]
        k = s["order"][:, i % s["order"].shape[1]]
        q = self._directions(s, k, x_adv.shape)
        minus = ctx.threat.project(ctx.x, x_adv - self.step_size * q)
        loss_m, _, _ = ctx.evaluate(minus)
        better_m = loss_m > s["loss"]
        x_next = torch.where(per_sample(better_m, minus), minus, x_adv)
        loss = torch.where(better_m, loss_m, s["loss"])
        second = ~better_m                                  # the second query only where the first did not improve
        if self.max_queries is not None:                    # ... and the budget allows it
            second = second & (ctx.queries_left(self.max_queries, oracle=False) > 0)
        if second_query_on_all(ctx):
            plus = ctx.threat.project(ctx.x, x_adv + self.step_size * q)
            loss_p = _evaluate_rows(ctx, plus, second)
            better_p = second & (loss_p > s["loss"])
            x_next = torch.where(per_sample(better_p, plus), plus, x_next)
            return {**s, "x_adv": x_next, "loss": torch.where(better_p, loss_p, loss)}
        todo = second.nonzero().flatten()
        if todo.numel():
            plus = ctx.threat.subset(todo).project(ctx.x[todo], x_adv[todo] + self.step_size * q[todo])
            loss_p, _, _ = ctx.evaluate(plus, sub=todo)
            better_p = loss_p > s["loss"][todo]
            upd = todo[better_p]
            x_next = x_next.clone()
            x_next[upd] = plus[better_p]
            loss = loss.clone()
            loss[upd] = loss_p[better_p]
        return {**s, "x_adv": x_next, "loss": loss}


def second_query_on_all(ctx: AttackContext) -> bool:
    """Whether SimBA's second query (x + step q) runs on every active sample, with the samples that do not
    need it masked out (not counted, not recorded), instead of on the subset that needs it. On a GPU the
    subset's size is a host synchronisation per step and the extra rows cost microseconds; on a CPU the
    subset is cheaper, and an oracle is asked only what the attack needs (its queries are counted and
    budgeted). Both give the same points."""
    return not ctx.is_oracle and not runtime.host_reads_are_free(ctx.x.device)


def _evaluate_rows(ctx: AttackContext, v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The objective's loss at the threat variable ``v`` of every active sample, counted as a query and
    offered as a candidate result only where ``rows`` (bool over the active set) is True: what
    ``ctx.evaluate(v[rows], sub=rows.nonzero())`` does for those rows, without reading ``rows`` on the host."""
    point = ctx.point(v)
    with torch.no_grad():
        out = ctx.forward(point)
        ctx.forward_calls.index_add_(0, ctx.index, rows.to(ctx.forward_calls.dtype))
        loss = ctx.objective.loss(out, ctx.target)
        success = ctx.objective.success(out, ctx.target).to(rows.device)
    # a row left out offers loss -inf without success: never better than the best point so far
    ctx.record(point, loss.masked_fill(~rows, float("-inf")), success & rows, ctx.index)
    return loss
