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


def _reference_fab(model, x, y, eps, norm, n_targets, steps, alpha_max=0.1, eta=1.05, beta=0.9, skip_broken=False):
    """FAB-T (Croce & Hein 2020) step by step: the smallest misclassified point within eps per sample.
    ``skip_broken``: a target runs only on the points no earlier target broke (the reference's perturb)."""
    from robustlab.attacks import project_hyperplane_box

    lp = {"linf": lambda d: d.flatten(1).abs().amax(1), "l2": lambda d: d.flatten(1).norm(dim=1),
          "l1": lambda d: d.flatten(1).abs().sum(1)}[norm]
    best_x, best_norm = x.clone(), torch.full((x.shape[0],), float("inf"))
    found = torch.zeros(x.shape[0], dtype=torch.bool)

    def record(v, out):
        mis = out.argmax(1) != y
        nrm = lp(v - x)
        good = mis & (nrm <= eps * (1 + 1e-6)) & (nrm < best_norm) & live
        best_x[good], best_norm[good] = v[good], nrm[good]
        found[good] = True
        return mis

    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    for k in range(n_targets):
        t, v = ranked[:, k + 1], x.clone()
        live = ~found if skip_broken else torch.ones_like(found)
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


def test_fab_l1_projection_zeroes_coordinates_with_weight_at_most_1e8():
    """The reference's L1 projection (fab_projections.projection_l1) keeps a coordinate's move only where
    |w| > 1e-8: a coordinate the hyperplane needs but whose weight is that small does not move (the
    others go to their caps, as when the hyperplane is out of reach)."""
    from robustlab.attacks import project_hyperplane_box

    t = torch.full((4, 3), 0.5, dtype=torch.float64)
    w = torch.tensor([[1.0, 1e-9, 0.0], [1.0, 1e-8, 0.0], [1.0, 2e-8, 0.0], [-1.0, -1e-9, 0.0]], dtype=torch.float64)
    c = torch.tensor([0.5 + 1e-10, 0.5 + 1e-10, 0.5 + 1e-9, -2.0], dtype=torch.float64)
    d = project_hyperplane_box(t, w, c, "l1")
    expected = torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 0.05, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(d, expected, rtol=1e-6, atol=1e-15), d  # 0.05: (c - 0.5) / 2e-8, c rounded in float64


