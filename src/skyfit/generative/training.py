"""Training loops: the VAE on galaxy stamps (the latent flows: :mod:`.flow_training`).

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
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import ConvergenceWarning
from .flows import LatentFlow
from .galaxies import GalaxySet, check_stamps
from .vae import GalaxyVAE

__all__ = ["TrainingHistory", "TrainingConfig", "train_vae", "vae_loss", "encode_latents",
           "train_galaxy_model"]


@dataclass
class TrainingHistory:
    """Per-epoch losses of a training run (nats per example).

    Attributes:
        train_loss, val_loss: mean loss per example each epoch (train: running mean over the
            epoch's batches; validation: with fixed noise, so epochs compare).
        lr: learning rate each epoch. best_epoch: epoch whose weights were kept (0-based).
        stopped_early: whether patience ran out before ``epochs``. wall_time: seconds.

    Example:
        >>> history = TrainingHistory(train_loss=[3.1, 2.2, 2.0], val_loss=[3.0, 2.1, 2.4],
        ...                           best_epoch=1)
        >>> history.best_val_loss, sorted(history.to_dict())[:3]
        (2.1, ['best_epoch', 'lr', 'stopped_early'])
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    wall_time: float = 0.0

    @property
    def best_val_loss(self) -> float:
        """Validation loss at the best epoch (nan without validation data)."""
        return self.val_loss[self.best_epoch] if self.val_loss else math.nan

    def to_dict(self) -> dict:
        """The history as a JSON-ready dict."""
        return asdict(self)


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
        if math.isfinite(v) and (best_state is None or v < best - 1e-4 * abs(best)):
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
    beta: float = 1.0,
    kl_warmup: int = 0,
    fresh_noise: bool = True,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float, float], None] | None = None,
) -> TrainingHistory:
    """Fit ``vae`` to ``train`` by maximising the ELBO with each stamp's known noise level.

    The loss per stamp is ``0.5 sum((x - d(z))^2 / sigma^2) + beta KL(q(z|x) || N(0, I))`` (nats):
    the negative ELBO for ``beta = 1``; ``beta < 1`` (a beta-VAE, Higgins et al. 2017) favours
    reconstructions and leaves the aggregate posterior further from N(0, I), which the latent
    flow then models. ``beta`` ramps up linearly over ``kl_warmup`` epochs (0: no ramp). With
    ``fresh_noise`` each epoch draws new noise realisations around the noiseless stamps (same
    ``sigma``), so a few thousand galaxies do not get memorised with their noise. The validation
    loss is the same loss with fixed noise. Stops early after ``patience``
    epochs without improvement and returns to the best weights.

    Arguments:
        vae: the network (trained in place). train, val: :class:`GalaxySet`s of its stamp size.
        epochs, batch_size, lr: Adam settings. seed: shuffling and noise.
        progress: show a tqdm bar. callback: ``callback(epoch, train_loss, val_loss)``.

    Returns:
        :class:`TrainingHistory`.

    Example:
        >>> import torch
        >>> from skyfit.generative import GalaxyVAE, make_galaxies
        >>> train, val = make_galaxies(48, size=16, seed=0).split(32)
        >>> _ = torch.manual_seed(0)  # the initial weights
        >>> vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16))
        >>> history = train_vae(vae, train, val, epochs=3)
        >>> len(history.val_loss), history.val_loss[-1] < history.val_loss[0]
        (3, True)
        >>> eps = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))  # seed + 1
        >>> vae_loss(vae, val, eps=eps) == history.best_val_loss  # the best epoch's weights
        True
    """
    for name, s in (("train", train), ("val", val)):
        try:
            check_stamps(s.images, s.sigma, vae.size)
        except ValueError as err:
            raise type(err)(f"{name} set: {err}") from None
    x_train, sig_train = train.images.clone(), train.sigma
    g_val = torch.Generator().manual_seed(seed + 1)
    val_eps = torch.randn(len(val), vae.latent_dim, generator=g_val)

    def renoise(epoch, g):
        if fresh_noise and epoch > 0:
            noise = torch.randn(train.truth.shape, generator=g)
            x_train.copy_(train.truth + sig_train[:, None, None] * noise)

    def batch_loss(idx, g, epoch):
        b = beta if kl_warmup <= 0 else beta * min(1.0, (epoch + 1) / kl_warmup)
        nll, kl = vae.loss_terms(x_train[idx], sig_train[idx], generator=g)
        return (nll + b * kl).mean()

    def val_loss():
        return vae_loss(vae, val, beta=beta, eps=val_eps)

    return _fit(vae, len(train), batch_loss, val_loss, epochs, batch_size, lr, patience, seed,
                progress, "VAE", callback, on_epoch=renoise)


