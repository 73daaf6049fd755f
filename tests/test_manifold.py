"""The class-conditional VAE (Stutz et al. 2019's class-specific manifolds) and its latent attack."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustlab.data import Dataset
from robustlab.errors import InputError
from robustlab.models.vae import VAE, VAEConfig, train_vae
from robustlab.representations import on_manifold_attack, on_off_manifold
from robustlab.threat import LatentThreat


def _blobs(n: int = 300, seed: int = 0) -> Dataset:
    """Three classes: a Gaussian blob left of, at, or right of the centre of a 16x16 image (2 pixels
    apart); the style (height, width, horizontal jitter) varies within a class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    cx = 7.5 + 2.0 * (y.float() - 1) + 0.7 * torch.randn(n, generator=g)
    cy = 7.5 + 2.5 * torch.randn(n, generator=g).clamp(-1.5, 1.5)
    w = 3.0 + 3.0 * torch.rand(n, generator=g)
    ii, jj = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    x = torch.exp(-((jj[None] - cx[:, None, None]) ** 2 + (ii[None] - cy[:, None, None]) ** 2) / w[:, None, None])
    return Dataset(x[:, None], y, "blobs3", ["left", "centre", "right"])


@pytest.fixture(scope="module")
def cvae_setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = _blobs()
        cvae = train_vae(data, VAEConfig(latent_dim=2, hidden=64, epochs=25, batch_size=32, lr=3e-3, conditional=True),
                         progress=False)
        torch.manual_seed(0)
        clf = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 3))
        opt = torch.optim.Adam(clf.parameters(), 1e-2)
        for _ in range(150):
            loss = nn.functional.cross_entropy(clf(data.x), data.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield data, cvae, clf.eval()
    finally:
        torch.set_num_threads(threads)


def test_conditional_vae_decodes_into_unit_box_and_needs_labels(cvae_setup):
    data, cvae, _ = cvae_setup
    assert cvae.conditional and cvae.num_classes == 3
    z = torch.randn(90, 2) * 5
    y = torch.arange(90) % 3
    with torch.no_grad():
        img = cvae.decode(z, y)
    assert img.shape == (90, 1, 16, 16)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    rec = cvae.reconstruct(data.x[:90], data.y[:90])
    assert float((rec - data.x[:90]).pow(2).mean()) < 0.02      # it models the data
    with pytest.raises(InputError, match="class-conditional"):
        cvae.decode(z)
    with pytest.raises(InputError, match=r"class indices in \[0, 3\)"):
        cvae.decode(z, torch.full((90,), 3))
    with pytest.raises(InputError, match="labels"):
        LatentThreat(cvae, 1.0)


def test_conditional_decoding_keeps_the_class(cvae_setup):
    """Prior samples decoded with label c are classified as c by the trained classifier (chance 1/3);
    the same latent codes decoded with another label move the blob to that label's class."""
    data, cvae, clf = cvae_setup
    g = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    with torch.no_grad():
        acc = float((clf(cvae.sample(y, g)).argmax(1) == y).float().mean())
        z = torch.randn(300, 2, generator=g)
        swapped = float((clf(cvae.decode(z, (y + 1) % 3)).argmax(1) == (y + 1) % 3).float().mean())
    assert acc > 0.8, acc
    assert swapped > 0.8, swapped


def test_conditional_latent_attack_changes_prediction_on_decoder_range(cvae_setup):
    data, cvae, clf = cvae_setup
    x, y = data.x[:48], data.y[:48]
    with torch.no_grad():
        ok = clf(cvae.reconstruct(x, y)).argmax(1) == y
    assert float(ok.float().mean()) > 0.9
    # the class-y model's latent box is large enough to reach the classifier's boundary (jitter + style);
    # the attack early-stops, so the threat's labels are subset with the samples still running
    res = on_manifold_attack(clf, cvae, x, y, eta=6.0, steps=30, rel_step=0.1)
    broken = res.success & ok
    assert float(broken.float().sum()) >= 0.3 * float(ok.float().sum())      # the prediction changes
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    # on the class-y decoder's range: some latent code decodes (with the true label) to x_adv
    target, labels = res.x_adv[broken], y[broken]
    z = cvae.encode(target, labels)[0].detach().requires_grad_(True)
    opt = torch.optim.Adam([z], 0.05)
    for _ in range(300):
        loss = (cvae.decode(z, labels) - target).pow(2).flatten(1).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        residual = (cvae.decode(z, labels) - target).pow(2).flatten(1).mean(1)
    assert float(residual.max()) < 1e-4
    out = on_off_manifold(clf, cvae, Dataset(x, y), eta=6.0, eps=0.1, steps=10, batch_size=16)
    assert out["conditional_vae"] and out["recon_acc"] > 0.9 and out["on_manifold_robust_acc"] < out["recon_acc"]


def test_on_manifold_training_with_conditional_vae(cvae_setup):
    from robustlab.threat import ThreatModel
    from robustlab.training import make_on_manifold_method
    from robustlab.training.methods import BatchContext

    data, cvae, _ = cvae_setup
    cvae.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 3))
    method = make_on_manifold_method(cvae, eta=1.0, steps=3)
    x, y = data.x[:24], data.y[:24]
    loss, logits = method(clf, x, y, BatchContext(ThreatModel("linf", 0.1), seed=1))
    assert logits.shape == (24, 3) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in clf.parameters())
    assert all(p.grad is None for p in cvae.parameters())