def _first_success_norms(model, x, y, eps, norm, steps):
    """The norm of each point's first FAB iterate misclassified within eps (one target), by the recurrence."""
    first = torch.full((x.shape[0],), float("inf"))
    for k in range(1, steps + 1):
        _, nrm, found = _reference_fab(model, x, y, eps, norm, 1, k)
        new = found & torch.isinf(first)
        first[new] = nrm[new]
    return first


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.3), ("l1", 0.45)])
def test_fab_t_with_early_stop_reports_the_smallest_success(norm, eps):
    """FAB is a minimal-norm attack: as in the reference (fab_base.perturb), a point keeps iterating to the end
    of the target that broke it and the smallest misclassified point within eps is reported; later targets
    run only on the points still unbroken. The success flags are those of the run without early stop."""
    from robustlab.attacks import FABT

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    x = 0.3 + 0.4 * torch.rand(12, 1, 1, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat, steps = rl.ThreatModel(norm, eps), 8
    res = FABT(threat, n_targets=1, steps=steps)(model, x, y)
    ref_x, ref_norm, found = _reference_fab(model, x, y, eps, norm, 1, steps)
    assert torch.equal(res.success, found) and 0 < int(found.sum()) < len(x)
    assert torch.allclose(res.x_adv[found], ref_x[found], atol=1e-6)
    assert torch.allclose(res.perturbation_norms[found], ref_norm[found], atol=1e-6)
    first = _first_success_norms(model, x, y, eps, norm, steps)
    assert (ref_norm[found] < first[found] - 1e-4).any(), "a case where a later success is smaller than the first"
    two = FABT(threat, n_targets=2, steps=steps)(model, x, y)
    ref2_x, ref2_norm, found2 = _reference_fab(model, x, y, eps, norm, 2, steps, skip_broken=True)
    assert torch.equal(two.success, found2)
    assert torch.equal(two.success, FABT(threat, n_targets=2, steps=steps, early_stop=False)(model, x, y).success)
    assert torch.allclose(two.perturbation_norms[found2], ref2_norm[found2], atol=1e-6)


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


# ----- Square (Andriushchenko et al. 2020) ------------------------------------------------------------

def _square_p(p_init, it, n_iters):
    """The paper's schedule: p_init halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000."""
    it = int(it / n_iters * 10000)
    return p_init / 2 ** sum(it > b for b in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def _corner(u, side, n):
    """The paper's window corner, uniform over 0 .. n - side: int(u (n - side + 1)) for u in [0, 1)."""
    return min(int(u * (n - side + 1)), n - side)


def _reference_square_linf(x, c, eps, max_queries, p_init, seed, mask=None):
    """Square-Linf step by step with the attack's draws (one generator, batch-wide draws in this order):
    vertical +-eps stripes per channel and column; then at iteration i = 0, 1, ... (one query each) a random
    window of side round(sqrt(p_i h w)) (at most h - 1 and w; p_i the schedule at i, as the reference's
    p_selection(i_iter)) with its corner uniform over 0 .. h - side (the paper's range), set to +-eps per
    channel (flipped if that changes nothing), kept if the loss rises. `mask` (0: frozen) multiplies every perturbation."""
    b, ch, h, w = x.shape
    m = torch.ones_like(x) if mask is None else mask.expand_as(x)
    gen = torch.Generator().manual_seed(seed)
    stripes = torch.where(torch.rand(b, ch, 1, w, generator=gen) < 0.5, -1.0, 1.0)
    v = (x + m * eps * stripes.expand_as(x)).clamp(0, 1)
    loss = _loss(v, c)
    flips, accepted = 0, torch.zeros(b, dtype=torch.long)
    for i in range(max_queries - 1):
        p = _square_p(p_init, i, max_queries)
        side = int(min(max(round((p * h * w) ** 0.5), 1), h - 1 if h > 1 else 1, w))
        u = torch.rand(b, 2, generator=gen)
        signs = torch.where(torch.rand(b, ch, generator=gen) < 0.5, -eps, eps)
        nxt = v.clone()
        for k in range(b):
            top, left = _corner(u[k, 0], side, h), _corner(u[k, 1], side, w)
            win = (k, slice(None), slice(top, top + side), slice(left, left + side))
            new = (x[win] + m[win] * signs[k, :, None, None]).clamp(0, 1)
            if torch.equal(new, v[win]):
                new = (x[win] - m[win] * signs[k, :, None, None]).clamp(0, 1)
                flips += 1
            nxt[win] = new
        new_loss = _loss(nxt, c)
        better = new_loss > loss
        accepted += better
        v = torch.where(better.view(-1, 1, 1, 1), nxt, v)
        loss = torch.where(better, new_loss, loss)
    return v, loss, flips, accepted


@pytest.mark.parametrize("shape,masked", [((3, 2, 6, 6), None), ((3, 2, 6, 6), "ones"), ((3, 2, 6, 6), "half"),
                                          ((2, 1, 30, 3), None), ((2, 1, 30, 3), "half")])
def test_square_linf_follows_its_recurrence(shape, masked):
    """The window step (no mask) and the full-image step (a mask) give the paper's iterates; an all-ones
    mask the same points as none. Some pixels sit at the bounds, so clamped windows and flips occur. On the
    tall narrow image (30 x 3) the window's side is capped by the width (round(sqrt(0.2 * 90)) = 4 > 3)."""
    from robustlab.attacks import Square

    g = torch.Generator().manual_seed(5)
    x = torch.rand(shape, generator=g)
    x[..., 0, :] = 0.0
    x[..., 1, :] = 1.0
    c = (x + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    mask = None if masked is None else torch.ones(shape[1:]) if masked == "ones" else (torch.rand(shape[1:], generator=g) < 0.5).float()
    eps, queries = 0.1, 60
    res = Square(rl.ThreatModel("linf", eps, mask=mask), Towards(c), max_queries=queries, p_init=0.8, seed=3)(
        nn.Flatten(), x, torch.zeros(shape[0], dtype=torch.long))
    ref_x, ref_loss, flips, accepted = _reference_square_linf(x, c, eps, queries, 0.8, 3, mask)
    assert torch.allclose(res.x_adv, ref_x, atol=1e-7) and torch.allclose(res.loss, ref_loss, atol=1e-7)
    assert res.forward_calls.tolist() == [queries] * shape[0] and res.grad_calls.sum() == 0
    assert flips > 0 and ((accepted > 0) & (accepted < queries - 1)).all()  # every branch is taken
    if mask is not None:
        assert torch.equal(res.x_adv * (1 - mask), x * (1 - mask))


def test_square_halves_its_window_at_the_reference_iterations(monkeypatch):
    """The window side at iteration i (0-based, one query each after the start) follows p_selection(i) of the
    reference: with 1,000 queries (schedule rescaled by 10) p_init holds at iterations 0 and 1, p_init / 2 from
    2 (it = 20 > 10) to 5, p_init / 4 from 6 (it = 60 > 50). On a 6 x 6 image: sides 5, 5, 4, 4, 4, 4, 3."""
    from robustlab.attacks import Square

    sides = []
    step = Square._linf_window_step
    monkeypatch.setattr(Square, "_linf_window_step", staticmethod(lambda ctx, s, side: sides.append(side) or step(ctx, s, side)))
    x = torch.full((1, 1, 6, 6), 0.5)
    Square(rl.ThreatModel("linf", 0.1), Towards(x), max_queries=1000, p_init=0.8)(nn.Flatten(), x, torch.zeros(1, dtype=torch.long))
    assert len(sides) == 999
    assert sides[:8] == [5, 5, 4, 4, 4, 4, 3, 3]
    expected = [int(min(max(round((_square_p(0.8, i, 1000) * 36) ** 0.5), 1), 5)) for i in range(999)]
    assert sides == expected


class _Draws:
    """A stand-in context whose batch-wide uniform draws are given."""

    def __init__(self, u):
        self.u = u

    def rand_full(self, shape_tail=(), kind="rand"):
        return self.u


def test_square_window_corner_covers_the_last_row_and_column():
    """The corner is uniform over 0 .. h - s, the paper's range (Algorithm 2: U{0, ..., w - h}), kept on purpose
    against the reference code's 0 .. h - s - 1, with which no window covers the last row or column (see
    ``square._corners``): u = 1 - 2^-24 (the largest float32 below 1) gives corner h - s, u = 0 gives 0."""
    from robustlab.attacks.square import _window_masks

    top = torch.tensor([[1 - 2 ** -24, 1 - 2 ** -24], [0.0, 0.0], [0.5, 0.99]], dtype=torch.float32)
    masks = _window_masks(_Draws(top), 3, 8, 6)[:, 0]
    rows, cols = masks.any(2), masks.any(1)
    assert rows[0].nonzero().flatten().tolist() == [5, 6, 7] and cols[0].nonzero().flatten().tolist() == [3, 4, 5]
    assert rows[1].nonzero().flatten().tolist() == [0, 1, 2] and cols[1].nonzero().flatten().tolist() == [0, 1, 2]
    assert rows[2].nonzero().flatten().tolist() == [3, 4, 5] and cols[2].nonzero().flatten().tolist() == [3, 4, 5]
    whole = _window_masks(_Draws(top), 6, 6, 6)[:, 0]
    assert whole.all()  # side = h: the only corner is 0


def _pyramid_ref(rows, cols, q):
    """sum_{k >= r} 1 / (k + 1)^q at ring distance r from the centre (rows // 2, cols // 2), unnormalised."""
    ci, cj, n = rows // 2, cols // 2, max(rows // 2, cols // 2) + 1
    out = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for j in range(cols):
            r = max(abs(i - ci), abs(j - cj))
            out[i, j] = sum(1.0 / (k + 1) ** q for k in range(r, n))
    return out


def _meta_bump_ref(s, norm):
    q, size = (4, lambda t: t.abs().sum()) if norm == "l1" else (2, lambda t: t.norm())
    top = s // 2
    bump = torch.zeros(s, s, dtype=torch.float64)
    if top:
        bump[:top] = _pyramid_ref(top, s, q) / size(_pyramid_ref(top, s, q))
    bump[top:] = -_pyramid_ref(s - top, s, q) / size(_pyramid_ref(s - top, s, q))
    return bump / size(bump)


def test_square_meta_bump_by_hand():
    from robustlab.attacks.square import _meta_bump

    for s in (1, 2, 3, 4, 5, 7):
        for norm in ("l2", "l1"):
            assert torch.allclose(_meta_bump(s, torch.zeros(1, dtype=torch.float64), norm), _meta_bump_ref(s, norm),
                                  atol=1e-12), (s, norm)
    # s = 3, L2: top row = pyramid(1, 3) = (1/4, 1 + 1/4, 1/4) ... normalised; bottom rows negative
    b = _meta_bump(3, torch.zeros(1, dtype=torch.float64))
    assert (b[0] > 0).all() and (b[1:] < 0).all() and abs(float(b.norm()) - 1) < 1e-12


def _reference_square_init(x, eps, norm, seed):
    """The start of Square-L2/L1: a grid of (h // 5)-sized meta-squares from the image's centred offset, a
    random sign per square and channel and a random transposition per square; L2: rescaled to eps."""
    b, ch, h, w = x.shape
    s = max(h // 5, 1)
    start = (h - 5 * s) // 2 if h >= 5 * s else 0
    n_h, n_w = h // s, w // s
    gen = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(b, n_h, n_w, ch, generator=gen, dtype=x.dtype) < 0.5, -1.0, 1.0)
    flips = torch.rand(b, n_h, n_w, generator=gen, dtype=x.dtype)
    bump = _meta_bump_ref(s, norm).to(x.dtype)
    delta = torch.zeros_like(x)
    for k in range(b):
        for i in range(n_h):
            for j in range(n_w):
                top, left = start + i * s, start + j * s
                if top + s <= h and left + s <= w:
                    bm = bump.T if flips[k, i, j] < 0.5 else bump
                    delta[k, :, top:top + s, left:left + s] += bm[None] * signs[k, i, j, :, None, None]
    if norm == "l2":
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps
    return delta


def lp_norm_of(d, norm):
    f = d.flatten(1)
    return f.norm(dim=1) if norm == "l2" else f.abs().sum(1)


@pytest.mark.parametrize("norm,eps,shape", [("l2", 0.5, (3, 2, 10, 10)), ("l2", 0.5, (2, 1, 12, 12)),
                                            ("l1", 2.0, (3, 2, 10, 10)),
                                            ("l1", 20.0, (2, 2, 15, 15))])
def test_square_l2_and_l1_start_from_the_meta_square_grid(norm, eps, shape):
    from robustlab.attacks import Square

    g = torch.Generator().manual_seed(6)
    x = 0.2 + 0.6 * torch.rand(shape, generator=g, dtype=torch.float64)
    threat = rl.ThreatModel(norm, eps)
    res = Square(threat, Towards(x), max_queries=1, seed=4)(nn.Flatten(), x, torch.zeros(shape[0], dtype=torch.long))
    delta = _reference_square_init(x, eps, norm, 4)
    assert Square(threat, early_stop=False).early_stop is False and Square(threat).early_stop is True
    if norm == "l1":  # the unit-L1 bumps sum past eps: projected onto the ball (just inside: eps (1 - 1e-6)) and box
        assert (delta.flatten(1).abs().sum(1) > eps).all()
        delta = threat.project(x, x + delta, eps * (1 - 1e-6)) - x
    assert torch.allclose(res.x_adv - x, delta, atol=1e-12)
    assert torch.allclose(lp_norm_of(res.x_adv - x, norm), torch.full((shape[0],), eps * (1 - 1e-6 if norm == "l1" else 1),
                                                                       dtype=x.dtype), atol=1e-9)


def test_square_l2_update_moves_mass_between_two_windows():
    """The paper's L2 move on given draws: window 1 = fresh meta-square (sign per channel, transposed on
    a coin flip) + its old direction, rescaled per channel to the mass of both windows plus the free
    budget; window 2 zeroed (before window 1 is written); the whole rescaled to ||delta||_2 = eps."""
    from robustlab.attacks import Square
    from robustlab.attacks.base import AttackContext

    b, ch, h, w, eps = 4, 2, 8, 8, 0.7
    g = torch.Generator().manual_seed(7)
    x = torch.rand(b, ch, h, w, generator=g, dtype=torch.float64)
    delta = torch.randn(b, ch, h, w, generator=g, dtype=torch.float64)
    delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.tensor([0.3, 0.6, 0.9, 1.0],
                                                                                          dtype=torch.float64).view(-1, 1, 1, 1)
    attack = Square(rl.ThreatModel("l2", eps))
    for p in (0.25, 0.1):  # sqrt(p h w) = 4 (even: side 5) and 2.5 (side 3, the minimum)
        side = {0.25: 5, 0.1: 3}[p]
        ctx = AttackContext(nn.Flatten(), x, torch.zeros(b, dtype=torch.long), attack.threat, Towards(x),
                            torch.Generator().manual_seed(11))
        new = attack._l2_update(ctx, delta, p, b, ch, h, w)
        gen = torch.Generator().manual_seed(11)
        u1, u2 = torch.rand(b, 2, generator=gen, dtype=x.dtype), torch.rand(b, 2, generator=gen, dtype=x.dtype)
        flips = torch.rand(b, generator=gen, dtype=x.dtype)
        signs = torch.where(torch.rand(b, ch, generator=gen, dtype=x.dtype) < 0.5, -1.0, 1.0)
        bump = _meta_bump_ref(side, "l2")
        ref = delta.clone()
        for k in range(b):
            (t1, l1), (t2, l2) = [[_corner(u[k, a], side, n) for a, n in ((0, h), (1, w))] for u in (u1, u2)]
            w1, w2 = (slice(t1, t1 + side), slice(l1, l1 + side)), (slice(t2, t2 + side), slice(l2, l2 + side))
            union = torch.zeros(h, w, dtype=torch.bool)
            union[w1] = union[w2] = True
            free = max(eps ** 2 - float(delta[k].norm()) ** 2, 0.0)
            bm = bump.T if flips[k] < 0.5 else bump
            for j in range(ch):
                old = delta[k, j][w1]
                fresh = bm * signs[k, j] + old / (old.norm() + 1e-10)
                target = (free / ch + float(delta[k, j][union].norm()) ** 2) ** 0.5
                ref[k, j][w2] = 0
                ref[k, j][w1] = fresh / fresh.norm() * target
            ref[k] = ref[k] / ref[k].norm() * eps
        assert torch.allclose(new, ref, atol=1e-12), p


def test_square_bands_are_exact_and_their_cache_bounded():
    from robustlab.attacks.square import _BANDS, _bands

    assert _bands(2, 4, "cpu").int().tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert _bands(3, 3, "cpu").int().tolist() == [[1, 1, 1]]
    for n in range(1, 300):  # more sizes than the cache keeps: the oldest are dropped
        _bands(1, n, "cpu")
    assert all(torch.equal(_bands(1, n, "cpu"), torch.eye(n, dtype=torch.bool)) for n in (1, 7, 299))
    assert len(_BANDS) <= 257
    assert _bands(2, 4, "cpu").int().tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


# ----- the engine (attacks/base.py) ----------------------------------------------------------------

class _Sqrt0(nn.Module):
    """Logits x, plus sqrt(x - x): the value is x, the gradient 0 * inf = NaN."""

    def forward(self, x):
        f = x.flatten(1)
        return f + (f - f).sqrt()


class _NaNFor(Towards):
    """Towards c, with a NaN loss for the samples in `bad` (a constant: finite gradients)."""

    def __init__(self, c, bad):
        super().__init__(c)
        self.bad = bad

    def loss(self, output, target):
        loss = super().loss(output, target)
        return torch.where(self.bad[: len(loss)], torch.full_like(loss, float("nan")), loss)


def test_engine_names_nan_gradients_and_nan_losses():
    from robustlab.errors import ModelOutputError

    model, x, c, y = _problem("linf")
    threat = rl.ThreatModel("linf", 0.1)
    with pytest.raises(ModelOutputError, match="^the input gradient contains NaN or inf; the model or loss is not "
                                               r"differentiable at these inputs \(check for log\(0\)"):
        FGSM(threat)(_Sqrt0(), x, y)
    with pytest.raises(ModelOutputError, match="^the objective's loss is NaN for 2 samples, so points cannot be ranked"):
        FGSM(threat, _NaNFor(c, torch.tensor([True, False, True])))(model, x, y)


def test_variable_threat_gradients_are_pulled_back_to_the_parameters():
    """For a threat whose variable is not the input (colour parameters theta), loss_and_grad returns the
    gradient with respect to theta: the input gradient mapped back through x' = a x + b."""
    from robustlab.attacks.base import AttackContext
    from robustlab.threat import ColorThreat

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 2, 2, generator=g)
    c = torch.rand(2, 3, 2, 2, generator=g)
    threat = ColorThreat(eps=1.0)
    theta = threat.identity(x) + 0.1 * torch.randn(2, 6, generator=g)
    ctx = AttackContext(nn.Flatten(), x, torch.zeros(2, dtype=torch.long), threat, Towards(c), torch.Generator())
    loss, grad, _, _ = ctx.loss_and_grad(theta)
    a, b = theta[:, :3, None, None], theta[:, 3:, None, None]
    x_new = (a * x + b).clamp(0, 1)
    inside = ((a * x + b) > 0) & ((a * x + b) < 1)
    g_x = -2 * (x_new - c) * inside
    assert torch.allclose(loss, _loss(x_new, c))
    assert torch.allclose(grad, torch.cat([(g_x * x).sum((2, 3)), g_x.sum((2, 3))], 1), atol=1e-6)


def test_a_mask_per_sample_follows_its_sample():
    """mask_per_sample: row i of the mask belongs to input i; BIM's iterates move only where it is 1."""
    model, x, c, y = _problem("linf", n=3, d=4, seed=4)
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]]).view(3, 1, 1, 4)
    threat = rl.ThreatModel("linf", 0.1, mask=mask, mask_per_sample=True)
    res = BIM(threat, Towards(c), steps=4)(model, x, y)
    v, points = x, [x]
    for _ in range(4):
        v = _project(x, v + 0.025 * (-2 * (v - c) * mask).sign(), 0.1, "linf")
        points.append(v)
    ref_x, ref_loss = _best(points, c)
    assert torch.allclose(res.x_adv, ref_x, atol=1e-6) and torch.allclose(res.loss, ref_loss, atol=1e-7)
    assert torch.equal(res.x_adv * (1 - mask), x * (1 - mask)) and not torch.equal(res.x_adv, x)


