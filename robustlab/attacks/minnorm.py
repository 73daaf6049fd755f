"""Minimum-norm attacks: Carlini-Wagner L2 and DeepFool.

Both search for the smallest perturbation that succeeds; a sample counts as broken only when the
found perturbation also lies inside the threat model's eps ball. Among successful points the
engine keeps the one of smallest norm (recorded loss = -norm).
"""
from __future__ import annotations

import torch

from .. import runtime
from ..errors import InputError
from ..objectives import Margin, Objective, labels_of
from ..progress import attack_steps
from ..threat import ThreatModel, per_sample, lp_norm
from .base import Attack, AttackContext


def _record_min_norm(ctx: AttackContext, x_adv: torch.Tensor, out: torch.Tensor, sub: torch.Tensor | None = None,
                     rows: torch.Tensor | None = None):
    """Record the points inside the eps ball, ranked by (success, smaller norm).

    Points outside the ball (and rows where the bool mask ``rows`` is False) are never recorded, so x_adv
    always satisfies the threat model: they are offered as unsuccessful with loss -inf, which never beats
    a recorded point (no host read). Returns (success, success within eps, norms)."""
    idx = ctx.index if sub is None else ctx.index[sub]
    target = ctx.target_of(sub)
    x = ctx.x if sub is None else ctx.x[sub]
    succ = ctx.objective.success(out, target)
    norms = lp_norm(x_adv - x, ctx.threat.norm)
    in_ball = norms <= ctx.threat.eps * (1 + 1e-6)
    inside = in_ball if rows is None else in_ball & rows
    within = succ & inside
    loss = torch.where(within, -norms, ctx.objective.loss(out, target))
    ctx.record(x_adv.detach(), torch.where(inside, loss, float("-inf")).detach(), within, idx)
    return succ, succ & in_ball, norms


