"""FAB-T: targeted fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), the minimum-norm member of the standard suite."""
from __future__ import annotations

import torch

from ..errors import InputError
from ..objectives import CrossEntropy, _labels
from ..threat import ThreatModel, _per_sample, lp_norm
from .base import Attack, AttackContext


def _hyperplane_step(g: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal-norm step delta with g + <w, delta> = 0 (linearised boundary)."""
    wf = w.flatten(1)
    if norm == "l2":
        step = -g / wf.pow(2).sum(1).clamp_min(1e-12)
        return _per_sample(step, w) * w
    if norm == "linf":
        step = -g / wf.abs().sum(1).clamp_min(1e-12)
        return _per_sample(step, w) * w.sign()
    idx = wf.abs().argmax(1)  # l1: move the single most sensitive coordinate
    out = torch.zeros_like(wf)
    wi = wf.gather(1, idx[:, None]).squeeze(1)
    wi = torch.where(wi.abs() < 1e-12, torch.full_like(wi, 1e-12), wi)
    val = -g / wi
    out.scatter_(1, idx[:, None], val[:, None])
    return out.reshape(w.shape)


class FABT(Attack):
    """FAB-T: for each of the top-k target classes t, iterate

        delta_k = minimal step onto the linearised boundary {f_t = f_y} at x_k,
        delta_0 = minimal step from the clean x onto the same hyperplane,
        alpha = min(||delta_k|| / (||delta_k|| + ||delta_0||), alpha_max),
        x_{k+1} = clip((1 - alpha)(x_k + eta delta_k) + alpha (x + eta delta_0)),

    and on reaching the target side step back towards x: x_{k+1} <- (1 - beta) x + beta x_{k+1}.
    The smallest successful perturbation is kept; a point is broken when it lies within eps.
    The exact projection onto hyperplane-and-box of the paper is approximated here by the
    hyperplane projection followed by clipping to the box.
    """

    name = "fab-t"

    def __init__(self, threat: ThreatModel, *, n_targets: int = 9, steps: int = 100, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, early_stop: bool = True, seed: int = 0):
        super().__init__(threat, CrossEntropy(), early_stop=early_stop, seed=seed)
        self.n_targets, self.steps = int(n_targets), int(steps)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def run(self, ctx: AttackContext) -> None:
        with torch.no_grad():
            clean = ctx._forward(ctx.x)
        ctx.forward_calls[ctx.index] += 1
        ctx._judge(ctx.x, clean, None)
        labels_full = _labels(clean, ctx.target)
        ranked = clean.argsort(1, descending=True)
        n_targets = min(self.n_targets, clean.shape[1] - 1)
        all_idx = ctx.index.clone()
        lo, hi = ctx.threat.bounds
        for k in range(n_targets):
            keep = ~ctx.success_full[all_idx] if self.early_stop else torch.ones_like(all_idx, dtype=torch.bool)
            pos = keep.nonzero().flatten()
            if pos.numel() == 0:
                return
            ctx.set_active(all_idx[pos])
            x0 = ctx.x
            y, t = labels_full[pos], ranked[pos, k + 1]
            x_k = x0.clone()
            for _ in range(self.steps):
                x_req = x_k.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = ctx._forward(x_req)
                    g = out.gather(1, y[:, None]).squeeze(1) - out.gather(1, t[:, None]).squeeze(1)
                    w, = torch.autograd.grad(g.sum(), x_req)
                ctx.grad_calls[ctx.index] += 1
                out, g = out.detach(), g.detach()
                self._record(ctx, x_k, out)
                d_k = _hyperplane_step(g, w, ctx.threat.norm)
                g0 = g + (w * (x0 - x_k)).flatten(1).sum(1)
                d_0 = _hyperplane_step(g0, w, ctx.threat.norm)
                n_k, n_0 = lp_norm(d_k, ctx.threat.norm), lp_norm(d_0, ctx.threat.norm)
                alpha = (n_k / (n_k + n_0).clamp_min(1e-12)).clamp(max=self.alpha_max)
                a = _per_sample(alpha, x_k)
                x_next = ((1 - a) * (x_k + self.eta * d_k) + a * (x0 + self.eta * d_0)).clamp(lo, hi)
                with torch.no_grad():
                    out_next = ctx._forward(x_next)
                ctx.forward_calls[ctx.index] += 1
                adv = self._record(ctx, x_next, out_next)
                x_k = torch.where(_per_sample(adv, x_next), (1 - self.beta) * x0 + self.beta * x_next, x_next).detach()
                if self.early_stop:
                    live = ~ctx.success_full[ctx.index]
                    if not live.all():
                        ctx.shrink(live)
                        x0, x_k, y, t = ctx.x, x_k[live], y[live], t[live]
                        if ctx.n_active == 0:
                            break

    def _record(self, ctx: AttackContext, x_adv, out) -> torch.Tensor:
        """Record misclassified points inside eps with loss -norm (the engine keeps the smallest);
        return misclassification."""
        mis = ctx.objective.success(out, ctx.target)
        norms = lp_norm(x_adv - ctx.x, ctx.threat.norm)
        good = mis & (norms <= ctx.threat.eps * (1 + 1e-6))
        if good.any():
            ctx.record(x_adv[good], -norms[good], torch.ones_like(good[good]), ctx.index[good])
        return mis