class _Offset(rl.threat.VariableThreat):
    """x' = x + v + offset_i: a variable threat with per-sample state."""

    per_sample_fields = ("offset",)

    def __init__(self, offset, eps):
        super().__init__("linf", eps)
        self.offset = offset

    def variable_like(self, x):
        return torch.zeros_like(x)

    def transform(self, x, v):
        return x + v + self.offset.view(-1, *[1] * (x.dim() - 1))


def test_variable_threat_with_per_sample_state_checks_the_batch():
    model, x, c, y = _problem("linf", n=3)
    threat = _Offset(torch.tensor([0.0, 0.01, -0.01]), 0.1)
    with pytest.raises(rl.InputError, match="^_Offset holds offset for 3 samples but the batch has 2"):
        FGSM(threat, Towards(c[:2]))(model, x[:2], y[:2])
    res = FGSM(threat, Towards(c))(model, x, y)
    step = 0.1 * (-2 * (x + threat.offset.view(-1, 1, 1, 1) - c)).sign()
    start, moved = x + threat.offset.view(-1, 1, 1, 1), x + threat.offset.view(-1, 1, 1, 1) + step
    ref_x, _ = _best([start, moved], c)
    assert torch.allclose(res.x_adv, ref_x, atol=1e-7)


class _FirstTwoPixels(nn.Module):
    """Logits = the first two numbers of the input."""

    def forward(self, x):
        return x.flatten(1)[:, :2]