@torch.no_grad()
def vae_loss(vae: GalaxyVAE, galaxies: GalaxySet, beta: float = 1.0,
             eps: torch.Tensor | None = None, seed: int = 0) -> float:
    """Mean loss per stamp (negative ELBO for ``beta = 1``, nats) of ``vae`` on ``galaxies``,
    with one draw of ``z`` per stamp from ``eps (n, D)`` or from ``seed``.

    Example:
        >>> import torch
        >>> from skyfit.generative import GalaxyVAE, make_galaxies
        >>> galaxies = make_galaxies(8, size=16, seed=0)
        >>> vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16))
        >>> mu, logvar = vae.encode(galaxies.images)
        >>> kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1).mean()  # KL(q(z|x) || N(0, I))
        >>> kl_term = vae_loss(vae, galaxies, beta=1.0) - vae_loss(vae, galaxies, beta=0.0)
        >>> abs(kl_term - kl.item()) < 1e-3
        True
    """
    check_stamps(galaxies.images, galaxies.sigma, vae.size)
    if eps is None:
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(len(galaxies), vae.latent_dim, generator=g)
    total = 0.0
    for a in range(0, len(galaxies), 512):
        x, sig = galaxies.images[a : a + 512], galaxies.sigma[a : a + 512]
        mu, logvar = vae.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps[a : a + 512]
        r = (x - vae.decode(z)) / sig[:, None, None]
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        total += (0.5 * r.pow(2).sum((-2, -1)) + beta * kl).sum().item()
    return total / len(galaxies)


