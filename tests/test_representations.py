"""Robust representations: saliency, alignment, CKA, inversion, probes, the VAE and its latent attack."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from robustlab.data import Dataset
from robustlab.models.vae import VAEConfig, train_vae
from robustlab.representations import (activations, alignment, class_interpolation, invert,
                                        linear_cka, linear_probe, mean_ci, on_manifold_attack, resize, saliency,
                                        save_grid, split_classes)


def _linear(d=12, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated"])
def test_saliency_of_linear_model_is_its_weight(method):
    model = _linear(12, 3)
    w = model[1].weight.detach()
    x = torch.rand(5, 1, 3, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    att = saliency(model, x, y, method, nt_samples=4)
    expected = w[y].reshape(5, 1, 3, 4)
    if method == "integrated":  # IG of a linear score from a black baseline: (x - 0) * w
        expected = x * expected
    torch.testing.assert_close(att, expected, atol=1e-5, rtol=1e-4)


def test_saliency_rejects_unknown_method():
    from robustlab.errors import InputError

    with pytest.raises(InputError, match="unknown saliency method"):
        saliency(_linear(), torch.rand(2, 12), torch.tensor([0, 1]), "lime")


def test_alignment_is_one_when_gradient_is_the_image():
    # score_y(x) = 0.5 * ||x||^2 for every class: gradient = x, so the alignment is exactly 1
    class Quad(nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).pow(2).sum(1, keepdim=True).repeat(1, 2)

    x = torch.rand(6, 1, 8, 8)
    res = alignment(Quad(), x, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(res.alignment, torch.ones(6), atol=1e-5, rtol=0)
    s = res.summary()
    assert s["alignment"]["n"] == 6 and s["alignment"]["ci95"] == pytest.approx([1.0, 1.0], abs=1e-5)
    # a linear model's gradient is a fixed pattern: alignment with random images is well below 1
    lin = alignment(_linear(64, 2), x, torch.zeros(6, dtype=torch.long)).alignment
    assert float(lin.mean()) < 0.5


def test_mean_ci_t_interval():
    out = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert out["mean"] == 2.5
    half = 3.182446305284263 * math.sqrt(1.6666666666666667) / 2  # t_{0.975, 3} * s / sqrt(n)
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half], rel=1e-6)


def test_cka_identity_orthogonal_scaling_but_not_invertible_maps():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g) * torch.linspace(0.2, 3.0, 10)  # anisotropic
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 7.3 * x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x @ q * 0.1, x) == pytest.approx(1.0, abs=1e-10)
    a = torch.diag(torch.logspace(-1.5, 1.5, 10)) @ torch.randn(10, 10, generator=g)  # invertible, not orthogonal
    assert torch.linalg.matrix_rank(a) == 10
    assert linear_cka(x, x @ a) < 0.9
    assert linear_cka(x, torch.randn(200, 10, generator=g)) < 0.2  # unrelated features


def test_activations_penultimate_and_named_layer():
    from robustlab.models import FastMNISTNet

    m = FastMNISTNet().eval()
    x = torch.rand(3, 1, 28, 28)
    assert activations(m, x).shape == (3, 100)            # input of the last Linear
    torch.testing.assert_close(activations(m, x), m.penultimate(m.features(x)))
    assert activations(m, x, "features.1").shape == (3, 16 * 14 * 14)
    from robustlab.errors import InputError

    with pytest.raises(InputError, match="unknown layer"):
        activations(m, x, "nope")


def test_inversion_reaches_target_representation():
    torch.manual_seed(0)
    # tanh: no dead units at the seed (a ReLU unit off at the seed but on at the target has no gradient)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    target = torch.rand(4, 1, 8, 8) * 0.6 + 0.2
    res = invert(model, target, steps=300, step_size=0.05)
    assert float(res.seed_distance.mean()) > 0.1
    assert float(res.distance.max()) < 0.02           # relative penultimate distance reached
    assert bool(res.same_class.all())
    assert res.x.min() >= 0 and res.x.max() <= 1


def test_class_interpolation_moves_towards_target():
    torch.manual_seed(0)
    model = _linear(64, 3).eval()
    x = torch.rand(2, 1, 8, 8)
    out = class_interpolation(model, x, 2, [0.0, 0.5, 2.0, 8.0], steps=20)
    assert out["frames"].shape == (4, 2, 1, 8, 8)
    assert float(out["distance"][0].max()) == 0.0
    p = out["prob"]
    assert bool((p[1:] >= p[:-1] - 1e-4).all())       # target probability grows with eps
    assert bool((p[-1] > p[0] + 0.2).all()) and bool(out["success"][-1].all())
    assert bool((out["distance"][-1] > 1.0).all())    # the large radius is used, not just a nudge
    assert bool((out["distance"][1:] <= torch.tensor([0.5, 2.0, 8.0])[:, None] + 1e-4).all())


def test_save_grid_writes_png(tmp_path):
    path = save_grid(torch.rand(2, 3, 1, 8, 8), tmp_path / "g.png", ["a", "b"], ["1", "2", "3"], title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_linear_probe_and_transfer_helpers():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.rand(120, 1, 8, 8, generator=g) * 0.2 + y[:, None, None, None].float() * 0.3  # class = brightness
    data = Dataset(x.clamp(0, 1), y, "toy", ["a", "b", "c"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    res = linear_probe(model, Dataset(data.x[:80], y[:80]), Dataset(data.x[80:], y[80:]))
    assert res.n_features == 8 and res.accuracy > 0.9
    big = resize(data, 28)
    assert big.x.shape == (120, 1, 28, 28) and float(big.x.max()) <= 1
    held = split_classes(data, [2, 0])
    assert set(held.y.tolist()) == {0, 1} and len(held) == 80 and held.classes == ["c", "a"]


def test_linear_probe_finetune_changes_a_copy_and_beats_the_probe():
    """A 3-unit bottleneck of a random network: the frozen probe is weak, fine-tuning the network with
    the probe's head fixes it; the passed model is unchanged, the copy's backbone moved."""
    g = torch.Generator().manual_seed(0)
    n = 300
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[:, 0, :4, :4] += (y == 1).float()[:, None, None] * 0.5     # class 1: bright top-left quadrant
    x[:, 0, 4:, 4:] += (y == 2).float()[:, None, None] * 0.5     # class 2: bright bottom-right quadrant
    tr, te = Dataset(x[:200].clamp(0, 1), y[:200]), Dataset(x[200:].clamp(0, 1), y[200:])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.ReLU(), nn.Linear(3, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = linear_probe(model, tr, te, finetune=True, finetune_epochs=15, finetune_lr=1e-2, finetune_batch_size=32)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the passed model is unchanged
    net, head = res.finetuned
    assert float((net[1].weight - model[1].weight).detach().abs().max()) > 1e-2    # the copy's backbone trained
    assert res.accuracy < 0.9                                                      # the frozen probe is weak here
    assert res.finetune_accuracy >= max(res.accuracy, 0.95)
    d = res.to_dict()
    assert "finetuned" not in d and d["finetune_settings"]["head_init"] == "probe"
    assert linear_probe(model, tr, te).finetune_accuracy is None


@pytest.fixture(scope="module")
def tiny_vae_setup():
    """A VAE and a standard classifier on a toy two-class set of bright blobs (left vs right)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: a second thread only adds contention
    try:
        yield _tiny_vae_setup()
    finally:
        torch.set_num_threads(threads)