def test_an_exhausted_oracle_budget_keeps_the_successes_and_says_why_the_rest_stopped():
    """Square on a score oracle with 3 queries per sample: sample 0 is misclassified from the start (success),
    sample 1 cannot be broken within eps and runs out of oracle budget (QueryBudgetExceeded ends the attack)."""
    from robustlab.attacks import Square
    from robustlab.oracles import ScoreOracle

    x = torch.tensor([[0.9, 0.1, 0.5, 0.5], [0.9, 0.1, 0.5, 0.5]]).view(2, 1, 2, 2)
    y = torch.tensor([1, 0])
    oracle = ScoreOracle.from_model(_FirstTwoPixels(), budget=3)
    res = Square(rl.ThreatModel("linf", 0.1), max_queries=100)(oracle, x, y)
    assert res.success.tolist() == [True, False]
    assert res.status == ["success", "oracle_budget"]
    # sample 0 stops after its first step; sample 1 spent the whole budget (repeated points are free)
    assert oracle.queries_of([0, 1]).tolist() == [2, 3] and res.forward_calls.tolist() == [2, 7]


class _BatchCentred(nn.Module):
    """Logits x - mean over the batch: a sample's class depends on the other samples in the batch."""

    def forward(self, x):
        f = x.flatten(1)[:, :2]
        return f - f.mean(0, keepdim=True)


def test_successes_that_do_not_hold_when_re_judged_are_withdrawn(caplog):
    """Success must hold at x_adv as returned: on a model whose decision depends on the batch, points that
    succeeded inside the attack's batch of 3 are re-judged in a batch of their own, and those that no
    longer succeed are reported as failures."""
    import logging

    x = torch.tensor([[0.50, 0.52], [0.50, 0.54], [0.50, 0.40]]).view(3, 1, 1, 2)
    y = torch.zeros(3, dtype=torch.long)
    model = _BatchCentred()
    with torch.no_grad():  # in the batch of 3, samples 0 and 1 are misclassified; alone together, only sample 1
        assert (model(x).argmax(1) != y).tolist() == [True, True, False]
        assert (model(x[:2]).argmax(1) != y[:2]).tolist() == [False, True]
    with caplog.at_level(logging.DEBUG, logger="robustlab.attacks.base"):
        res = FGSM(rl.ThreatModel("linf", 0.001))(model, x, y)
    assert res.success.tolist() == [False, True, False]
    assert "fgsm: 1 boundary points did not verify" in caplog.text
    # a decision attack's status follows: HopSkipJump with one query per sample finds its starting points
    # (the clean inputs) adversarial for samples 0 and 1 in the batch of 3; sample 0's success is withdrawn
    from robustlab.attacks import HopSkipJump

    res = HopSkipJump(rl.ThreatModel("l2", 0.1), max_queries=1, starting_points=x.clone())(model, x, y)
    assert res.success.tolist() == [False, True, False]
    assert res.status == ["done", "success", "no_start"]


def test_keep_last_returns_the_last_iterate_judged_once_more():
    """keep_last (transfer attacks): x_adv is the last iterate, not the best point, with its own loss."""
    model, x, c, y = _problem("linf", seed=5)
    attack = PGD(rl.ThreatModel("linf", 0.1), Towards(c), steps=6, step_size=0.07, starting_points=x,
                 keep_last=True)
    res = attack(model, x, y)
    v, points = x, [x]
    for _ in range(6):
        v = _project(x, v + _step(-2 * (v - c), 0.07, "linf"), 0.1, "linf")
        points.append(v)
    best, _ = _best(points, c)
    assert not torch.allclose(best, v)  # the step overshoots: the last iterate is not the best point
    assert torch.allclose(res.x_adv, v, atol=1e-7) and torch.allclose(res.loss, _loss(v, c), atol=1e-7)
    assert res.forward_calls.tolist() == [1] * 3 and res.grad_calls.tolist() == [6] * 3


def test_several_radii_reuse_the_points_broken_at_a_smaller_one():
    """eps=[...]: one result per radius in the order given; a sample broken at a smaller radius keeps that
    point at the larger ones, with no new passes. FGSM moves both logits by eps: sample i breaks iff its
    margin a_i < 2 eps."""
    x = torch.tensor([[0.55, 0.5], [0.65, 0.5], [0.75, 0.5], [1.0, 0.3]]).view(4, 1, 1, 2)
    y = torch.zeros(4, dtype=torch.long)
    attack = FGSM(rl.ThreatModel("linf", 0.5))
    assert repr(attack) == "FGSM(linf eps=0.5, CrossEntropy())"
    r3, r1, r2 = attack(_FirstTwoPixels(), x, y, eps=[0.3, 0.1, 0.2])
    assert [r.eps for r in (r3, r1, r2)] == [0.3, 0.1, 0.2]
    assert r1.success.tolist() == [True, True, False, False]
    assert r2.success.tolist() == r3.success.tolist() == [True, True, True, False]
    assert r1.grad_calls.tolist() == [1, 1, 1, 1]
    assert r2.grad_calls.tolist() == [0, 0, 1, 1] and r3.grad_calls.tolist() == [0, 0, 0, 1]
    assert torch.allclose(r3.x_adv[:2], x[:2] + torch.tensor([-0.1, 0.1]).view(1, 1, 1, 2))
    assert torch.allclose(r3.x_adv[2], x[2] + torch.tensor([-0.2, 0.2]).view(1, 1, 2))
    assert torch.allclose(r3.x_adv[3], x[3] + torch.tensor([-0.3, 0.3]).view(1, 1, 2))


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("l1", 2.0), ("linf", 0.1)])
def test_square_runs_on_images_narrower_than_tall(norm, eps):
    """Windows are capped by the width as well as the height: a 30 x 3 image (masked for Linf, so the
    full-image step runs) is attacked without error and every point stays inside the threat model."""
    import robustlab as rl
    from robustlab.attacks import Square

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 30, 3, generator=g)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(90, 3))
    y = lin(x).argmax(1)
    mask = (torch.rand(1, 30, 3, generator=g) < 0.5).float() if norm == "linf" else None
    threat = rl.ThreatModel(norm, eps, mask=mask)
    res = Square(threat, max_queries=60, seed=0)(lin, x, y)
    assert threat.contains(x, res.x_adv).all()
    assert int(res.queries.max()) <= 60


def test_dct_matrix_is_the_orthonormal_dct_ii():
    from robustlab.attacks.simba import dct_matrix

    m = dct_matrix(4, torch.float64)
    n = torch.arange(4, dtype=torch.float64)
    ref = torch.stack([torch.cos(torch.pi * (n + 0.5) * u / 4) for u in range(4)]) * (2 / 4) ** 0.5
    ref[0] /= 2 ** 0.5
    assert m.dtype == torch.float64 and torch.allclose(m, ref, atol=1e-15)
    assert torch.allclose(m @ m.T, torch.eye(4, dtype=torch.float64), atol=1e-14)
    assert m[0].tolist() == pytest.approx([0.5] * 4) and m[1, 0] == pytest.approx(0.5 ** 0.5 * 0.9238795325112867)


class TowardsRow(Towards):
    """Towards whose target is the sample's row: loss = -||output - c[target]||^2, so that a subset of the
    batch (the engine's ``sub``) is judged against its own centres."""

    def loss(self, output, target):
        return -((output - self.c.flatten(1)[target]) ** 2).sum(1)


def _simba_problem(n=3, c=2, h=4, w=3, seed=3):
    """float64 images with a maximiser c near x: every move's gain is well away from a tie."""
    g = torch.Generator().manual_seed(seed)
    x = (0.4 + 0.2 * torch.rand(n, c, h, w, generator=g)).double()
    cen = x + 0.03 * torch.randn(n, c, h, w, generator=g).double()
    return x, cen, torch.arange(n)