@torch.no_grad()
def encode_latents(vae: GalaxyVAE, galaxies: GalaxySet | torch.Tensor, draws: int = 8,
                   seed: int = 0) -> torch.Tensor:
    """``draws`` samples of ``q(z|x)`` per stamp, flattened to ``(draws * n, D)``.

    These samples (not only the means) represent the aggregate posterior ``q(z) = E_x q(z|x)``
    that a latent prior should match.

    Example:
        >>> import torch
        >>> from skyfit.generative import GalaxyVAE, make_galaxies
        >>> stamp = make_galaxies(1, size=16, seed=0).images
        >>> _ = torch.manual_seed(0)  # the initial weights
        >>> vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16))
        >>> z = encode_latents(vae, stamp, draws=4000)
        >>> mu, logvar = vae.encode(stamp)  # q(z|x) = N(mu, exp(logvar))
        >>> tuple(z.shape), torch.allclose(z.mean(0), mu[0], atol=0.1)
        ((4000, 4), True)
        >>> torch.allclose(z.std(0), (0.5 * logvar[0]).exp(), rtol=0.05)
        True
    """
    images = galaxies.images if isinstance(galaxies, GalaxySet) else galaxies
    check_stamps(images, size=vae.size)
    g = torch.Generator().manual_seed(seed)
    vae.eval()
    out = []
    for a in range(0, images.shape[0], 512):
        out.append(vae.sample_posterior(images[a : a + 512], draws, generator=g))
    return torch.cat(out, dim=1).reshape(-1, vae.latent_dim)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines a trained :class:`~skyfit.generative.GalaxyModel`.

    Training with the same config (and torch build, thread count) gives the same weights.

    Arguments:
        size, latent_dim, channels, hidden: the VAE architecture (:class:`VAEConfig`).
        n_train, n_val: synthetic galaxies (:func:`make_galaxies`) to train and validate on.
        beta: weight of the KL term in the VAE loss (:func:`train_vae`).
        snr: S/N range of the training stamps. epochs, batch_size, lr, patience: VAE training.
        draws: draws of ``q(z|x)`` per training galaxy for the flows.
        flow_transforms, flow_hidden: flow architecture. flow_epochs: MAF maximum-likelihood
        epochs. distill_steps: IAF distillation steps. seed: the one seed of everything.

    Example:
        >>> config = TrainingConfig(epochs=3, n_train=256)
        >>> config.epochs, config.to_dict()["snr"]  # JSON-ready
        (3, [15.0, 50.0])
    """

    size: int = 32
    latent_dim: int = 16
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128
    beta: float = 0.2
    n_train: int = 1500
    n_val: int = 500
    snr: tuple[float, float] = (15.0, 50.0)
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 6
    draws: int = 8
    flow_transforms: int = 4
    flow_hidden: tuple[int, ...] = (64, 64)
    flow_epochs: int = 10
    distill_steps: int = 400
    seed: int = 0

    def to_dict(self) -> dict:
        """The configuration as a JSON-ready dict (tuples as lists)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def train_galaxy_model(config: TrainingConfig = TrainingConfig(), progress: bool = False):
    """Train a :class:`~skyfit.generative.GalaxyModel` from scratch, deterministically.

    Steps: draw ``n_train + n_val`` synthetic galaxies (seed ``config.seed``); train the VAE;
    draw ``config.draws`` latents per galaxy from ``q(z|x)``; fit a MAF by maximum likelihood;
    distil an IAF from it. Metrics of the held-out set go to ``model.info``: the VAE's mean
    reduced chi-square, and each prior's mean NLL per latent dimension (MAF, IAF, N(0, I)).

    Example:
        >>> config = TrainingConfig(size=16, latent_dim=2, channels=(8,), hidden=16, n_train=32,
        ...                         n_val=16, epochs=1, draws=2, flow_transforms=1,
        ...                         flow_hidden=(8,), flow_epochs=1, distill_steps=5)
        >>> model = train_galaxy_model(config)  # tiny: a smoke run, not a useful prior
        >>> model.size, model.latent_dim, model.info["config"] == config.to_dict()
        (16, 2, True)
        >>> sorted(model.info["metrics"])
        ['val_nll_per_dim_iaf', 'val_nll_per_dim_maf', 'val_nll_per_dim_normal', 'val_reduced_chi2']
    """
    from .flow_training import distill_flow, fit_flow
    from .galaxies import make_galaxies
    from .model import GalaxyModel
    from .vae import VAEConfig

    c = config
    t0 = time.perf_counter()
    gals = make_galaxies(c.n_train + c.n_val, size=c.size, snr=c.snr, seed=c.seed)
    train, val = gals.split(c.n_train)
    with torch.random.fork_rng():
        torch.manual_seed(c.seed)
        vae = GalaxyVAE(VAEConfig(c.size, c.latent_dim, c.channels, c.hidden))
        maf = LatentFlow(c.latent_dim, "maf", c.flow_transforms, c.flow_hidden)
        iaf = LatentFlow(c.latent_dim, "iaf", c.flow_transforms, c.flow_hidden)
    h_vae = train_vae(vae, train, val, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                      patience=c.patience, beta=c.beta, seed=c.seed, progress=progress)
    z_train = encode_latents(vae, train, c.draws, seed=c.seed + 2)
    z_val = encode_latents(vae, val, c.draws, seed=c.seed + 3)
    h_maf = fit_flow(maf, z_train, z_val, epochs=c.flow_epochs, seed=c.seed + 4,
                     progress=progress)
    h_iaf = distill_flow(iaf, maf, z_val, steps=c.distill_steps, seed=c.seed + 5,
                         progress=progress)
    with torch.no_grad():
        d = c.latent_dim
        normal = (0.5 * z_val.pow(2).sum(-1)).mean().item() / d + 0.5 * math.log(2 * math.pi)
        metrics = {
            "val_reduced_chi2": vae.reduced_chi2(val.images, val.sigma).mean().item(),
            "val_nll_per_dim_normal": normal,
            "val_nll_per_dim_maf": -maf.log_prob(z_val).mean().item() / d,
            "val_nll_per_dim_iaf": -iaf.log_prob(z_val).mean().item() / d,
        }
    info = {"config": c.to_dict(), "metrics": metrics, "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "wall_time": time.perf_counter() - t0,
            # AVX2 and AVX-512 kernels sum in other orders: bit-identical retraining needs both
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "history": {"vae": h_vae.to_dict(), "maf": h_maf.to_dict(), "iaf": h_iaf.to_dict()}}
    return GalaxyModel(vae, iaf, maf, info)
