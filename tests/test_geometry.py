"""Loss-landscape geometry: exact-Hessian checks on a float64 MLP, invariance under the ReLU
rescaling, surfaces, sharpness, robust flatness, trajectories, models left untouched."""
import math

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from robustlab import geometry as G
from robustlab.attacks import PGD
from robustlab.errors import InputError
from robustlab.threat import ThreatModel


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def _data(n=48, seed=1, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def _exact_hessian(model, x, y, names=None):
    named = dict(model.named_parameters())
    names = names or list(named)
    shapes = [named[n].shape for n in names]
    w0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def f(v):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(model, ps, (x,)), y)

    return torch.autograd.functional.hessian(f, w0)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(4 * 3 * 3, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def _convbn(seed=0):
    torch.manual_seed(seed)
    m = ConvBN().double()
    m.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            m(torch.rand(16, 1, 6, 6, dtype=torch.float64))
    m.eval()
    return m


def test_top_and_smallest_eigenvalues_match_exact_hessian():
    model, (x, y) = _mlp(), _data()
    ev = torch.linalg.eigvalsh(_exact_hessian(model, x, y))
    top = G.hessian_eigenvalues(model, (x, y), k=3, dtype=torch.float64)
    assert torch.allclose(top.values, ev[-3:].flip(0), rtol=1e-4, atol=1e-10)
    assert top.values[0] >= top.values[1] >= top.values[2]
    low = G.hessian_eigenvalues(model, (x, y), k=2, which="smallest", dtype=torch.float64)
    assert torch.allclose(low.values, ev[:2], rtol=1e-4, atol=1e-10)
    assert low.values[0] < 0  # a trained-from-scratch MLP is not at a minimum: negative curvature exists
    # eigenvectors: H v = lambda v
    H = _exact_hessian(model, x, y)
    v = top.vectors[0]
    assert torch.allclose(H @ v, top.values[0] * v, atol=1e-6)
    assert top.passes == top.iterations
    # several batches give the Hessian of the mean over all of them
    multi = G.hessian_eigenvalues(model, (x, y), k=1, dtype=torch.float64, batch_size=10)
    assert math.isclose(float(multi.values[0]), float(ev[-1]), rel_tol=1e-4)


def test_layer_blocks_are_diagonal_blocks():
    model, (x, y) = _mlp(), _data()
    res = G.hessian_eigenvalues(model, (x, y), k=1, blocks="layer", dtype=torch.float64)
    assert list(res) == ["0", "2", "4"]
    names = ["4.weight", "4.bias"]
    Hb = _exact_hessian(model, x, y, names)
    assert math.isclose(float(res["4"].values[0]), float(torch.linalg.eigvalsh(Hb)[-1]), rel_tol=1e-4)


def test_trace_within_reported_uncertainty():
    model, (x, y) = _mlp(), _data()
    exact = float(_exact_hessian(model, x, y).trace())
    t = G.hessian_trace(model, (x, y), samples=200, dtype=torch.float64)
    assert abs(t.value - exact) < 4 * t.stderr
    # batched double backward gives the same products as one at a time (same probes), counted alike
    one = G.hessian_trace(model, (x, y), samples=12, dtype=torch.float64, seed=4)
    bat = G.hessian_trace(model, (x, y), samples=12, dtype=torch.float64, seed=4, vectors_per_call=5)
    assert torch.allclose(torch.tensor(bat.samples), torch.tensor(one.samples), rtol=1e-9) and bat.passes == 12
    hpp = G.hessian_trace(model, (x, y), method="hutch++", samples=60, dtype=torch.float64)
    assert abs(hpp.value - exact) < max(4 * hpp.stderr, 1e-6 * abs(exact))
    assert hpp.stderr < t.stderr * math.sqrt(200 / 20)  # the sketch removes most of the variance


def test_spectral_density_integrates_to_one_and_spans_extremes():
    model, (x, y) = _mlp(), _data()
    ev = torch.linalg.eigvalsh(_exact_hessian(model, x, y))
    H = _exact_hessian(model, x, y)
    runs, D = 4, H.shape[0]
    sd = G.spectral_density(model, (x, y), runs=runs, steps=30, dtype=torch.float64)
    dx = float(sd.grid[1] - sd.grid[0])
    assert math.isclose(float(sd.density.sum()) * dx, 1.0, rel_tol=2e-2)
    # the quadrature's first moment sum_i w_i theta_i is q^T H q of each run's unit probe: its mean over
    # runs estimates tr(H) / D; Rademacher probes have variance 2 sum_{i != j} H_ij^2 / D^2 per run
    first = (sd.weights * sd.nodes).sum(1)
    sd_first = math.sqrt(2 * float((H ** 2).sum() - (H.diagonal() ** 2).sum())) / D / math.sqrt(runs)
    assert abs(float(first.mean()) - float(H.trace()) / D) < 4 * sd_first
    # exactly: Gauss quadrature with m nodes integrates theta^k, k < 2m, so sum_i w_i theta_i^k = q^T H^k q
    # for each run's probe q (Rademacher / sqrt(D), drawn in order from the seed's generator)
    gen = torch.Generator().manual_seed(0)
    for r in range(runs):
        q = (torch.randint(0, 2, (D,), generator=gen) * 2 - 1).double() / math.sqrt(D)
        for k in (1, 2, 3):
            exact_k = float(q @ torch.linalg.matrix_power(H, k) @ q)
            assert math.isclose(float((sd.weights[r] * sd.nodes[r] ** k).sum()), exact_k, rel_tol=1e-6, abs_tol=1e-12)
    span = float(ev[-1] - ev[0])
    assert abs(float(sd.nodes.max()) - float(ev[-1])) < 1e-3 * span
    assert abs(float(sd.nodes.min()) - float(ev[0])) < 1e-2 * span  # extremes converge first in Lanczos


def test_rescale_preserves_function_and_breaks_naive_measures():
    model, (x, y) = _mlp(), _data()
    new = G.rescale(model, 4.0, example=x)
    assert (model(x) - new(x)).abs().max() < 1e-6
    assert not torch.equal(new[0].weight, model[0].weight)
    lam = lambda m: float(G.hessian_eigenvalues(m, (x, y), k=1, dtype=torch.float64).values[0])
    kes = lambda m: G.eps_sharpness(m, (x, y), eps=1e-3, steps=3).value
    assert abs(lam(new) / lam(model) - 1) > 0.5
    assert abs(kes(new) / kes(model) - 1) > 0.2
    # filter-normalised directions and adaptive measures do not see the reparametrisation
    s0 = G.surface_1d(model, (x, y), alphas=[-0.5, 0.5], seed=3).losses
    s1 = G.surface_1d(new, (x, y), alphas=[-0.5, 0.5], seed=3).losses
    assert torch.allclose(s0, s1, rtol=1e-6)
    a0 = G.adaptive_sharpness(model, (x, y), rho=0.2, steps=2).value
    a1 = G.adaptive_sharpness(new, (x, y), rho=0.2, steps=2).value
    assert math.isclose(a0, a1, rel_tol=1e-6)
    r0 = G.average_sharpness(model, (x, y), sigma=0.1, samples=4, relative=True).value
    r1 = G.average_sharpness(new, (x, y), sigma=0.1, samples=4, relative=True).value
    assert math.isclose(r0, r1, rel_tol=1e-6)


def test_rescale_with_batchnorm_and_invariance_report():
    model = _convbn()
    x = torch.rand(20, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    before = G.model_state(model)
    new = G.rescale(model, 3.0, pairs="all", example=x)
    assert (model(x) - new(x)).abs().max() < 1e-6
    assert G.rescalable_pairs(model) == [("body.1", "body.5"), ("body.5", "body.7")]
    rep = G.invariance_report(model, ["top_eigenvalue", "filter_1d", "asam"], alphas=[0.5, 2.0], data=(x, y))
    assert rep.alphas == [0.5, 1.0, 2.0]
    assert not rep.invariant["top_eigenvalue"] and rep.invariant["filter_1d"] and rep.invariant["asam"]
    assert "| top_eigenvalue |" in rep.to_markdown()
    for n, t in G.model_state(model).items():
        assert torch.equal(t, before[n]), n
    with pytest.raises(InputError):
        G.rescale(model, -1.0)


def test_filter_normalised_direction_has_filter_norms():
    model = _convbn()
    geo = G.ParameterGeometry(normalization="filter")
    w = {n: p.detach() for n, p in model.named_parameters()}
    d = geo.normalize({n: torch.randn_like(p) for n, p in w.items()}, w)
    for n, t in w.items():
        if t.dim() > 1:
            assert torch.allclose(d[n].flatten(1).norm(dim=1), t.flatten(1).norm(dim=1))
        else:
            assert torch.count_nonzero(d[n]) == 0
    lay = G.ParameterGeometry(normalization="layer").normalize({n: torch.randn_like(p) for n, p in w.items()}, w)
    assert math.isclose(float(lay["body.5.weight"].norm()), float(w["body.5.weight"].norm()), rel_tol=1e-9)
    assert G.ParameterGeometry(params="weights").select(model) == ["body.0.weight", "body.5.weight", "body.7.weight"]
    assert "body.1.weight" not in G.ParameterGeometry(params="no_norm").select(model)


def test_surfaces_match_model_losses_and_leave_model_untouched():
    model = _convbn()
    x = torch.rand(30, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    before = G.model_state(model)
    with torch.no_grad():
        base = float(nn.functional.cross_entropy(model(x), y))
    s = G.surface_1d(model, (x, y), alphas=[-1, -0.5, 0, 0.5, 1], chunk=5)
    assert math.isclose(float(s.losses[2]), base, rel_tol=1e-9)
    assert s.passes < s.naive_passes  # vmapped over weight points
    loop = G.surface_1d(model, (x, y), alphas=[-1, -0.5, 0, 0.5, 1], chunk=1)
    assert torch.allclose(s.losses, loop.losses, rtol=1e-9) and loop.passes == 5
    s2 = G.surface_2d(model, (x, y), xs=[-0.5, 0, 0.5], ys=[-0.5, 0, 0.5], batch_size=8)
    assert s2.losses.shape == (3, 3) and math.isclose(float(s2.losses[1, 1]), base, rel_tol=1e-9)
    other = _convbn(seed=5)
    with torch.no_grad():
        base_b = float(nn.functional.cross_entropy(other(x), y))
    it = G.interpolate(model, other, (x, y), alphas=[0, 0.5, 1])
    assert math.isclose(float(it.losses[0]), base, rel_tol=1e-9)
    assert math.isclose(float(it.losses[2]), base_b, rel_tol=1e-9)
    # batch statistics and recalibration run without writing into the model
    G.surface_1d(model, (x, y), alphas=[0, 0.5], geometry=G.ParameterGeometry(bn="batch"))
    G.surface_1d(model, (x, y), alphas=[0, 0.5], geometry=G.ParameterGeometry(bn="recalibrate"))
    G.hessian_eigenvalues(model, (x, y), k=1, bn="batch")
    for n, t in G.model_state(model).items():
        assert torch.equal(t, before[n]), n
    assert not model.training


def test_sharpness_measures_are_consistent():
    model, (x, y) = _mlp(), _data()
    base = G.LossFunction(model, (x, y)).loss()
    sam = G.worst_case_sharpness(model, (x, y), rho=0.05)
    sam3 = G.worst_case_sharpness(model, (x, y), rho=0.05, steps=3)
    assert sam.value > 0 and sam3.value >= sam.value - 1e-9 and math.isclose(sam.base_loss, base, rel_tol=1e-9)
    msh = G.worst_case_sharpness(model, (x, y), rho=0.05, m=16)  # 48 points: three chunks of 16
    chunks = [G.worst_case_sharpness(model, (x[i:i + 16], y[i:i + 16]), rho=0.05).value for i in (0, 16, 32)]
    assert math.isclose(msh.value, sum(chunks) / 3, rel_tol=1e-9)
    assert msh.value > sam.value  # per-chunk ascent directions fit each chunk: m-sharpness is larger
    kes = G.eps_sharpness(model, (x, y), eps=1e-2, steps=3)
    assert kes.value > 0
    avg = G.average_sharpness(model, (x, y), sigma=0.05, samples=5)
    assert avg.stderr > 0
    model, (x, y) = _trained_mlp()  # accuracy near 1, so weight noise can lower it
    pb = G.pac_bayes_sigma(model, (x, y), target=0.1, samples=2, iterations=6)
    sigma = pb.details["sigma"]
    assert pb.details["bracketed"]
    assert _accuracy_drop(model, (x, y), sigma, samples=2) <= 0.1 < _accuracy_drop(model, (x, y), 2 * sigma, samples=2)


def _trained_mlp():
    """The MLP fitted (Adam, 150 full-batch steps) to labels of a random linear map: accuracy ~1."""
    model, (x, _) = _mlp(), _data()
    y = (x @ torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=x.dtype)).argmax(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


def _accuracy_drop(model, data, sigma, samples, seed=0):
    """Mean accuracy drop under w + sigma z, z ~ N(0, I), drawn as pac_bayes_sigma draws them."""
    L = G.LossFunction(model, data)
    gen = torch.Generator().manual_seed(seed)
    acc = lambda p=None: 1 - float(L.per_sample(p)[1].float().mean())
    noisy = [acc({n: w + sigma * torch.randn(w.shape, generator=gen, dtype=w.dtype) for n, w in L.params.items()})
             for _ in range(samples)]
    return acc() - sum(noisy) / samples


def test_pac_bayes_reports_an_unbracketed_search(caplog):
    model, (x, y) = _trained_mlp()
    with caplog.at_level("WARNING", logger="robustlab.geometry.sharpness"):
        small = G.pac_bayes_sigma(model, (x, y), target=0.1, samples=2, iterations=3, low=1e-6, high=1e-4)
    assert not small.details["bracketed"] and small.details["sigma"] == 1e-4 and small.details["drop_high"] <= 0.1
    assert "raise `high`" in caplog.text
    big = G.pac_bayes_sigma(model, (x, y), target=0.05, samples=2, iterations=3, low=5.0, high=10.0)
    assert not big.details["bracketed"] and big.details["sigma"] == 5.0 and big.details["drop_low"] > 0.05
    with pytest.raises(InputError):
        G.pac_bayes_sigma(model, (x, y), low=1.0, high=0.5)


def test_robust_flatness_and_robust_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(24, 1, 4, 4)
    y = torch.randint(0, 3, (24,))
    attack = PGD(ThreatModel("linf", 0.1), steps=5, early_stop=False)
    clean = G.LossFunction(model, (x, y)).loss()
    robust = G.LossFunction(model, (x, y), attack=attack).loss()
    assert robust > clean
    before = G.model_state(model)
    avg = G.average_robust_flatness(model, (x, y), attack, xi=0.3, samples=3)
    assert math.isclose(avg.base_loss, robust, rel_tol=1e-5) and avg.passes >= 4
    worst = G.worst_robust_flatness(model, (x, y), attack, xi=0.05, steps=2)
    assert worst.value > 0
    lam_fixed = G.hessian_eigenvalues(model, (x, y), k=1, attack=attack, robust="fixed")
    assert lam_fixed.values[0] > 0
    for n, t in G.model_state(model).items():
        assert torch.equal(t, before[n])
    with pytest.raises(InputError):
        G.average_robust_flatness(model, (x, y), None)


def test_trajectory_pca_recovers_a_plane(tmp_path):
    torch.manual_seed(0)
    model = _mlp()
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    a = {n: torch.randn_like(t) for n, t in w.items()}
    b = {n: torch.randn_like(t) for n, t in w.items()}
    snaps = [{n: w[n] + (1 - s) * a[n] + (1 - s) ** 2 * b[n] for n in w} for s in torch.linspace(0, 1, 6).tolist()]
    tr = G.trajectory_pca(snaps, model)
    assert tr.residuals.max() < 1e-8  # the path lies in a plane through the final point
    assert math.isclose(float(tr.explained.sum()), 1.0, rel_tol=1e-9)
    # in-plane coordinates are an isometry: pairwise distances of the snapshots are kept
    F = torch.stack([torch.cat([s[n].reshape(-1) for n in w]) for s in snaps])
    assert torch.allclose(torch.cdist(tr.coords, tr.coords), torch.cdist(F, F), rtol=1e-9, atol=1e-9)
    x, y = _data()
    surf = G.trajectory_surface(model, (x, y), tr, points=5)
    assert surf.losses.shape == (5, 5)
    from robustlab.geometry.plots import animate_trajectory, plot_contour

    assert plot_contour(surf, tmp_path / "c.png", tr.coords).exists()
    assert animate_trajectory(surf, tr.coords, tmp_path / "t.gif").stat().st_size > 0


def test_regression_targets_and_bad_input():
    torch.manual_seed(0)

    class MSE:
        name = "mse"

        def loss(self, output, target):
            return ((output - target[0]) ** 2).mean(1)

        def success(self, output, target):
            raise NotImplementedError

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    t = (torch.randn(10, 2, dtype=torch.float64), torch.ones(10))
    from robustlab.objectives import Objective

    obj = type("MSEObj", (Objective,), {"loss": MSE.loss, "success": MSE.success})()
    r = G.hessian_eigenvalues(model, (x, t), k=1, objective=obj)
    assert r.values[0] > 0  # MSE of a net: Gauss-Newton part dominates at init
    with pytest.raises(InputError):
        G.hessian_eigenvalues(model, None)
    with pytest.raises(InputError):
        G.ParameterGeometry(normalization="bogus")


@pytest.mark.slow
def test_cli_landscape_and_compare_geometry(tmp_path, monkeypatch):
    import json

    from robustlab.taskspec import get_task

    from robustlab.cli import main

    common = ["--no-progress", "train", "--model", "mlp", "--model-kwargs", '{"hidden": [16]}', "--data", "digits",
              "--epochs", "3", "--attack-steps", "2", "--eval-n", "50", "--runs", str(tmp_path)]
    assert main(common + ["--name", "std", "--eps", "0.1", "--snapshot-every", "1"]) == 0
    assert main(common + ["--name", "pgd", "--eps", "0.2", "--method", "pgd"]) == 0
    assert main(["--no-progress", "landscape", str(tmp_path / "std"), "--n", "64", "--grid", "5",
                 "--attack-steps", "2"]) == 0
    res = json.loads((tmp_path / "std" / "geometry.json").read_text())
    assert {"top_eigenvalue", "trace", "sam", "robust_flatness_avg"} <= set(res["scalars"])
    assert len(res["measures"]["trajectory"]["coords"]) == 3  # epochs 1, 2 and the final weights
    for fig in ("geometry_density.png", "geometry_contour.png", "geometry_surface3d.png", "geometry_1d.png",
                "geometry_trajectory.png", "geometry_trajectory.gif"):
        assert (tmp_path / "std" / "figures" / fig).stat().st_size > 0
    assert main(["--no-progress", "compare-geometry", str(tmp_path / "std"), str(tmp_path / "pgd"), "--n", "64",
                 "--measures", "hessian,sharpness", "--attack-steps", "2", "--out", str(tmp_path)]) == 0
    cmp = json.loads((tmp_path / "geometry_comparison.json").read_text())
    assert len(cmp["runs"]) == 2 and set(cmp["kendall_tau"]) >= {"top_eigenvalue", "sam"}
    # one radius for all runs: the largest training eps; std's eps=0.1 geometry was measured again at 0.2
    assert cmp["eps"] == 0.2 and json.loads((tmp_path / "std" / "geometry.json").read_text())["eps"] == 0.2
    assert main(["--no-progress", "landscape", str(tmp_path / "std"), "--measures", "bogus"]) == 2
    # the run's task objective drives every measure: a task whose training loss is 2 x CE doubles the trace
    import yaml

    from robustlab.objectives import CrossEntropy
    from robustlab.experiments import geometry as RG
    from robustlab.taskspec import Task

    class DoubleCE(CrossEntropy):
        name = "double_ce"

        def loss(self, output, target):
            return 2 * super().loss(output, target)

    double = Task("double", "CE x 2", objectives={"ce": CrossEntropy, "double_ce": DoubleCE}, train_objective="double_ce")
    monkeypatch.setattr(RG, "get_task", lambda name: double if name == "double" else get_task(name))
    run = tmp_path / "std"
    kw = dict(n=64, eps=0.1, attack_steps=2, progress=False, figures=False)
    base = RG.landscape(run, "trace", **kw)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "task": "double"}))
    res = RG.landscape(run, "trace", **kw)
    assert res["objective"] == "double_ce" and base["objective"] == "ce"
    assert math.isclose(res["scalars"]["trace"], 2 * base["scalars"]["trace"], rel_tol=1e-5)
    assert math.isclose(res["gaps"]["train"]["loss"], 2 * base["gaps"]["train"]["loss"], rel_tol=1e-5)