def _simba_reference(d, s):
    """Coordinates d = coordinate of (x - c) along each direction tried once: minus if it improves the
    objective (d > s/2), else plus if that improves (d < -s/2), else stay; returns the move and the
    number of queries (1 per direction, 2 where minus did not improve)."""
    move = torch.where(d > s / 2, -s, torch.where(d < -s / 2, s, 0.0)).to(d.dtype)
    return move, 1 + (d <= s / 2).sum(tuple(range(1, d.dim())))


def test_simba_pixel_basis_tries_each_coordinate_once():
    """On -||x - c||^2 with a Linf ball that does not bind, every pixel's move is decided by that pixel alone,
    whatever the random order: all c*h*w directions tried once give the reference exactly."""
    from robustlab.attacks import SimBA

    x, cen, y = _simba_problem()
    s, dim = 0.02, 2 * 4 * 3
    res = SimBA(rl.ThreatModel("linf", 0.5), TowardsRow(cen), basis="pixel", step_size=s, steps=dim)(nn.Flatten(), x, y)
    move, queries = _simba_reference(x - cen, s)
    ref = x + move
    assert res.x_adv.dtype == torch.float64 and torch.allclose(res.x_adv, ref, atol=1e-8, rtol=0)
    assert torch.allclose(res.loss, _loss(ref, cen), atol=1e-8, rtol=0)
    assert res.forward_calls.tolist() == (queries + dim).tolist()
    # a Linf ball smaller than the step clips every move to eps
    res = SimBA(rl.ThreatModel("linf", 0.005), TowardsRow(cen), basis="pixel", step_size=s, steps=dim)(nn.Flatten(), x, y)
    assert torch.allclose(res.x_adv, x + _simba_reference(x - cen, 0.005)[0], atol=1e-8, rtol=0)


@pytest.mark.parametrize("freq_dims, low_only", [(None, True), (None, False), (3, True)])
def test_simba_dct_basis_tries_the_low_frequencies_first(freq_dims, low_only):
    """DCT basis: the objective is separable in the orthonormal 2-D DCT coordinates too, so trying each
    direction once gives the reference exactly; with steps = size of the low block (u, v < f, per channel,
    f = freq_dims or max(h // 4, 2)) only the low frequencies move."""
    from robustlab.attacks import SimBA
    from robustlab.attacks.simba import dct_matrix

    x, cen, y = _simba_problem()
    c, h, w, s = 2, 4, 3, 0.02
    f = freq_dims or 2
    low = (torch.arange(h)[:, None] < f) & (torch.arange(w)[None, :] < f)
    steps = c * int(low.sum()) if low_only else c * h * w
    attack = SimBA(rl.ThreatModel("l2", 5.0), TowardsRow(cen), step_size=s, steps=steps, freq_dims=freq_dims)
    assert attack.basis == "dct"
    res = attack(nn.Flatten(), x, y)
    dh, dw = dct_matrix(h, torch.float64), dct_matrix(w, torch.float64)
    d = dh @ (x - cen) @ dw.T
    if low_only:
        d = torch.where(low, d, torch.zeros_like(d))   # the high frequencies are not tried: no move
    move, _ = _simba_reference(d, s)
    ref = x + dh.T @ move @ dw
    assert torch.allclose(res.x_adv, ref, atol=1e-8, rtol=0)
    assert torch.allclose(res.loss, _loss(ref, cen), atol=1e-8, rtol=0)
    tried = low if low_only else torch.ones(h, w, dtype=torch.bool)
    not_minus = ((d <= s / 2) & tried).sum((1, 2, 3))
    assert res.forward_calls.tolist() == (1 + steps + not_minus).tolist()


def test_simba_rejects_an_unknown_basis():
    from robustlab.attacks import SimBA

    from robustlab.errors import InputError

    with pytest.raises(InputError, match="basis"):
        SimBA(rl.ThreatModel("l2", 1.0), basis="fourier")
    assert SimBA(rl.ThreatModel("l2", 1.0), basis="pixel").basis == "pixel"


def _linear3(seed=4):
    """A float64 linear classifier on 4 numbers with 3 classes, and 3 inputs it classifies as class 0."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 4, generator=g).double())
        model[1].bias.copy_(torch.tensor([1.0, 0.0, -0.1]).double())
        x = (0.3 + 0.4 * torch.rand(40, 1, 1, 4, generator=g)).double()
        x = x[model(x).argmax(1) == 0][:3]
    assert x.shape[0] == 3
    return model, x, torch.zeros(3, dtype=torch.long)


def _reference_deepfool(model, x, y, norm, overshoot, steps):
    W, b = model[1].weight.detach(), model[1].bias.detach()
    xs, moves = [], []
    for i in range(x.shape[0]):
        v, r_total, lab = x[i].flatten(), torch.zeros(4, dtype=x.dtype), int(y[i])
        moves.append(0)
        others = [k for k in model(x[i:i + 1])[0].argsort(descending=True).tolist() if k != lab]
        for _ in range(steps):
            out = W @ v + b
            if out.argmax() != lab:
                break
            w = torch.stack([W[k] - W[lab] for k in others])
            f = torch.stack([out[k] - out[lab] for k in others]).abs()
            wn = w.norm(dim=1) if norm == "l2" else w.abs().sum(1)
            dist = (f + 1e-4) / wn
            j = int(dist.argmin())
            r = dist[j] / wn[j] * w[j] if norm == "l2" else dist[j] * w[j].sign()
            r_total = r_total + r
            v = (x[i].flatten() + (1 + overshoot) * r_total).clamp(0, 1)
            moves[-1] += 1
        xs.append(v.view(1, 1, 4))
    return torch.stack(xs), moves


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_follows_its_recurrence_on_a_linear_model(norm):
    """On a linear classifier DeepFool's linearisation is exact: one step reaches the nearest boundary
    (scaled by 1 + overshoot); with overshoot 0 and no 1e-4, the point would sit on it."""
    from robustlab.attacks import DeepFool
    from robustlab.threat import lp_norm

    model, x, y = _linear3()
    for overshoot, steps in ((0.02, 50), (0.5, 3)):
        res = DeepFool(rl.ThreatModel(norm, 10.0), overshoot=overshoot, steps=steps)(model, x, y)
        ref, moves = _reference_deepfool(model, x, y, norm, overshoot, steps)
        assert torch.allclose(res.x_adv, ref, atol=1e-12, rtol=0)
        # 2 gradients (the other two classes) per step, and one more step that finds the success
        assert res.grad_calls.tolist() == [2 * (m + 1) for m in moves] and moves == [1, 1, 1]
        assert res.success.all() and (model(ref).argmax(1) != 0).all()
        assert torch.allclose(res.loss, -lp_norm(ref - x, norm), atol=1e-12, rtol=0)
    # early_stop=False: the steps go on past the boundary (further out), the first success stays the best
    res = DeepFool(rl.ThreatModel(norm, 10.0), steps=4, early_stop=False)(model, x, y)
    assert torch.allclose(res.x_adv, _reference_deepfool(model, x, y, norm, 0.02, 4)[0], atol=1e-12, rtol=0)
    assert res.grad_calls.tolist() == [2 * 4] * 3
    # a radius smaller than the minimal perturbation: the clean point is all that lies inside
    res = DeepFool(rl.ThreatModel(norm, 1e-6))(model, x, y)
    assert not res.success.any() and torch.equal(res.x_adv, x)


def _reference_cw(model, x, y, steps, bss, c0, lr, kappa, early_stop):
    """CW-L2 with Adam in tanh space and the per-sample binary search on c; returns, per sample, the
    successful iterate of smallest norm (or None) and the sequence of constants used."""
    n = x.shape[0]
    const = torch.full((n,), c0, dtype=x.dtype)
    lower, upper = torch.zeros(n, dtype=x.dtype), torch.full((n,), float("inf"), dtype=x.dtype)
    best = [None] * n
    best_norm = [float("inf")] * n
    consts, rounds = [], [0] * n
    for _ in range(bss):
        active = [i for i in range(n) if not (early_stop and best[i] is not None)]
        if not active:
            break
        consts.append(const.clone())
        for i in active:
            rounds[i] += 1
        xa = x[active]
        w = torch.atanh((xa * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        m1, m2 = torch.zeros_like(w), torch.zeros_like(w)
        found = torch.zeros(len(active), dtype=torch.bool)
        c = const[active]
        for t in range(1, steps + 1):
            wr = w.detach().requires_grad_(True)
            v = (torch.tanh(wr) + 1) / 2
            out = model(v)
            z_y = out[:, 0]
            margin = out[:, 1:].amax(1) - z_y
            total = (v - xa).flatten(1).pow(2).sum(1) + c * (kappa - margin).clamp_min(0)
            grad, = torch.autograd.grad(total.sum(), wr)
            succ = out.argmax(1) != 0
            for j, i in enumerate(active):
                nrm = float((v[j] - xa[j]).detach().norm())
                if succ[j] and nrm < best_norm[i]:
                    best[i], best_norm[i] = v[j].detach(), nrm
            found |= succ & (margin.detach() >= kappa)
            m1 = 0.9 * m1 + 0.1 * grad
            m2 = 0.999 * m2 + 0.001 * grad * grad
            w = w - lr * (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
        idx = torch.tensor(active)
        upper[idx] = torch.where(found, torch.minimum(upper[idx], c), upper[idx])
        lower[idx] = torch.where(found, lower[idx], torch.maximum(lower[idx], c))
        const[idx] = torch.where(torch.isfinite(upper[idx]), (lower[idx] + upper[idx]) / 2, c * 10)
    return best, best_norm, consts, rounds


@pytest.mark.parametrize("early_stop, c0", [(False, 0.5), (True, 0.5), (False, 0.02)])
def test_cw_l2_follows_adam_and_the_binary_search_on_c(early_stop, c0):
    """CW-L2 on a linear classifier, step by step: Adam on w with x' = (tanh(w) + 1) / 2, the hinge
    c * max(kappa - margin, 0), and c bisected after a success, multiplied by 10 while none was found;
    x_adv is the successful iterate of smallest L2 norm."""
    from robustlab.attacks import CarliniWagnerL2

    model, x, y = _linear3()
    kw = dict(steps=6, bss=4, c0=c0, lr=0.05, kappa=0.05)
    res = CarliniWagnerL2(rl.ThreatModel("l2", 10.0), steps=6, binary_search_steps=4, initial_const=c0, lr=0.05,
                          confidence=0.05, early_stop=early_stop)(model, x, y)
    best, best_norm, consts, rounds = _reference_cw(model, x, y, early_stop=early_stop, **kw)
    assert all(b is not None for b in best)
    assert res.success.all()
    assert torch.allclose(res.x_adv, torch.stack(best), atol=1e-10, rtol=0)
    assert torch.allclose(res.loss, -torch.tensor(best_norm, dtype=x.dtype), atol=1e-10, rtol=0)
    assert res.grad_calls.tolist() == [6 * r for r in rounds]
    assert rounds == ([1] * 3 if early_stop else [4] * 3)   # early stop: all three succeed in the first round
    if not early_stop:   # the constants: bisected after a success, x10 before the first one
        want = [0.5, 0.25, 0.125, 0.0625] if c0 == 0.5 else [0.02, 0.2, 0.11, 0.065]   # x10 once, then bisected
        assert [c.tolist() for c in consts] == [pytest.approx([v] * 3, rel=1e-12) for v in want]


def test_bpda_checks_each_callable_and_keeps_the_input_dtype():
    from robustlab.attacks import BPDA
    from robustlab.errors import InputError

    for args in ((nn.Identity(), 3), (3, nn.Identity()), (nn.Identity(), nn.Identity(), 3)):
        with pytest.raises(InputError, match=r"BPDA\(model, preprocess, approx\): all three must be callables "
                                             r"\(approx may be None\)"):
            BPDA(*args)
    # a preprocessing that answers in float64 (rounding to 1/4): the value is g(x), in the input's dtype
    x = torch.tensor([[0.1, 0.3, 0.62, 0.9]], requires_grad=True)
    z = BPDA(nn.Identity(), lambda v: (v.double() * 4).round() / 4).transform(x)
    assert z.dtype == torch.float32 and z.tolist() == [[0.0, 0.25, 0.5, 1.0]]
    z.sum().backward()
    assert x.grad.tolist() == [[1.0] * 4]


def _linear_images(seed=6, n=5):
    """A linear classifier on 1 x 4 x 4 images with 3 classes, and n images with labels."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 16, generator=g))
        model[1].bias.zero_()
    x = 0.2 + 0.6 * torch.rand(n, 1, 4, 4, generator=g)
    return model, x, model(x).argmax(1).detach()


