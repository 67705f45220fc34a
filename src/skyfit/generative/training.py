"""Training loops: the VAE on galaxy stamps, latent flows on draws of q(z|x).

Both use Adam with mini-batches, a validation loss each epoch, a learning rate halved when the
validation loss stalls, early stopping, and return to the best epoch's weights. Randomness
(initial weights, shuffling, reparametrisation noise, fresh noise realisations) comes from the
given ``seed`` only, so a run is reproducible on the same machine and torch build.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..errors import ConvergenceWarning
from .flows import LatentFlow
from .galaxies import GalaxySet, check_stamps
from .vae import GalaxyVAE

__all__ = ["TrainingHistory", "train_vae", "encode_latents", "fit_flow"]


@dataclass
class TrainingHistory:
    """Per-epoch losses of a training run (nats per example).

    Attributes:
        train_loss, val_loss: mean loss per example each epoch (train: running mean over the
            epoch's batches; validation: with fixed noise, so epochs compare).
        lr: learning rate each epoch. best_epoch: epoch whose weights were kept (0-based).
        stopped_early: whether patience ran out before ``epochs``. wall_time: seconds.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    wall_time: float = 0.0

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch] if self.val_loss else math.nan

    def to_dict(self) -> dict:
        return {"train_loss": list(self.train_loss), "val_loss": list(self.val_loss),
                "lr": list(self.lr), "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early, "wall_time": self.wall_time}


def _fit(model: torch.nn.Module, n_train: int, batch_loss: Callable, val_loss: Callable,
         epochs: int, batch_size: int, lr: float, patience: int, seed: int, progress: bool,
         desc: str, callback: Callable | None, on_epoch: Callable | None = None) -> TrainingHistory:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = TrainingHistory()
    best, best_state, bad, t0 = math.inf, None, 0, time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(epoch, g)
        model.train()
        perm = torch.randperm(n_train, generator=g)
        total = 0.0
        for a in range(0, n_train, batch_size):
            idx = perm[a : a + batch_size]
            loss = batch_loss(idx, g, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            v = float(val_loss())
        hist.train_loss.append(total / n_train)
        hist.val_loss.append(v)
        hist.lr.append(opt.param_groups[0]["lr"])
        bar.set_postfix(train=f"{total / n_train:.4g}", val=f"{v:.4g}")
        if callback is not None:
            callback(epoch, total / n_train, v)
        if v < best - 1e-4 * abs(best):
            best, bad, hist.best_epoch = v, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad % max(patience // 2, 1) == 0:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
            if bad >= patience:
                hist.stopped_early = True
                break
    if best_state is None:
        import warnings

        warnings.warn(f"{desc}: validation loss was never finite; keeping the last weights",
                      ConvergenceWarning, stacklevel=3)
    else:
        model.load_state_dict(best_state)
    model.eval()
    hist.wall_time = time.perf_counter() - t0
    return hist


def train_vae(
    vae: GalaxyVAE,
    train: GalaxySet,
    val: GalaxySet,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    patience: int = 6,
    kl_warmup: int = 0,
    fresh_noise: bool = True,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float, float], None] | None = None,
) -> TrainingHistory:
    """Fit ``vae`` to ``train`` by maximising the ELBO with each stamp's known noise level.

    The loss per stamp is ``0.5 sum((x - d(z))^2 / sigma^2) + beta KL(q(z|x) || N(0, I))`` (nats),
    ``beta`` rising linearly from 0 to 1 over ``kl_warmup`` epochs (0: always 1). With
    ``fresh_noise`` each epoch draws new noise realisations around the noiseless stamps (same
    ``sigma``), so a few thousand galaxies do not get memorised with their noise. The validation
    loss is the negative ELBO (``beta = 1``) with fixed noise. Stops early after ``patience``
    epochs without improvement and returns to the best weights.

    Arguments:
        vae: the network (trained in place). train, val: :class:`GalaxySet`s of its stamp size.
        epochs, batch_size, lr: Adam settings. seed: shuffling and noise.
        progress: show a tqdm bar. callback: ``callback(epoch, train_loss, val_loss)``.

    Returns:
        :class:`TrainingHistory`.
    """
    for name, s in (("train", train), ("val", val)):
        try:
            check_stamps(s.images, s.sigma, vae.size)
        except ValueError as err:
            raise type(err)(f"{name} set: {err}") from None
    x_train, sig_train = train.images.clone(), train.sigma
    x_val, sig_val = val.images, val.sigma
    g_val = torch.Generator().manual_seed(seed + 1)
    val_eps = torch.randn(len(val), vae.latent_dim, generator=g_val)

    def renoise(epoch, g):
        if fresh_noise and epoch > 0:
            noise = torch.randn(train.truth.shape, generator=g)
            x_train.copy_(train.truth + sig_train[:, None, None] * noise)

    def batch_loss(idx, g, epoch):
        beta = 1.0 if kl_warmup <= 0 else min(1.0, (epoch + 1) / kl_warmup)
        nll, kl = vae.loss_terms(x_train[idx], sig_train[idx], generator=g)
        return (nll + beta * kl).mean()

    def val_loss():
        total = 0.0
        for a in range(0, len(val), 512):
            mu, logvar = vae.encode(x_val[a : a + 512])
            z = mu + torch.exp(0.5 * logvar) * val_eps[a : a + 512]
            r = (x_val[a : a + 512] - vae.decode(z)) / sig_val[a : a + 512, None, None]
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
            total += (0.5 * r.pow(2).sum((-2, -1)) + kl).sum().item()
        return total / len(val)

    return _fit(vae, len(train), batch_loss, val_loss, epochs, batch_size, lr, patience, seed,
                progress, "VAE", callback, on_epoch=renoise)


@torch.no_grad()
def encode_latents(vae: GalaxyVAE, galaxies: GalaxySet | torch.Tensor, draws: int = 8,
                   seed: int = 0) -> torch.Tensor:
    """``draws`` samples of ``q(z|x)`` per stamp, flattened to ``(draws * n, D)``.

    These samples (not only the means) represent the aggregate posterior ``q(z) = E_x q(z|x)``
    that a latent prior should match.
    """
    images = galaxies.images if isinstance(galaxies, GalaxySet) else galaxies
    check_stamps(images, size=vae.size)
    g = torch.Generator().manual_seed(seed)
    vae.eval()
    out = []
    for a in range(0, images.shape[0], 512):
        out.append(vae.sample_posterior(images[a : a + 512], draws, generator=g))
    return torch.cat(out, dim=1).reshape(-1, vae.latent_dim)


def fit_flow(
    flow: LatentFlow,
    train: torch.Tensor,
    val: torch.Tensor,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 3e-3,
    patience: int = 8,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float, float], None] | None = None,
) -> TrainingHistory:
    """Fit ``flow`` to latent draws ``train (n, D)`` by maximum likelihood (mean NLL, nats).

    Sets the flow's standardisation from ``train`` first. An IAF's density takes ``D`` passes per
    layer, so it trains about ``D`` times slower per step than a MAF of the same size.
    """
    for name, d in (("train", train), ("val", val)):
        flow._check(d)
        if d.ndim != 2 or not torch.isfinite(d).all():
            raise ValueError(f"{name} latents must be a finite (n, {flow.features}) array")
    flow.standardise(train)

    def batch_loss(idx, g, epoch):
        return -flow.log_prob(train[idx]).mean()

    def val_loss():
        return -torch.cat([flow.log_prob(val[a : a + 4096])
                           for a in range(0, len(val), 4096)]).mean()

    return _fit(flow, len(train), batch_loss, val_loss, epochs, batch_size, lr, patience, seed,
                progress, f"flow ({flow.kind})", callback)