def test_vae_config_key_and_unconditional_names_unchanged():
    # the unconditional VAE keeps its cache key and parameter names (cached files stay loadable)
    assert VAEConfig().key() == "c5151f7aa936"
    assert VAEConfig(conditional=True).key() != VAEConfig().key()
    names = set(VAE((1, 4, 4), 2, 8).state_dict())
    assert {"enc.1.weight", "enc.3.weight", "dec.0.weight", "mu.weight", "logvar.weight"} <= names
    assert VAE((1, 4, 4), 2, 8, num_classes=5).enc[1].in_features == 16 + 5


def test_on_manifold_checkpoints_are_selected_on_clean_accuracy():
    """Its adversary is not the pixel threat: pixel robust accuracy (~0 every epoch) must not pick epoch 1."""
    from robustlab.training import TrainConfig
    from robustlab.training.loop import _selection_score

    early = {"val_acc": 0.75, "val_robust_acc": 0.03}
    late = {"val_acc": 0.95, "val_robust_acc": 0.0}
    om = TrainConfig(method="on_manifold")
    assert _selection_score(om, late) > _selection_score(om, early)
    pgd = TrainConfig(method="pgd")
    assert _selection_score(pgd, early) > _selection_score(pgd, late)   # pixel AT keeps robust-first selection


def test_pretrained_vae_is_trained_once_and_a_corrupt_cache_is_retrained(tmp_path, monkeypatch, caplog):
    """The VAE cache goes through ``weights.cached_weights``: trained on the first call, loaded on the
    second (same weights, no training), retrained with a warning when the file is corrupt."""
    import robustlab.models.vae as manifold

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path))
    monkeypatch.setattr(manifold, "load_dataset", lambda name, split: _blobs(30))
    calls = []

    def fake_train(data, cfg, progress):
        calls.append(cfg)
        torch.manual_seed(len(calls))
        return VAE(data.input_shape, cfg.latent_dim, cfg.hidden, 0)

    monkeypatch.setattr(manifold, "train_vae", fake_train)
    cfg = VAEConfig(latent_dim=2, hidden=16, epochs=1)
    first = manifold.pretrained_vae(cfg, "blobs3", progress=False)
    second = manifold.pretrained_vae(cfg, "blobs3", progress=False)
    assert len(calls) == 1 and not second.training
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    path, = (tmp_path / "representations").glob("vae-blobs3-*.safetensors")
    path.write_bytes(b"not a safetensors file")
    with caplog.at_level("WARNING"):
        third = manifold.pretrained_vae(cfg, "blobs3", progress=False)
    assert len(calls) == 2 and "corrupt" in caplog.text
    assert not torch.equal(next(iter(third.state_dict().values())), next(iter(first.state_dict().values())))