def test_universal_perturbation_follows_projected_sign_ascent_and_round_trips(tmp_path):
    """One batch of all inputs per epoch: delta <- clip_eps(delta + eps/10 sign(grad of the mean CE at
    clamp(x + delta))); history is the fooling rate after each epoch; save/load keeps delta, radius, tiling."""
    from robustlab.attacks import UniversalPerturbation

    model, x, y = _linear_images()
    threat = rl.ThreatModel("linf", 0.3)
    up = UniversalPerturbation.fit(model, x, y, threat, epochs=3, batch_size=len(x))
    delta, hist = torch.zeros(1, 1, 4, 4), []
    for _ in range(3):
        d = delta.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model((x + d).clamp(0, 1)), y)
        g, = torch.autograd.grad(loss, d)
        delta = (delta + 0.03 * g.sign()).clamp(-0.3, 0.3)
        hist.append((model((x + delta).clamp(0, 1)).argmax(1) != y).float().mean().item())
    assert torch.allclose(up.delta, delta, atol=1e-7) and up.history == pytest.approx(hist)
    assert 0 < hist[-1] and up.success_rate(model, x, y) == pytest.approx(hist[-1])
    tiled = UniversalPerturbation.fit(model, x, y, threat, epochs=1, batch_size=2, tile=(2, 2))
    tiled.save(tmp_path / "u.pt")
    back = UniversalPerturbation.load(tmp_path / "u.pt")
    assert back.tiled is True and back.threat.eps == 0.3 and torch.equal(back.delta, tiled.delta)
    assert torch.equal(back.apply(x), tiled.apply(x)) and back.history == tiled.history
    # a file written before tiles existed has no "tiled": it loads as a full-size perturbation
    torch.save({"kind": "universal", "delta": up.delta, "norm": "linf", "eps": 0.3, "bounds": (0.0, 1.0),
                "mask": None, "history": []}, tmp_path / "old.pt")
    assert UniversalPerturbation.load(tmp_path / "old.pt").tiled is False
    torch.save({"kind": "patch"}, tmp_path / "p.pt")
    from robustlab.errors import InputError

    with pytest.raises(InputError, match="universal"):
        UniversalPerturbation.load(tmp_path / "p.pt")


def test_fooling_rate_counts_over_batches():
    from robustlab.attacks.universal import _fooling_rate
    from robustlab.objectives import CrossEntropy

    model, x, y = _linear_images(n=5)
    y_wrong = y.clone()
    y_wrong[[0, 3]] = (y[[0, 3]] + 1) % 3
    assert _fooling_rate(model, x, y_wrong, CrossEntropy(), batch_size=2) == pytest.approx(2 / 5)
    assert _fooling_rate(model, x[:0], y[:0], CrossEntropy()) == 0.0