def _tiny_vae_setup():
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.arange(n) % 2
    cx = torch.where(y == 0, 4.0, 11.0) + torch.randn(n, generator=g)
    cy = 7.5 + torch.randn(n, generator=g)
    ii, jj = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    x = torch.exp(-((jj[None] - cx[:, None, None]) ** 2 + (ii[None] - cy[:, None, None]) ** 2) / 6)[:, None]
    data = Dataset(x, y, "blobs", ["left", "right"])
    vae = train_vae(data, VAEConfig(latent_dim=2, hidden=64, epochs=25, batch_size=32, lr=3e-3), progress=False)
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(clf.parameters(), 1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return data, vae, clf.eval()


def test_vae_decodes_into_unit_box(tiny_vae_setup):
    data, vae, _ = tiny_vae_setup
    z = torch.randn(64, 2) * 5
    with torch.no_grad():
        img = vae.decode(z)
    assert img.shape == (64, 1, 16, 16)
    assert float(img.std(0).mean()) > 0.05             # the decoder's output depends on z (not constant)
    # the latent code carries the blob's position: the two classes decode to different images
    rec = vae.reconstruct(data.x[:64])
    left, right = rec[data.y[:64] == 0].mean(0), rec[data.y[:64] == 1].mean(0)
    assert float((left - right).abs().max()) > 0.3
    rec = vae.reconstruct(data.x[:64])
    assert float((rec - data.x[:64]).pow(2).mean()) < 0.02   # the VAE actually models the data


def test_latent_attack_changes_prediction_on_decoder_range(tiny_vae_setup):
    data, vae, clf = tiny_vae_setup
    x, y = data.x[:32], data.y[:32]
    with torch.no_grad():
        ok = clf(vae.reconstruct(x)).argmax(1) == y
    assert float(ok.float().mean()) > 0.9
    res = on_manifold_attack(clf, vae, x, y, eta=3.0, steps=30, rel_step=0.1)
    assert float(res.success[ok].float().mean()) > 0.5            # the prediction changes
    moved = (res.x_adv - vae.reconstruct(x)).flatten(1).norm(dim=1)
    assert float(moved[res.success & ok].min()) > 0.1     # a broken point is a different decoded image
    # on the decoder's range: some latent code decodes to x_adv (fit z by gradient descent);
    # a pixel-space PGD example of the same model is not
    from robustlab import ThreatModel
    from robustlab.attacks import PGD

    off = PGD(ThreatModel("linf", 0.3), steps=20)(clf, x, y).x_adv

    def range_residual(img):
        z = vae.encode(img)[0].detach().requires_grad_(True)
        opt = torch.optim.Adam([z], 0.05)
        for _ in range(300):
            loss = (vae.decode(z) - img).pow(2).flatten(1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (vae.decode(z) - img).pow(2).flatten(1).mean(1).detach()

    broken = res.success & ok
    assert float(range_residual(res.x_adv[broken]).max()) < 1e-4
    assert float(range_residual(off).mean()) > 1e-3


def test_on_manifold_training_method(tiny_vae_setup):
    from robustlab.threat import ThreatModel
    from robustlab.training import make_on_manifold_method
    from robustlab.training.methods import BatchContext

    data, vae, _ = tiny_vae_setup
    vae.zero_grad(set_to_none=True)  # earlier tests backpropagated through the decoder
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 2))
    method = make_on_manifold_method(vae, eta=1.0, steps=3)
    ctx = BatchContext(ThreatModel("linf", 0.1), seed=1)
    x, y = data.x[:16], data.y[:16]
    loss, logits = method(clf, x, y, ctx)
    assert logits.shape == (16, 2) and torch.isfinite(loss)
    clean = nn.functional.cross_entropy(clf(x), y)
    assert float(loss.detach()) >= 0.5 * float(clean.detach()) - 1e-6   # the adversarial half only adds loss
    loss.backward()
    assert all(p.grad is not None for p in clf.parameters())
    assert all(p.grad is None for p in vae.parameters())  # the VAE stays frozen


