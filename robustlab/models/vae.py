"""Variational autoencoders (Kingma & Welling 2014) as models of the data manifold.

``VAE`` is a small fully connected VAE; with ``num_classes > 0`` it is class-conditional (Sohn et al.
2015, CVAE): the encoder sees (x, onehot(y)) and the decoder (z, onehot(y)), so the class is carried
by the label and z only by the style. ``train_vae`` fits one by maximising the ELBO (Adam);
``pretrained_vae`` trains the MNIST VAE once and caches its weights (``robustlab.weights``).
Used by the on-manifold attack (``robustlab.threat.LatentThreat``, Stutz et al. 2019) and the
on-manifold training method.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from ..progress import progress_bar

from ..data import Dataset, load_dataset
from ..errors import InputError
from ..weights import cache_dir, cached_weights, settings_key

log = logging.getLogger(__name__)


class VAE(nn.Module):
    """MLP VAE: x (C*H*W) -> hidden -> (mu, log var) in R^latent; z -> hidden -> sigmoid -> image.

    ``num_classes > 0`` makes it class-conditional (CVAE): encoder and decoder also take onehot(y), and
    ``encode``/``decode``/``forward``/``reconstruct`` then need the labels ``y``."""

    def __init__(self, input_shape: tuple[int, ...] = (1, 28, 28), latent_dim: int = 8, hidden: int = 400,
                 num_classes: int = 0):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        d = 1
        for s in self.input_shape:
            d *= s
        k = self.num_classes
        # (Flatten kept first so the unconditional VAE's parameter names, and its cached files, are unchanged)
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d + k, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim + k, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, d))

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _with_label(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.conditional:
            return h
        if y is None:
            raise InputError("this VAE is class-conditional: pass the labels y (the class whose model decodes)")
        y = torch.as_tensor(y, device=h.device).long().reshape(-1)
        if y.shape[0] != h.shape[0] or int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise InputError(f"labels must be {h.shape[0]} class indices in [0, {self.num_classes}), got shape "
                             f"{tuple(y.shape)} with range [{int(y.min())}, {int(y.max())}]")
        return torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], 1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(self._with_label(x.flatten(1), y))
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.dec(self._with_label(z, y))).reshape(z.shape[0], *self.input_shape)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, y: torch.Tensor | None = None):
        mu, logvar = self.encode(x, y)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        return self.decode(z, y), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y)[0], y)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decodings of z ~ N(0, I), one per label in ``y`` (class-conditional VAE; ignored otherwise)."""
        y = torch.as_tensor(y).long().reshape(-1)
        p = next(self.parameters())
        z = torch.randn(y.shape[0], self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.decode(z, y.to(p.device) if self.conditional else None)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0):
    """Negative ELBO per image: Bernoulli reconstruction (BCE summed over pixels) + beta * KL(q(z|x) || N(0, I))."""
    bce = F.binary_cross_entropy(recon.flatten(1), x.flatten(1), reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (bce + beta * kl).mean()


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 8
    hidden: int = 400
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    conditional: bool = False  # class-conditional (CVAE on the dataset's classes)

    def key(self) -> str:
        # the unconditional VAE keeps the cache key it had before the option
        return settings_key(self, drop_defaults=("conditional",))


def train_vae(data: Dataset, cfg: VAEConfig = VAEConfig(), progress: bool = True) -> VAE:
    """Train a VAE on ``data`` (Adam, ``cfg.epochs`` passes; class-conditional on ``data.y`` if
    ``cfg.conditional``); logs the negative ELBO per epoch."""
    torch.manual_seed(cfg.seed)
    vae = VAE(data.input_shape, cfg.latent_dim, cfg.hidden, data.num_classes if cfg.conditional else 0).to(data.x.device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in progress_bar(range(cfg.epochs), desc="vae", unit="epoch", disable=not progress, leave=False):
        total = 0.0
        for xb, yb in data.batches(cfg.batch_size, shuffle=True, generator=gen):
            recon, mu, logvar = vae(xb, gen, yb if cfg.conditional else None)
            loss = vae_loss(recon, xb, mu, logvar, cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        log.debug("vae epoch %d: -ELBO %.2f", epoch + 1, total / len(data))
    opt.zero_grad(set_to_none=True)
    vae.eval()
    return vae


def pretrained_vae(cfg: VAEConfig = VAEConfig(), dataset: str = "mnist", progress: bool = True) -> VAE:
    """The VAE of ``cfg`` trained on ``dataset``'s train split, cached as safetensors under
    ``$ROBUSTLAB_DATA/representations`` (default ./data-cache); about 1-2 CPU minutes the first time.
    ``VAEConfig(conditional=True)`` is the class-conditional VAE (file ``cvae-...``)."""
    path = cache_dir("representations") / f"{'cvae' if cfg.conditional else 'vae'}-{dataset}-{cfg.key()}.safetensors"
    train = load_dataset(dataset, "train")
    vae = VAE(train.input_shape, cfg.latent_dim, cfg.hidden, train.num_classes if cfg.conditional else 0)

    def fit(model: VAE) -> dict:
        log.info("training the %s%s VAE (latent %d, %d epochs) once; cached at %s", dataset,
                 " class-conditional" if cfg.conditional else "", cfg.latent_dim, cfg.epochs, path)
        model.load_state_dict(train_vae(train, cfg, progress).state_dict())
        return {}

    # a file from before the setup metadata, a corrupt one or another setup's: retrained (with a warning)
    return cached_weights(vae, path, fit, {"kind": "vae", "dataset": dataset, **asdict(cfg)})