def test_adversarial_patch_follows_signed_ascent_over_random_placements(tmp_path):
    """fit: patch ~ U(lo, hi) from the seeded generator, then per batch a random order, a random location per
    image (top, then left), a sign step of lr on the mean CE, clipped to the bounds; apply pastes it at a
    given location."""
    from robustlab.attacks import AdversarialPatch
    from robustlab.attacks.universal import place_patch

    model, x, y = _linear_images()
    res = AdversarialPatch.fit(model, x, y, size=2, epochs=2, batch_size=len(x), lr=0.3, bounds=(0.1, 0.9), seed=6)
    gen = torch.Generator().manual_seed(6)
    patch = 0.1 + 0.8 * torch.rand(1, 2, 2, generator=gen)
    for _ in range(2):
        order = torch.randperm(len(x), generator=gen)
        top = torch.randint(0, 3, (len(x),), generator=gen)
        left = torch.randint(0, 3, (len(x),), generator=gen)
        p = patch.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(place_patch(x[order], p, top, left)), y[order])
        g, = torch.autograd.grad(loss, p)
        patch = (patch + 0.3 * g.sign()).clamp(0.1, 0.9)
    assert torch.allclose(res.patch, patch, atol=1e-7)
    assert (patch == 0.9).any() and (patch == 0.1).any()      # both bounds bind
    # apply at given corners: exactly the patch there, the image elsewhere
    top, left = torch.tensor([0, 2, 1, 0, 2]), torch.tensor([2, 0, 1, 0, 2])
    out = res.apply(x, top=top, left=left)
    for i in range(len(x)):
        t, l = int(top[i]), int(left[i])
        want = x[i].clone()
        want[:, t:t + 2, l:l + 2] = res.patch
        assert torch.equal(out[i], want)
    # success_rate and history: the placement at seed + 1
    gen = torch.Generator().manual_seed(7)
    t2, l2 = torch.randint(0, 3, (len(x),), generator=gen), torch.randint(0, 3, (len(x),), generator=gen)
    rate = (model(place_patch(x, res.patch, t2, l2)).argmax(1) != y).float().mean().item()
    assert res.success_rate(model, x, y, seed=7) == pytest.approx(rate) and res.history[-1] == pytest.approx(rate)
    res.save(tmp_path / "p.pt")
    back = AdversarialPatch.load(tmp_path / "p.pt")
    assert torch.equal(back.patch, res.patch) and back.bounds == (0.1, 0.9) and back.history == res.history