def test_pareto_front():
    from robustlab.experiments.sweeps import pareto_front

    pts = [(0.99, 0.0), (0.95, 0.5), (0.9, 0.4), (0.8, 0.7), (0.7, 0.7)]
    assert pareto_front(pts) == [3, 1, 0]


@pytest.mark.slow
def test_cli_sweep_eps_and_represent(tmp_path):
    import json

    from robustlab.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: a second thread only adds contention
    try:
        _cli_sweep_eps_and_represent(tmp_path, main, json)
    finally:
        torch.set_num_threads(threads)


def _cli_sweep_eps_and_represent(tmp_path, main, json):
    args = ["--no-progress", "sweep", "eps", "--runs", str(tmp_path), "--name", "sw", "--train-eps", "0,0.1",
            "--trades-betas", "", "--epochs", "1", "--eval-n", "50", "--attack-steps", "3", "--attacks", "apgd-ce"]
    assert main(args) == 0
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["pgd-eps0", "pgd-eps0.1"]
    assert (tmp_path / "sw" / "figures" / "pareto.png").exists()
    assert main(args + ["--resume"]) == 0           # every cell done: nothing retrained
    run = tmp_path / "sw" / "runs" / "pgd-eps0.1"
    assert main(["represent", str(run), "--analyses", "alignment,cka,probe,saliency,interpolation,inversion", "--n", "40",
                 "--inversion-steps", "20", "--compare", str(tmp_path / "sw" / "runs" / "pgd-eps0")]) == 0
    out = json.loads((run / "representations.json").read_text())["analyses"]
    al = out["alignment"]["gradient"]
    assert al["label"] == "predicted" and al["alignment"]["n"] == 40
    assert al["alignment"]["ci95"][1] - al["alignment"]["ci95"][0] > 0   # per-sample values, not one constant
    assert 0 < out["cka"]["vs_runs"]["pgd-eps0"] <= 1 + 1e-9
    assert out["probe"]["accuracy"] > 0.5               # digits: chance is 0.1
    assert out["inversion"]["from_noise"]["distance_mean"] < out["inversion"]["from_noise"]["seed_distance_mean"]
    assert len(out["interpolation"]["success_rate"]) == 7
    for f in ("saliency", "interpolation", "inversion", "synthesis", "features"):
        assert (run / "figures" / f"repr-{f}.png").exists()
    assert (run / "representations.html").exists()
    assert out["probe"]["finetune_accuracy"] > 0.5 and out["probe"]["finetune_settings"]["epochs"] == 3
    # standard vs robust side by side in `robustlab report RUN RUN`
    std = tmp_path / "sw" / "runs" / "pgd-eps0"
    assert main(["represent", str(std), "--analyses", "alignment,probe,saliency", "--n", "40",
                 "--finetune-epochs", "1"]) == 0
    assert main(["report", str(std), str(run), "-o", str(tmp_path / "rep" / "report.html")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    side = page[page.index("Representations side by side"):page.index("Analyses:")]
    assert "<th>pgd-eps0</th><th>pgd-eps0.1</th>" in side
    assert "fine-tuned (digits resized to 28x28)" in side and "repr-saliency.png" in side
    assert side.count("<img") == 2 + 4                  # saliency for both runs; the other four kinds only for one


# ---- the caller's model state is left alone ---------------------------------------------------------
def _bn_net(seed=0):
    """A tiny conv net with BatchNorm and dropout on 1x8x8 inputs, 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 3))


def _every_analysis(model, vae, x, y):
    """Call each public analysis once (tiny budgets); returns their names."""
    from robustlab.representations import (ClassGaussian, features, model_cka, on_off_manifold, synthesize,
                                            visualize_feature)

    data = Dataset(x, y, "toy", ["a", "b", "c"])
    calls = {
        "saliency": lambda: [saliency(model, x, y, m, nt_samples=2, n_steps=4) for m in
                             ("gradient", "smoothgrad", "integrated")],
        "alignment": lambda: alignment(model, x, y),
        "interpolation": lambda: class_interpolation(model, x, 1, [0.0, 1.0], steps=2),
        "invert": lambda: invert(model, x, steps=4),
        "visualize_feature": lambda: visualize_feature(model, 0, x, steps=2),
        "synthesize": lambda: synthesize(model, ClassGaussian.fit(data, size=4), [0, 1], steps=2),
        "features": lambda: features(model, x),
        "model_cka": lambda: model_cka([model, model], x),
        "linear_probe": lambda: linear_probe(model, data, data, max_iter=50),
        "on_manifold_attack": lambda: on_manifold_attack(model, vae, x, y, eta=0.5, steps=2),
        "on_off_manifold": lambda: on_off_manifold(model, vae, data, steps=2),
    }
    for fn in calls.values():
        fn()
    return list(calls)


def _toy_batch(device="cpu"):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(12) % 3
    x = (torch.rand(12, 1, 8, 8, generator=g) * 0.3 + 0.3 * y[:, None, None, None]).clamp(0, 1)
    return x.to(device), y.to(device)


def test_analyses_leave_mixed_module_modes_and_bn_buffers_unchanged():
    from robustlab.runtime import eval_mode
    from robustlab.models.vae import VAE

    model = _bn_net()
    x, y = _toy_batch()
    model.train()
    model(x)                    # BN statistics that are not the initial ones
    model[1].eval()             # BatchNorm in eval, dropout (and the rest) in train: mixed modes
    modes = {n: m.training for n, m in model.named_modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), latent_dim=2, hidden=8).train()
    names = _every_analysis(model, vae, x, y)
    assert len(names) == 11
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert vae.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k   # BN running statistics (and weights) untouched
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert {n: m.training for n, m in model.named_modules()} == modes


_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", _DEVICES)
def test_every_public_analysis_runs_on_the_models_device(device):
    from robustlab.models.vae import VAEConfig
    from robustlab.representations import split_classes

    model = _bn_net().to(device).eval()
    x, y = _toy_batch(device)
    data = Dataset(x, y, "toy", ["a", "b", "c"])
    vae = train_vae(data, VAEConfig(latent_dim=2, hidden=8, epochs=1, batch_size=12), progress=False)
    assert next(vae.parameters()).device.type == device
    assert len(_every_analysis(model, vae, x, y)) == 11
    assert split_classes(data, [2, 0]).y.device.type == device
    assert resize(data, 16).x.device.type == device


def test_smoothgrad_leaves_the_global_rng_alone_and_is_seeded():
    torch.manual_seed(0)
    nonlin = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = saliency(nonlin, x, y, "smoothgrad", nt_samples=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(10)  # moving the global RNG does not change a seeded SmoothGrad
    torch.testing.assert_close(saliency(nonlin, x, y, "smoothgrad", nt_samples=3, seed=5), a)
    assert not torch.allclose(saliency(nonlin, x, y, "smoothgrad", nt_samples=3, seed=6), a)


def test_alignment_differentiates_the_predicted_class_by_default():
    # logit_0 = <p, x> + 10 (always predicted), logit_1 = <q, x> with q orthogonal to p; inputs x = p
    p = torch.zeros(1, 4, 4)
    p[0, :2] = 1.0
    q = torch.zeros(1, 4, 4)
    q[0, 2:] = 1.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([p.flatten(), q.flatten()]))
        model[1].bias.copy_(torch.tensor([10.0, 0.0]))
    x = p.expand(3, 1, 4, 4).clone()
    y = torch.ones(3, dtype=torch.long)             # "true" class 1 is never predicted
    pred = alignment(model, x, y)
    assert pred.label == "predicted" and pred.summary()["label"] == "predicted"
    torch.testing.assert_close(pred.alignment, torch.ones(3))
    torch.testing.assert_close(alignment(model, x).alignment, torch.ones(3))   # y not needed
    true = alignment(model, x, y, label="true")
    torch.testing.assert_close(true.alignment, torch.zeros(3))
    from robustlab.errors import InputError

    with pytest.raises(InputError, match="label"):
        alignment(model, x, y, label="oracle")
    with pytest.raises(InputError, match="needs the true labels"):
        alignment(model, x, label="true")


def test_non_image_inputs_alignment_errors_clearly_and_invert_works():
    from robustlab.errors import InputError
    from robustlab.representations import sobel_edges

    model = _linear(12, 3)
    x = torch.rand(4, 12)
    with pytest.raises(InputError, match=r"alignment needs images \[B, C, H, W\]"):
        alignment(model, x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match=r"needs images \[B, C, H, W\]"):
        sobel_edges(x)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3))
    res = invert(mlp, x * 0.6 + 0.2, steps=40, step_size=0.05)
    assert res.x.shape == (4, 12)
    assert float(res.distance.mean()) < float(res.seed_distance.mean())
    assert bool(torch.isfinite(res.image_correlation).all())


def test_represent_on_a_missing_run_creates_nothing(tmp_path, capsys):
    from robustlab.cli import main
    from robustlab.errors import InputError
    from robustlab.experiments.represent import represent_run

    missing = tmp_path / "runs" / "nope"
    with pytest.raises(InputError, match="not a model run"):
        represent_run(missing, ["cka"])
    code = main(["represent", str(missing), "--analyses", "cka", "--trust-code"])
    assert code != 0
    assert "not a model run" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
