"""Fast exact tests of the attack recurrences (milliseconds each, no trained model), written for
`make mutation`: each attack runs on an identity model with a concave objective -||x - c||^2 whose
maximiser c lies inside the ball and the box, and its result is compared with the recurrence of the
paper computed here step by step."""
import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab.attacks import APGD, APGDDLR, APGDT, BIM, FGSM, MIFGSM, PGD, apgd_checkpoints
from robustlab.attacks.apgd import l1_phases
from robustlab.objectives import Objective


class Towards(Objective):
    """loss = -||output - c||^2 (maximised at c); never a success, so no early stop."""

    name = "towards"
    task = "test"

    def __init__(self, c):
        self.c = c

    def loss(self, output, target):
        return -((output - self.c.flatten(1)) ** 2).sum(1)

    def success(self, output, target):
        return torch.zeros(output.shape[0], dtype=torch.bool)


def _problem(norm, n=3, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.2 * torch.rand(n, 1, 1, d, generator=g)
    u = torch.randn(n, 1, 1, d, generator=g)
    u = u / (u.flatten(1).norm(dim=1) if norm == "l2" else u.flatten(1).abs().amax(1)).view(-1, 1, 1, 1)
    c = x + 0.657 * 0.1 * u  # inside the ball of radius 0.1, away from the box
    return nn.Flatten(), x, c, torch.zeros(n, dtype=torch.long)


def _step(g, alpha, norm):
    if norm == "linf":
        return alpha * g.sign()
    return alpha * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _project(x, v, eps, norm):
    d = v - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
    return (x + d).clamp(0, 1)


def _loss(v, c):
    return -((v - c) ** 2).flatten(1).sum(1)


def _best(points, c):
    """The engine's answer: per sample, the first point of highest loss."""
    losses = torch.stack([_loss(p, c) for p in points])  # [T, B]
    idx = losses.argmax(0)
    return torch.stack([points[t][b] for b, t in enumerate(idx.tolist())]), losses.amax(0)


def _reference_pgd(x, c, x0, eps, alpha, steps, norm):
    points, v = [x0], x0
    for _ in range(steps):
        v = _project(x, v + _step(-2 * (v - c), alpha, norm), eps, norm)
        points.append(v)
    return _best(points, c)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_bim_fgsm_follow_their_recurrence(norm):
    model, x, c, y = _problem(norm)
    threat = rl.ThreatModel(norm, 0.1)
    obj = Towards(c)
    start = _project(x, x - 0.05, 0.1, norm)
    cases = [
        (BIM(threat, obj, steps=10), x, 0.1 / 10, 10),
        (BIM(threat, obj, steps=7, step_size=0.013), x, 0.013, 7),
        (FGSM(threat, obj), x, 0.1, 1),
        (FGSM(threat, obj, step_size=0.03), x, 0.03, 1),
        (PGD(threat, obj, steps=8, starting_points=x - 0.05), start, 2.5 * 0.1 / 8, 8),
        (PGD(threat, obj, steps=8, rel_step_size=0.15, starting_points=x - 0.05), start, 0.15 * 0.1, 8),
        (PGD(threat, obj, steps=5, step_size=0.02, starting_points=x - 0.05), start, 0.02, 5),
    ]
    for attack, x0, alpha, steps in cases:
        res = attack(model, x, y)
        ref_x, ref_loss = _reference_pgd(x, c, x0, 0.1, alpha, steps, norm)
        assert torch.allclose(res.x_adv, ref_x, atol=1e-6), (attack, alpha)
        assert torch.allclose(res.loss, ref_loss, atol=1e-7), (attack, alpha)
        assert res.grad_calls.tolist() == [steps] * 3 and not res.success.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_mifgsm_follows_its_recurrence(norm):
    model, x, c, y = _problem(norm, seed=1)
    threat = rl.ThreatModel(norm, 0.1)
    for decay, step_size, steps in ((1.0, None, 10), (0.5, 0.03, 6)):
        res = MIFGSM(threat, Towards(c), steps=steps, decay=decay, step_size=step_size)(model, x, y)
        alpha = 0.1 / steps if step_size is None else step_size
        m, v, points = torch.zeros_like(x), x, [x]
        for _ in range(steps):
            g = -2 * (v - c)
            m = decay * m + g / g.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            v = _project(x, v + _step(m, alpha, norm), 0.1, norm)
            points.append(v)
        ref_x, ref_loss = _best(points, c)
        assert torch.allclose(res.x_adv, ref_x, atol=1e-6) and torch.allclose(res.loss, ref_loss, atol=1e-7)


def test_step_sizes_and_counts_are_validated():
    threat = rl.ThreatModel("linf", 0.1)
    for bad in (dict(steps=0), dict(restarts=0)):
        with pytest.raises(ValueError, match="^steps and restarts must be >= 1$"):
            PGD(threat, **bad)
        with pytest.raises(ValueError, match="^steps and restarts must be >= 1$"):
            APGD(threat, **bad)
    with pytest.raises(rl.InputError, match="step_size must be a positive finite number"):
        PGD(threat, step_size=0.0)
    with pytest.raises(rl.InputError, match="eps_schedule"):
        APGD(threat, eps_schedule=True)
    assert APGD(rl.ThreatModel("l1", 5.0)).eps_schedule and not APGD(rl.ThreatModel("l1", 5.0), eps_schedule=False).eps_schedule
    assert [APGD(threat).name, APGD(threat, "dlr").name, APGDT(threat).name] == ["apgd-ce", "apgd-dlr", "apgd-t"]
    assert APGDT(threat).n_targets == 9 and APGD(threat).steps == 100 and APGD(threat).restarts == 1
    dlr = APGDDLR(threat)
    assert (dlr.name, dlr.objective.name, dlr.steps, dlr.restarts, dlr.early_stop) == ("apgd-dlr", "dlr", 100, 1, True)
    for cls in (PGD, BIM, FGSM, MIFGSM, APGD, APGDDLR, APGDT):
        assert cls(threat).early_stop is True and cls(threat, early_stop=False).early_stop is False, cls
        assert cls(threat, seed=7).seed == 7


def test_fab_projection_names_an_unknown_norm():
    from robustlab.attacks import project_hyperplane_box

    with pytest.raises(rl.InputError, match="^unknown norm 'l3'$"):
        project_hyperplane_box(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1), "l3")