def _linear2(seed=8):
    """A float64 linear classifier with 2 classes on 4 numbers, inputs of class 0 and, for each, an
    adversarial start (class 1); margin f(v) = w . v + b (> 0: class 1)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -0.5, 0.8, 0.3]]).double())
        model[1].bias.copy_(torch.tensor([0.0, -0.9]).double())
    x = torch.tensor([[0.4, 0.5, 0.3, 0.5], [0.2, 0.6, 0.5, 0.4], [0.5, 0.5, 0.4, 0.3]]).double().view(3, 1, 1, 4)
    start = torch.tensor([[0.9, 0.2, 0.8, 0.6], [0.8, 0.1, 0.9, 0.7], [0.9, 0.4, 0.9, 0.9]]).double().view(3, 1, 1, 4)
    y = torch.zeros(3, dtype=torch.long)
    assert (model(x).argmax(1) == 0).all() and (model(start).argmax(1) == 1).all()
    return model, x, start, y


def _bisect(model, x, start, threshold):
    """The boundary binary search along x + a (start - x): lo = 0 (clean), hi = 1 (adversarial)."""
    out, queries = [], []
    for i in range(x.shape[0]):
        lo, hi, q = 0.0, 1.0, 0
        while hi - lo > threshold:
            mid = (lo + hi) / 2
            q += 1
            if model(x[i:i + 1] + mid * (start[i:i + 1] - x[i:i + 1])).argmax(1).item() == 1:
                hi = mid
            else:
                lo = mid
        out.append(x[i] + hi * (start[i] - x[i]))
        queries.append(q)
    return torch.stack(out), queries


def test_boundary_attack_starts_from_the_binary_search_and_keeps_its_budget():
    """Boundary attack, L2: one query checks each start, then a binary search to 1e-3 (10 queries) puts the
    start on the boundary; with max_queries = 11 that is the result, inside eps or not; each later step
    spends at most 2 queries and never leaves the adversarial side or moves away from x."""
    from robustlab.attacks import BoundaryAttack
    from robustlab.errors import InputError

    model, x, start, y = _linear2()
    ref, queries = _bisect(model, x, start, 1e-3)
    assert queries == [10] * 3
    d = (ref - x).flatten(1).norm(dim=1)
    eps = float(d[1] + d[0]) / 2   # sample 0 inside, 1 outside (d[0] < d[1])
    assert d[0] < eps < d[1] and d[2] < eps
    res = BoundaryAttack(rl.ThreatModel("l2", eps), starting_points=start, max_queries=11)(model, x, y)
    assert res.success.tolist() == [True, False, True]
    assert torch.allclose(res.x_adv[[0, 2]], ref[[0, 2]], atol=1e-12, rtol=0) and torch.equal(res.x_adv[1], x[1])
    assert res.status == ["success", "max_queries", "success"] and res.forward_calls.tolist() == [11] * 3
    # a radius no sample reaches: they all spend their budget walking; the best point only gets closer
    res = BoundaryAttack(rl.ThreatModel("l2", 1e-3), starting_points=start, max_queries=31, seed=1)(model, x, y)
    assert res.status == ["max_queries"] * 3 and res.forward_calls.tolist() == [31] * 3 and not res.success.any()
    with pytest.raises(InputError, match="the Boundary attack is an L2 attack: use ThreatModel\\('l2', eps\\)"):
        BoundaryAttack(rl.ThreatModel("linf", 0.1))


def test_boundary_attack_steps_stay_adversarial_and_approach_x():
    from robustlab.attacks import BoundaryAttack

    model, x, start, y = _linear2()
    ref, _ = _bisect(model, x, start, 1e-3)
    d0 = (ref - x).flatten(1).norm(dim=1)
    attack = BoundaryAttack(rl.ThreatModel("l2", 1e-3), starting_points=start, max_queries=200, seed=1,
                            spherical_step=0.05, source_step=0.05)
    res = attack(model, x, y)
    assert not res.success.any() and torch.equal(res.x_adv, x)   # nothing inside eps: the clean input is reported
    # a large radius and early_stop=False: it walks its whole budget and ends adversarial, closer than it began
    attack.threat = rl.ThreatModel("l2", 10.0)
    attack.early_stop = False
    res = attack(model, x, y)
    d = (res.x_adv - x).flatten(1).norm(dim=1)
    assert res.success.all() and (model(res.x_adv).argmax(1) == 1).all()
    assert (d < d0 - 1e-3).all() and res.forward_calls.max() <= 200


def test_hopskipjump_and_rays_reach_the_linear_boundary_within_their_budget():
    """On a linear classifier: HopSkipJump (L2) from given starts and RayS (Linf) from nothing end on the
    adversarial side, within 25% (HopSkipJump: its binary-search threshold d^(-3/2) is coarse for d = 4) and 2e-3 (RayS) of the exact minimal distances |f(x)| / ||w||_2 and
    |f(x)| / ||w||_1, never over max_queries; the first binary search alone (max_queries 11) is the bisection."""
    from robustlab.attacks import HopSkipJump, RayS

    model, x, start, y = _linear2()
    w = torch.tensor([1.0, -0.5, 0.8, 0.3]).double()
    f = -(x.flatten(1) @ w - 0.9)
    d2, dinf = f / w.norm(), f / w.abs().sum()
    res = HopSkipJump(rl.ThreatModel("l2", 10.0), starting_points=start, max_queries=300, early_stop=False)(model, x, y)
    dist = (res.x_adv - x).flatten(1).norm(dim=1)
    assert res.success.all() and (model(res.x_adv).argmax(1) == 1).all()
    assert (dist >= d2 - 1e-9).all() and (dist < 1.25 * d2).all() and res.forward_calls.tolist() == [300] * 3
    res = RayS(rl.ThreatModel("linf", 10.0), max_queries=200, early_stop=False)(model, x, y)
    dist = (res.x_adv - x).flatten(1).abs().amax(1)
    assert res.success.all() and (model(res.x_adv).argmax(1) == 1).all() and (res.forward_calls <= 200).all()
    assert (dist >= dinf - 1e-9).all() and (dist < dinf + 2e-3).all()
    assert ((res.x_adv >= 0) & (res.x_adv <= 1)).all() and res.x_adv.unique().numel() > 2


def test_random_transform_and_survival_rate_draw_from_their_generator():
    """RandomTransform: u ~ U[0,1)^[B, P] from its generator, theta = identity + (2u - 1) * range (colour:
    contrast 1 +- 0.3 eps, brightness +- 0.2 eps); survival_rate: the fraction of n such draws (generator
    seeded with `seed`) under which each sample stays misclassified."""
    from robustlab.attacks.parametric import ParametricPGD, RandomTransform, survival_rate
    from robustlab.threat import ColorThreat

    model, x, y = _linear_images(n=4)
    x = 0.3 + 0.3 * x           # in [0.36, 0.54]: no colour draw leaves the box
    threat = ColorThreat(eps=1.0)
    rt = RandomTransform(nn.Identity(), threat, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        u = torch.rand(4, 2, generator=g)
        want = (1 + (2 * u[:, :1] - 1) * 0.3).view(4, 1, 1, 1) * x + ((2 * u[:, 1:] - 1) * 0.2).view(4, 1, 1, 1)
        assert torch.allclose(rt(x), want, atol=1e-6)
    g = torch.Generator().manual_seed(9)
    hits = torch.zeros(4)
    for _ in range(7):
        u = torch.rand(4, 2, generator=g)
        v = (1 + (2 * u[:, :1] - 1) * 0.3).view(4, 1, 1, 1) * x + ((2 * u[:, 1:] - 1) * 0.2).view(4, 1, 1, 1)
        hits += (model(v).argmax(1) != y).float()
    rate = survival_rate(model, x, y, threat, n=7, seed=9)
    assert torch.allclose(rate, hits / 7) and 0 < rate.sum() < 4
    # ParametricPGD passes its settings on
    a = ParametricPGD(threat, "margin", steps=3, rel_step=0.2, restarts=2, random_start=False, early_stop=False, seed=4)
    assert (a.restarts, a.random_start, a.early_stop, a.seed, a.objective.name, a.steps) == (2, False, False, 4, "margin", 3)


def test_nes_and_bandits_budgets_and_settings():
    """NES: steps = (max_queries - 1) // (2 n + 1); Bandits-TD: (max_queries - 1) // 3; both pass early_stop
    and seed on; on -||x - c||^2 they raise the loss and spend what they announce."""
    from robustlab.attacks import NES, BanditsTD

    assert NES(rl.ThreatModel("linf", 0.1), n_samples=4, max_queries=50).steps == 5
    b = BanditsTD(rl.ThreatModel("linf", 0.1), max_queries=50, early_stop=False, seed=3)
    assert b.steps == 16 and isinstance(b.steps, int) and b.early_stop is False and b.seed == 3
    model, x, c, _ = _problem("linf", n=3, d=4, seed=2)
    y = torch.arange(3)
    x, c = x.expand(3, 1, 8, 4).contiguous(), c.expand(3, 1, 8, 4).contiguous()
    clean = _loss(x, c)
    nes = NES(rl.ThreatModel("linf", 0.1), TowardsRow(c), n_samples=3, sigma=0.01, step_size=0.01, max_queries=29)
    res = nes(model, x, y)
    assert nes.steps == 4 and (res.loss > clean).all() and (res.x_adv - x).abs().max() <= 0.1 + 1e-6
    assert res.forward_calls.max() <= 29
    r1 = BanditsTD(rl.ThreatModel("linf", 0.1), TowardsRow(c), max_queries=31, seed=1)(model, x, y)
    r2 = BanditsTD(rl.ThreatModel("linf", 0.1), TowardsRow(c), max_queries=31, seed=2)(model, x, y)
    assert (r1.loss > clean).all() and (r1.forward_calls <= 31).all()
    assert not torch.equal(r1.x_adv, r2.x_adv)          # the seed reaches the random directions


def test_ensemble_input_diversity_and_transfer():
    """Ensemble: weighted mean of logits; InputDiversity: resize to rnd in [h, 1.15 h], pad at a random
    corner to int(1.15 h) + 1, resize back (nearest), from its generator; transfer_attack and transfer_matrix
    count success on the target among its clean-correct points, with the surrogate seen through diversity."""
    import torch.nn.functional as F
    from robustlab.attacks.transfer import (Ensemble, InputDiversity, TransferMatrix, _default_attack,
                                            transfer_attack, transfer_matrix)

    model, x, y = _linear_images(n=6)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        other[1].weight.copy_(model[1].weight + 0.5 * torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
        other[1].bias.zero_()
    assert torch.allclose(Ensemble([model, other], [1, 3])(x), 0.25 * model(x) + 0.75 * other(x), atol=1e-6)
    assert torch.allclose(Ensemble([model, other])(x), 0.5 * model(x) + 0.5 * other(x), atol=1e-6)
    img = torch.arange(36.0).view(1, 1, 6, 6)
    div = InputDiversity(nn.Identity(), p=1.0, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        torch.rand((), generator=g)
        rnd = int(torch.randint(6, 7, (), generator=g))     # big = int(6 * 1.15) + 1 = 7
        r = F.interpolate(img, size=(rnd, rnd), mode="nearest")
        top = int(torch.randint(0, 7 - rnd + 1, (), generator=g))
        left = int(torch.randint(0, 7 - rnd + 1, (), generator=g))
        want = F.interpolate(F.pad(r, (left, 7 - rnd - left, top, 7 - rnd - top)), size=(6, 6), mode="nearest")
        assert torch.equal(div(img), want)
    threat = rl.ThreatModel("linf", 0.2)
    res = transfer_attack(model, other, x, y, threat, diversity=1.0, seed=2)
    crafted = _default_attack(threat, 2)(InputDiversity(model, p=1.0, generator=torch.Generator().manual_seed(2)), x, y)
    assert torch.equal(res.x_adv, crafted.x_adv)
    correct = other(x).argmax(1) == y
    fooled = other(res.x_adv).argmax(1) != y
    assert res.target_correct_clean.tolist() == correct.tolist() and not correct.all() and correct.any()
    assert res.target_success.tolist() == (fooled & correct).tolist()
    as_list = transfer_attack(model, lambda v: other(v).argmax(1).tolist(), x, y, threat, diversity=1.0, seed=2)
    assert as_list.target_success.tolist() == res.target_success.tolist()
    assert as_list.target_correct_clean.tolist() == correct.tolist()
    m = transfer_matrix({"a": model, "b": other}, x, y, threat, diversity=1.0)
    assert torch.equal(m.rates, transfer_matrix({"a": model, "b": other}, x, y, threat, diversity=1.0, seed=0).rates)
    seed0 = transfer_attack(model, other, x, y, threat, diversity=1.0).x_adv
    assert m.rates[0, 1].item() == pytest.approx(float(((other(seed0).argmax(1) != y) & correct).sum() / correct.sum()))
    md = TransferMatrix(["a", "b"], torch.tensor([[1.0, 0.25], [0.5, 0.875]])).to_markdown()
    assert md == "| source \\ target | a | b |\n|---|---|---|\n| a | 100.0% | 25.0% |\n| b | 50.0% | 87.5% |"


def test_adversarial_patch_names_the_image_size_it_does_not_fit():
    from robustlab.attacks import AdversarialPatch
    from robustlab.errors import InputError

    model, x, y = _linear_images(n=2)
    with pytest.raises(InputError, match=r"patch size 5 exceeds the image size \(4, 4\)"):
        AdversarialPatch.fit(model, x, y, size=5)
    # inputs with more leading axes (e.g. a pair of views, placed by a task's hook): the last two are the image
    with pytest.raises(InputError, match=r"patch size 5 exceeds the image size \(4, 4\)"):
        AdversarialPatch.fit(model, x[:, None].expand(2, 2, 1, 4, 4), y, size=5)


@pytest.mark.parametrize("attack", ["square", "simba"])
def test_input_coordinate_attacks_refuse_a_variable_of_another_shape(attack):
    """Square and SimBA search the input's coordinates: on a threat whose variable has another shape (one
    channel for three) they stop with one InputError instead of a shape error at some step."""
    from robustlab.attacks import create_attack
    from robustlab.errors import InputError
    from robustlab.threat import VariableThreat

    class OneChannelThreat(VariableThreat):  # one grey perturbation added to the three channels
        def variable_like(self, x):
            return torch.zeros_like(x[:, :1])

        def transform(self, x, v):
            return x + v

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    options = {"max_queries": 20} if attack == "square" else {"steps": 20}
    with pytest.raises(InputError, match="shape \\(1, 4, 4\\): attack it with a gradient attack"):
        create_attack(attack, OneChannelThreat("linf", 0.1), **options)(model, x, torch.zeros(2, dtype=torch.long))