def test_landscape_on_a_missing_run_creates_nothing(tmp_path, capsys):
    from robustlab.cli import main
    from robustlab.experiments.geometry import landscape

    missing = tmp_path / "nope"
    assert main(["--no-progress", "landscape", str(missing), "--trust-code"]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(InputError, match="not a model run"):
        landscape(missing)
    assert main(["--no-progress", "compare-geometry", str(missing), str(tmp_path / "other")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_task_objective_of_a_run():
    from robustlab.objectives import CrossEntropy
    from robustlab.experiments.geometry import task_objective

    assert type(task_objective({})) is CrossEntropy and type(task_objective({"task": "classification"})) is CrossEntropy
    assert type(task_objective({"task": "stereo"})).__name__ == "SmoothL1Error"


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _every_measure(device):
    """Every public measure once on a tiny conv+BN model on ``device``; values as floats."""
    model, other = _convbn().to(device), _convbn(seed=5).to(device)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 6, 6, dtype=torch.float64, generator=g).to(device)
    y = torch.randint(0, 3, (12,), generator=g).to(device)
    data = (x, y)
    attack = PGD(ThreatModel("linf", 0.05), steps=2, early_stop=False)
    eig = G.hessian_eigenvalues(model, data, k=2, max_iter=8)
    assert eig.vectors.device.type == device
    w = {n: p.detach() for n, p in model.named_parameters()}
    snaps = [{n: t + s * torch.ones_like(t) + s * s * torch.full_like(t, 0.5) for n, t in w.items()}
             for s in (1.0, 0.5, 0.0)]
    traj = G.trajectory_pca(snaps, model)
    out = {
        "top": float(eig.values[0]),
        "low": float(G.hessian_eigenvalues(model, data, k=1, which="smallest", max_iter=8).values[0]),
        "layer": float(G.hessian_eigenvalues(model, data, k=1, blocks="layer", max_iter=6)["body.7"].values[0]),
        "trace": G.hessian_trace(model, data, samples=3).value,
        "hutch++": G.hessian_trace(model, data, samples=6, method="hutch++", vectors_per_call=2).value,
        "density": float(G.spectral_density(model, data, runs=1, steps=6).nodes.max()),
        "surface_1d": float(G.surface_1d(model, data, alphas=[-0.5, 0, 0.5], chunk=3).losses.sum()),  # vmapped
        "surface_2d": float(G.surface_2d(model, data, xs=[-0.5, 0.5], ys=[0.0, 0.5], chunk=1).losses.sum()),
        "recalibrated": float(G.surface_1d(model, data, alphas=[0.5], geometry=G.ParameterGeometry(bn="recalibrate"))
                              .losses[0]),
        "interpolate": float(G.interpolate(model, other, data, alphas=[0.5]).losses[0]),
        "keskar": G.eps_sharpness(model, data, steps=2).value,
        "sam": G.worst_case_sharpness(model, data, m=6).value,
        "asam": G.adaptive_sharpness(model, data).value,
        "average": G.average_sharpness(model, data, sigma=0.05, samples=2).value,
        "average_relative": G.average_sharpness(model, data, sigma=0.05, samples=2, relative=True).value,
        "pac_bayes": G.pac_bayes_sigma(model, data, samples=1, iterations=3).value,
        "trajectory": float(G.trajectory_surface(model, data, traj, points=2).losses.sum()),
        "invariance": G.invariance_report(model, ["filter_1d"], alphas=[2.0], data=data,
                                          example=x).values["filter_1d"][0],
    }
    robust = {  # PGD's random start may differ between devices: checked for finiteness only
        "robust_top": float(G.hessian_eigenvalues(model, data, k=1, attack=attack, robust="fixed", max_iter=6).values[0]),
        "flat_avg": G.average_robust_flatness(model, data, attack, samples=2).value,
        "flat_worst": G.worst_robust_flatness(model, data, attack, steps=1).value,
    }
    return out, robust


@pytest.mark.parametrize("device", DEVICES)
def test_every_measure_runs_on_the_models_device(device):
    out, robust = _every_measure(device)
    for k, v in {**out, **robust}.items():
        assert math.isfinite(v), k
    if device != "cpu":  # the same numbers as on the CPU (random draws come from CPU generators)
        ref, _ = _every_measure("cpu")
        for k, v in out.items():
            assert math.isclose(v, ref[k], rel_tol=1e-6, abs_tol=1e-9), (k, v, ref[k])


def test_rescale_check_restores_mixed_module_modes():
    model, (x, _) = _mlp(), _data()
    model.train()
    model[2].eval()  # mixed: the container trains, one layer is frozen in eval
    new = G.rescale(model, 2.0, example=x)
    assert model.training and model[0].training and not model[2].training
    assert new.training and not new[2].training  # the copy keeps the same per-module modes