def test_apgd_checkpoints_and_l1_phases():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]
    assert apgd_checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert apgd_checkpoints(1) == [0]
    assert apgd_checkpoints(5) == [0, 1, 2, 3, 4]
    # AutoAttack-L1: 30% of the steps at 3 eps, 30% at 2 eps, the rest at eps
    assert l1_phases(10, True) == [(3.0, 3), (2.0, 3), (1.0, 4)]
    assert l1_phases(100, True) == [(3.0, 30), (2.0, 30), (1.0, 40)]
    assert l1_phases(3, True) == [(3.0, 1), (2.0, 1), (1.0, 1)]
    assert l1_phases(2, True) == [(1.0, 2)] and l1_phases(7, False) == [(1.0, 7)]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_converges_to_an_interior_maximum(norm):
    """With a step halved at the checkpoints APGD ends within a small fraction of eps of the maximiser
    (a fixed step of 2 eps would oscillate at that scale)."""
    model, x, c, y = _problem(norm, seed=2)
    res = APGD(rl.ThreatModel(norm, 0.1), Towards(c), steps=100)(model, x, y)
    assert (res.loss > -1e-5).all(), res.loss
    assert res.grad_calls.tolist() == [101] * 3  # the start and one gradient per step


def _reference_fab(model, x, y, eps, norm, n_targets, steps, alpha_max=0.1, eta=1.05, beta=0.9):
    """FAB-T (Croce & Hein 2020) step by step: the smallest misclassified point within eps per sample."""
    from robustlab.attacks import project_hyperplane_box

    lp = {"linf": lambda d: d.flatten(1).abs().amax(1), "l2": lambda d: d.flatten(1).norm(dim=1),
          "l1": lambda d: d.flatten(1).abs().sum(1)}[norm]
    best_x, best_norm = x.clone(), torch.full((x.shape[0],), float("inf"))
    found = torch.zeros(x.shape[0], dtype=torch.bool)

    def record(v, out):
        mis = out.argmax(1) != y
        nrm = lp(v - x)
        good = mis & (nrm <= eps * (1 + 1e-6)) & (nrm < best_norm)
        best_x[good], best_norm[good] = v[good], nrm[good]
        found[good] = True
        return mis

    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    for k in range(n_targets):
        t, v = ranked[:, k + 1], x.clone()
        for _ in range(steps):
            v_req = v.clone().requires_grad_(True)
            out = model(v_req)
            g = out.gather(1, y[:, None]).squeeze(1) - out.gather(1, t[:, None]).squeeze(1)
            w, = torch.autograd.grad(g.sum(), v_req)
            g, out, wf = g.detach(), out.detach(), w.flatten(1)
            record(v, out)
            g0 = g + (wf * (x - v).flatten(1)).sum(1)
            d_k = project_hyperplane_box(v.flatten(1), wf, -g, norm).view_as(x)
            d_0 = project_hyperplane_box(x.flatten(1), wf, -g0, norm).view_as(x)
            n_k, n_0 = lp(d_k).clamp_min(1e-8), lp(d_0).clamp_min(1e-8)
            a = (n_k / (n_k + n_0)).clamp(0, alpha_max).view(-1, *[1] * (x.dim() - 1))
            nxt = ((1 - a) * (v + eta * d_k) + a * (x + eta * d_0)).clamp(0, 1)
            with torch.no_grad():
                adv = record(nxt, model(nxt))
            v = torch.where(adv.view(-1, *[1] * (x.dim() - 1)), (1 - beta) * x + beta * nxt, nxt)
    return best_x, best_norm, found


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.3), ("l1", 0.45)])
def test_fab_t_follows_its_recurrence(norm, eps):
    from robustlab.attacks import FABT

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    x = 0.3 + 0.4 * torch.rand(12, 1, 1, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    for n_targets, steps in ((1, 6), (2, 4)):
        res = FABT(rl.ThreatModel(norm, eps), n_targets=n_targets, steps=steps, early_stop=False)(model, x, y)
        ref_x, ref_norm, found = _reference_fab(model, x, y, eps, norm, n_targets, steps)
        assert 0 < int(found.sum()) < len(x)  # some points are broken within eps, some are not
        assert torch.equal(res.success, found)
        assert torch.allclose(res.x_adv[found], ref_x[found], atol=1e-6)
        assert torch.allclose(-res.loss[found], ref_norm[found], atol=1e-6)


def _reference_apgd(x, c, eps, steps, norm, seed=0):
    """APGD (Croce & Hein 2020, Linf/L2) step by step from its seeded random start: momentum 0.75,
    eta = 2 eps halved at the checkpoints when the loss rose in at most 75% of the steps or stalled."""
    gen = torch.Generator().manual_seed(seed)
    t = 2 * torch.rand(x.shape, generator=gen) - 1 if norm == "linf" else torch.randn(x.shape, generator=gen)
    scale = t.flatten(1).abs().amax(1) if norm == "linf" else t.flatten(1).norm(dim=1)
    v = _project(x, x + eps * t / scale.clamp_min(1e-12).view(-1, 1, 1, 1), eps, norm)
    ps = lambda b: b.view(-1, 1, 1, 1)  # noqa: E731
    grad, loss = -2 * (v - c), _loss(v, c)
    points, prev = [v], v
    eta = torch.full((x.shape[0],), 2 * eps)
    best, grad_best, loss_best = v, grad, loss
    increases, since, at_check, halved = torch.zeros(x.shape[0]), 0, loss, torch.ones(x.shape[0], dtype=torch.bool)
    checks = set(apgd_checkpoints(steps)[1:])
    for i in range(steps):
        a = 1.0 if i == 0 else 0.75
        z = _project(x, v + _step(grad, 1.0, norm) * ps(eta), eps, norm)
        nxt = _project(x, v + a * (z - v) + (1 - a) * (v - prev), eps, norm)
        new_grad, new_loss = -2 * (nxt - c), _loss(nxt, c)
        points.append(nxt)
        increases = increases + (new_loss > loss).float()
        up = new_loss > loss_best
        best, grad_best = torch.where(ps(up), nxt, best), torch.where(ps(up), new_grad, grad_best)
        loss_best = torch.where(up, new_loss, loss_best)
        prev, v, grad, loss = v, nxt, new_grad, new_loss
        since += 1
        if i + 1 in checks:
            halve = (increases <= 0.75 * since) | (~halved & (at_check >= loss_best))
            eta = torch.where(halve, eta / 2, eta)
            v, grad = torch.where(ps(halve), best, v), torch.where(ps(halve), grad_best, grad)
            halved, at_check, increases, since = halve, loss_best.clone(), torch.zeros_like(increases), 0
    return _best(points, c)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_follows_its_recurrence(norm):
    """Momentum, step-size halving, restarts from the best point: the iterates of the paper."""
    model, x, c, y = _problem(norm, n=4, seed=3)
    for steps, seed in ((10, 0), (25, 5)):
        res = APGD(rl.ThreatModel(norm, 0.1), Towards(c), steps=steps, seed=seed)(model, x, y)
        ref_x, ref_loss = _reference_apgd(x, c, 0.1, steps, norm, seed)
        assert torch.allclose(res.x_adv, ref_x, atol=1e-6), steps
        assert torch.allclose(res.loss, ref_loss, atol=1e-7), steps


def _reference_l1_apgd(threat, x, c, steps, schedule, seed=0):
    """l1-APGD (Croce & Hein 2021) step by step: sparse steps along the top-k of |g|, the sparsity k and
    eta adapted every max(0.04 N, 1) steps, phases at 3, 2, 1 x eps; only points inside eps count."""
    eps, n_fts = threat.eps, x[0].numel()
    l0 = lambda t: (t != 0).flatten(1).sum(1).to(t.dtype)  # noqa: E731
    l1 = lambda t: t.flatten(1).abs().sum(1)  # noqa: E731
    ps = lambda b: b.view(-1, *[1] * (x.dim() - 1))  # noqa: E731
    phases = l1_phases(steps, schedule)
    points, allowed = [], []

    def evaluate(v, factor):
        points.append(v)
        allowed.append(torch.ones(len(v), dtype=torch.bool) if factor == 1 else l1(v - x) <= eps)
        return _loss(v, c), -2 * (v - c)

    def start(x_init, phase, fresh):
        factor, n_iter = phases[phase]
        v = threat.project(x, x_init, factor * eps)
        loss, grad = evaluate(v, factor)
        n = len(x)
        return {"v": v, "grad": grad, "loss": loss, "best": v, "grad_best": grad, "loss_best": loss,
                "eta": torch.full((n,), factor * eps), "phase": phase, "since": 0,
                "topk": torch.full((n,), 0.2) if fresh else l0(v - x) / n_fts / 1.5,
                "sp_old": torch.full((n,), float(n_fts)) if fresh else l0(v - x),
                "every": max(int(0.04 * n_iter), 1)}

    gen = torch.Generator().manual_seed(seed)
    s = start(x + torch.randn(x.shape, generator=gen), 0, fresh=not schedule)
    for i in range(steps):
        if s["phase"] + 1 < len(phases) and i == sum(n for _, n in phases[:s["phase"] + 1]):
            s = start(s["best"], s["phase"] + 1, fresh=False)
        factor = phases[s["phase"]][0]
        e = factor * eps
        flat = s["grad"].abs().flatten(1)
        kth = ((1 - s["topk"]) * n_fts).clamp(0, n_fts - 1).long()
        thresh = flat.sort(1).values.gather(1, kth[:, None])
        d = s["grad"].sign() * (flat >= thresh).view_as(x)
        d = d / ps(l1(d) + 1e-10)
        nxt = threat.project(x, s["v"] + ps(s["eta"]) * d, e)
        loss, grad = evaluate(nxt, factor)
        up = loss > s["loss_best"]
        s["best"] = torch.where(ps(up), nxt, s["best"])
        s["grad_best"] = torch.where(ps(up), grad, s["grad_best"])
        s["loss_best"] = torch.where(up, loss, s["loss_best"])
        s["v"], s["grad"], s["loss"], s["since"] = nxt, grad, loss, s["since"] + 1
        if s["since"] == s["every"]:
            sp = l0(s["best"] - x)
            sparser = sp / s["sp_old"].clamp_min(1) < 0.95
            s["topk"], s["sp_old"] = sp / n_fts / 1.5, sp
            s["eta"] = torch.where(sparser, torch.full_like(s["eta"], e), s["eta"] / 1.5).clamp(e / 10, e)
            s["v"] = torch.where(ps(sparser), s["best"], s["v"])
            s["grad"] = torch.where(ps(sparser), s["grad_best"], s["grad"])
            s["since"] = 0
    losses = torch.stack([torch.where(a, _loss(p, c), torch.full_like(a, float("-inf"), dtype=x.dtype))
                          for p, a in zip(points, allowed)])
    idx = losses.argmax(0)
    return torch.stack([points[t][b] for b, t in enumerate(idx.tolist())]), losses.amax(0)


@pytest.mark.parametrize("schedule,steps", [(True, 20), (False, 60)])
def test_l1_apgd_follows_its_recurrence(schedule, steps):
    g = torch.Generator().manual_seed(4)
    x = 0.3 + 0.4 * torch.rand(4, 1, 1, 8, generator=g)
    u = torch.randn(4, 1, 1, 8, generator=g)
    c = x + 0.657 * 0.5 * u / u.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    threat = rl.ThreatModel("l1", 0.5)
    res = APGD(threat, Towards(c), steps=steps, eps_schedule=schedule)(nn.Flatten(), x, torch.zeros(4, dtype=torch.long))
    ref_x, ref_loss = _reference_l1_apgd(threat, x, c, steps, schedule)
    assert torch.allclose(res.x_adv, ref_x, atol=1e-6) and torch.allclose(res.loss, ref_loss, atol=1e-7)