class CarliniWagnerL2(Attack):
    """CW-L2 (Carlini & Wagner 2017): minimise ||x' - x||_2^2 + c * max(kappa - m(x'), 0) over
    x' = lo + (hi - lo) * (tanh(w) + 1) / 2 with Adam, and binary-search c per sample.

    m is the objective's loss: with a margin-like objective (> 0 exactly on success; default the CW
    margin) the hinge above; with any other objective (a CTC log-likelihood, a regression error) the
    hinge is taken at the objective's own success: penalty ``-c * m(x')`` while x' fails, 0 once it
    succeeds (``confidence`` then plays no role). A threat mask is honoured: x' = x + mask * (x_w - x).
    """

    name = "cw-l2"
    default_objective = Margin

    def __init__(self, threat: ThreatModel, objective: Objective | str | None = None, *, steps: int = 100,
                 binary_search_steps: int = 9, initial_const: float = 1e-2, confidence: float = 0.0,
                 lr: float = 0.01, **options):
        super().__init__(threat, objective, **options)
        if threat.norm != "l2":
            raise InputError("CarliniWagnerL2 measures L2 distortion: use ThreatModel('l2', eps)")
        self.steps, self.binary_search_steps = int(steps), int(binary_search_steps)
        self.initial_const, self.confidence, self.lr = float(initial_const), float(confidence), float(lr)

    def run(self, ctx: AttackContext) -> None:
        lo, hi = ctx.threat.bounds
        n = ctx.x_full.shape[0]
        dev, dt = ctx.x_full.device, ctx.x_full.dtype
        const = torch.full((n,), self.initial_const, device=dev, dtype=dt)
        lower = torch.zeros(n, device=dev, dtype=dt)
        upper = torch.full((n,), float("inf"), device=dev, dtype=dt)
        all_idx = torch.arange(n, device=dev)
        for _ in range(self.binary_search_steps):
            ctx.set_active(all_idx[~ctx.success_full] if self.early_stop else all_idx)
            if ctx.n_active == 0:
                return
            x = ctx.x
            w = torch.atanh(((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
            m1, m2 = torch.zeros_like(w), torch.zeros_like(w)
            found = torch.zeros(ctx.n_active, dtype=torch.bool, device=dev)
            c = const[ctx.index]
            attack_steps.plan(self.steps)
            for t in range(1, self.steps + 1):
                attack_steps.step()
                w_req = w.detach().requires_grad_(True)
                with torch.enable_grad():
                    x_adv = lo + (hi - lo) * (torch.tanh(w_req) + 1) / 2
                    if ctx.threat.mask is not None:
                        x_adv = ctx.threat.apply(x, x_adv - x)
                    out = ctx.forward(x_adv)
                    margin = ctx.objective.loss(out, ctx.target)
                    dist = (x_adv - x).reshape(x.shape[0], -1).pow(2).sum(1)
                    if self.objective.margin_like:
                        hinge = (self.confidence - margin).clamp_min(0)
                    else:   # the hinge at the objective's own success
                        done = ctx.objective.success(out.detach(), ctx.target)
                        hinge = torch.where(done, torch.zeros_like(margin), -margin)
                    total = dist + c * hinge
                    grad, = torch.autograd.grad(total.sum(), w_req)
                ctx.grad_calls[ctx.index] += 1
                succ, _, _ = _record_min_norm(ctx, x_adv.detach(), out.detach())
                found |= succ & (margin.detach() >= self.confidence) if self.objective.margin_like else succ
                m1 = 0.9 * m1 + 0.1 * grad
                m2 = 0.999 * m2 + 0.001 * grad * grad
                w = w - self.lr * (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
            idx = ctx.index
            upper[idx] = torch.where(found, torch.minimum(upper[idx], c), upper[idx])
            lower[idx] = torch.where(found, lower[idx], torch.maximum(lower[idx], c))
            finite = torch.isfinite(upper[idx])
            const[idx] = torch.where(finite, (lower[idx] + upper[idx]) / 2, c * 10)


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016) for classifiers, L2 or Linf.

    At each step linearise f_k - f_y for the `candidates` most likely classes on the clean
    input and move to the nearest linearised boundary: r = (|f_k| + 1e-4) w_k / ||w_k||_2^2 (L2) or
    (|f_k| + 1e-4) sign(w_k) / ||w_k||_1 (Linf); the total step is scaled by (1 + overshoot).
    Costs one forward and `candidates - 1` backward passes per step.
    """

    name = "deepfool"

    #: when, with ``early_stop``, the working batch drops its broken rows (one host read each): "every" step,
    #: or "doubling": after steps 1, 2, 4, 8, ... and the last, so a row runs at most twice the steps it
    #: needed. None: "every" on a CPU, where the read costs nothing and keeps the batch as small as it can
    #: be (the model then sees the same batches, and gives the same bits, as before issue 21), "doubling"
    #: on an accelerator
    shrink: str | None = None

    def __init__(self, threat: ThreatModel, *, steps: int = 50, candidates: int = 10, overshoot: float = 0.02,
                 **options):
        super().__init__(threat, None, **options)
        if threat.norm not in ("l2", "linf"):
            raise InputError("DeepFool supports the l2 and linf norms")
        self.steps, self.candidates, self.overshoot = int(steps), int(candidates), float(overshoot)

    def run(self, ctx: AttackContext) -> None:
        """With ``early_stop``, a row stops moving, counting and being recorded when it breaks (a device-side
        mask, no host read), and the working batch drops the stopped rows when ``shrink`` says."""
        lo, hi = ctx.threat.bounds
        clean = ctx.output(ctx.x)
        _record_min_norm(ctx, ctx.x, clean)
        labels = labels_of(clean, ctx.target)
        k = min(self.candidates, clean.shape[1])
        classes = clean.argsort(1, descending=True)[:, :k]
        others = torch.where(classes[:, :1] == labels[:, None], classes[:, 1:], classes[:, :-1])
        r_total = torch.zeros_like(ctx.x)
        x_adv = ctx.x.clone()
        live = torch.ones(ctx.n_active, dtype=torch.bool, device=ctx.x.device)
        attack_steps.plan(self.steps)
        for step in range(1, self.steps + 1):
            attack_steps.step()
            out, diffs, w = self._linearise(ctx, x_adv, labels, others)
            ctx.grad_calls[ctx.index] += diffs.shape[1] * live
            succ, _, _ = _record_min_norm(ctx, x_adv, out, rows=live)
            if self.early_stop:
                live = live & ~succ
            r_total = torch.where(per_sample(live, r_total), r_total + self._step(ctx, diffs, w), r_total)
            x_adv = (ctx.x + (1 + self.overshoot) * r_total).clamp(lo, hi).detach()
            if self.early_stop and self._shrink_due(step, x_adv.device):
                keep = live.nonzero().flatten()  # the one host read of a shrink
                if not keep.numel():
                    return
                if keep.numel() < live.numel():
                    ctx.set_active(ctx.index[keep])
                    x_adv, r_total, others, labels, live = x_adv[keep], r_total[keep], others[keep], labels[keep], live[keep]
        out = ctx.output(x_adv)
        _record_min_norm(ctx, x_adv, out)

    def _shrink_due(self, step: int, device: torch.device) -> bool:
        """Whether the working batch drops its broken rows after ``step`` (1-based; see ``shrink``)."""
        shrink = self.shrink or ("every" if runtime.host_reads_are_free(device) else "doubling")
        if shrink not in ("every", "doubling"):
            raise InputError(f"DeepFool.shrink must be 'every', 'doubling' or None, got {shrink!r}")
        return shrink == "every" or step & (step - 1) == 0 or step == self.steps

    @staticmethod
    def _linearise(ctx: AttackContext, x_adv: torch.Tensor, labels: torch.Tensor, others: torch.Tensor):
        """The output at x_adv (detached), f_k - f_y for the candidate classes k, and their input gradients
        w stacked as [B, K-1, ...] (one backward pass per candidate)."""
        x_req = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            out = ctx.forward(x_req)
            diffs = out.gather(1, others) - out.gather(1, labels[:, None])
            grads = [torch.autograd.grad(diffs[:, j].sum(), x_req, retain_graph=j < diffs.shape[1] - 1)[0]
                     for j in range(diffs.shape[1])]
        return out.detach(), diffs.detach(), torch.stack(grads, 1)

    @staticmethod
    def _step(ctx: AttackContext, diffs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The step to the nearest linearised boundary: r = (|f_k| + 1e-4) w_k / ||w_k||_2^2 (L2) or
        (|f_k| + 1e-4) sign(w_k) / ||w_k||_1 (Linf), for the k with the smallest distance."""
        f = diffs.abs()
        wf = w.reshape(w.shape[0], w.shape[1], -1)
        if ctx.threat.norm == "l2":
            wn = wf.norm(dim=2).clamp_min(1e-12)
        else:
            wn = wf.abs().sum(2).clamp_min(1e-12)
        dist = (f + 1e-4) / wn
        rows = torch.arange(w.shape[0], device=w.device)
        best = dist.argmin(1)
        w_best, d_best = w[rows, best], dist[rows, best]
        if ctx.threat.norm == "l2":
            return per_sample(d_best / wn[rows, best], w_best) * w_best
        return per_sample(d_best, w_best) * w_best.sign()
