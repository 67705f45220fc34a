"""A convolutional variational autoencoder for square galaxy stamps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ShapeError

__all__ = ["VAEConfig", "GalaxyVAE", "load_checked_state"]


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`GalaxyVAE`.

    Arguments:
        size: stamp side in pixels; must be divisible by ``2 ** len(channels)``.
        latent_dim: number of latent variables.
        channels: feature maps after each stride-2 convolution of the encoder (the decoder
            mirrors them), so the smallest feature map is ``size / 2 ** len(channels)`` pixels.
        hidden: width of the dense layer between the feature maps and the latent space.

    Example:
        >>> config = VAEConfig(size=32, latent_dim=8, channels=(16, 32))
        >>> config.to_dict()["channels"], 32 // 2 ** len(config.channels)  # smallest feature map
        ([16, 32], 8)
    """

    size: int = 32
    latent_dim: int = 16
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        k = 2 ** len(self.channels)
        if self.size < k or self.size % k:
            raise ShapeError(f"stamp size {self.size} is not divisible by 2**{len(self.channels)} "
                             f"= {k} (one halving per entry of channels={self.channels})")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels needs at least one positive entry, got {self.channels}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be positive, got {self.hidden}")

    def to_dict(self) -> dict:
        """The configuration as a JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def load_checked_state(module: nn.Module, state: dict, what: str) -> None:
    """``module.load_state_dict(state)`` after checking names and shapes, with an error that names
    every missing, unexpected or differently shaped tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        parts = []
        if shapes:
            parts.append("different shapes: " + "; ".join(shapes[:6]))
        if missing:
            parts.append(f"missing in file: {missing[:6]}")
        if extra:
            parts.append(f"not in network: {extra[:6]}")
        raise ShapeError(f"weights do not fit this {what}: " + " | ".join(parts))
    module.load_state_dict(state)


class GalaxyVAE(nn.Module):
    """Convolutional VAE for ``size x size`` unit-flux galaxy stamps with a Gaussian likelihood.

    The encoder maps a stamp ``x`` to ``q(z|x) = N(mu(x), diag(exp(logvar(x))))``; the decoder maps
    ``z`` to the mean stamp ``d(z)``. The likelihood of a stamp with white noise of known level
    ``sigma`` is ``N(x | d(z), sigma^2 I)``, so the loss is the negative ELBO
    ``0.5 sum((x - d(z))^2) / sigma^2 + KL(q(z|x) || N(0, I))`` in nats (constants dropped).
    Layers: stride-2 convolutions (DCGAN-like, Radford et al. 2015) with SiLU activations, smooth
    so that the decoder's gradients and Hessians exist everywhere for HMC.

    References:
        | Auto-Encoding Variational Bayes (Kingma & Welling, 2013)
        | https://arxiv.org/abs/1312.6114
        | Decoding the dark: a VAE source prior for strong lensing (Chianese, Coogan et al. 2020)
        | https://arxiv.org/abs/1910.09410

    Arguments:
        config: a :class:`VAEConfig` (or give its fields as keywords).

    Example:
        >>> import torch
        >>> vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16))
        >>> vae.decode(torch.zeros(3, 4)).shape
        torch.Size([3, 16, 16])
    """

    def __init__(self, config: VAEConfig | None = None, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise TypeError(f"give either a VAEConfig or its fields as keywords, not both "
                            f"(got a config and {sorted(kwargs)})")
        if config is None:
            config = VAEConfig(**kwargs)
        elif not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = config
        ch, f = config.channels, config.size // 2 ** len(config.channels)
        self._f = f
        # pixels of a unit-flux stamp are ~1/size^2: rescale to O(1) in and out of the networks
        self.register_buffer("pixel_unit", torch.tensor(1.0 / config.size**2), persistent=False)
        act = nn.SiLU
        enc, c_in = [], 1
        for c in ch:  # each stride-2 convolution halves the map
            enc += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), act()]
            c_in = c
        enc += [nn.Flatten(), nn.Linear(ch[-1] * f * f, config.hidden), act(),
                nn.Linear(config.hidden, 2 * config.latent_dim)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Linear(config.latent_dim, config.hidden), act(),
               nn.Linear(config.hidden, ch[-1] * f * f), act(), nn.Unflatten(1, (ch[-1], f, f))]
        rev = list(ch[::-1]) + [1]
        for c_in, c in zip(rev[:-1], rev[1:]):  # each transposed convolution doubles it
            dec += [nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1)]
            dec += [act()] if c != 1 else []
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        """Dimension of the latent space."""
        return self.config.latent_dim

    @property
    def size(self) -> int:
        """Stamp side in pixels."""
        return self.config.size

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim == 0 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"latent vector has trailing size {tuple(z.shape)[-1:] or 0}, this "
                             f"VAE has latent_dim={self.latent_dim}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z|x)`` for stamps ``x (..., size, size)``."""
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ShapeError(f"stamps have shape {tuple(x.shape[-2:])}, this VAE takes "
                             f"({self.size}, {self.size})")
        batch = x.shape[:-2]
        h = self.encoder((x / self.pixel_unit).reshape(-1, 1, self.size, self.size))
        mu, logvar = h.chunk(2, dim=-1)
        return mu.reshape(batch + mu.shape[-1:]), logvar.reshape(batch + mu.shape[-1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean stamp ``(..., size, size)`` (flux per stamp pixel, sum ~1) for ``z (..., D)``."""
        self._check_latent(z)
        batch = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim)) * self.pixel_unit
        return out.reshape(batch + (self.size, self.size))

    def sample_posterior(self, x: torch.Tensor, n: int = 1,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of ``z ~ q(z|x)`` for each stamp: shape ``(n, ..., D)``."""
        mu, logvar = self.encode(x)
        eps = torch.randn((n,) + mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def loss_terms(self, x: torch.Tensor, sigma: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-stamp ``(reconstruction NLL, KL)`` in nats with one reparametrised draw of z.

        ``sigma`` is the pixel noise level of each stamp (shape ``x.shape[:-2]``).
        """
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        resid = (x - self.decode(z)) / sigma[..., None, None]
        nll = 0.5 * resid.pow(2).sum((-2, -1))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return nll, kl

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded posterior mean ``d(mu(x))``."""
        return self.decode(self.encode(x)[0])

    def reduced_chi2(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``sum((x - d(mu(x)))^2 / sigma^2) / n_pixels`` for each stamp."""
        with torch.no_grad():
            r = (x - self.reconstruct(x)) / sigma[..., None, None]
        return r.pow(2).mean((-2, -1))

    # ---- weights -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write config and weights with ``torch.save`` (plain tensors and numbers: no pickled
        classes, so :meth:`load` reads it with ``weights_only=True``)."""
        torch.save({"format": "skyfit.GalaxyVAE", "config": self.config.to_dict(),
                    "state_dict": self.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location=None) -> GalaxyVAE:
        """A VAE with the architecture and weights stored by :meth:`save`."""
        blob = _read(path, "skyfit.GalaxyVAE", map_location)
        vae = cls(VAEConfig(**blob["config"]))
        load_checked_state(vae, blob["state_dict"], "GalaxyVAE")
        return vae.eval()

    def load_weights(self, path: str | Path, map_location=None) -> GalaxyVAE:
        """Load weights saved by :meth:`save` into this network; raise :class:`ShapeError` naming
        the differences if they were saved from another architecture."""
        blob = _read(path, "skyfit.GalaxyVAE", map_location)
        theirs = VAEConfig(**blob["config"])
        if theirs != self.config:
            diff = [f"{k}={getattr(theirs, k)} in file vs {getattr(self.config, k)} here"
                    for k in ("size", "latent_dim", "channels", "hidden")
                    if getattr(theirs, k) != getattr(self.config, k)]
            raise ShapeError(f"weights in {path} are for another GalaxyVAE architecture: "
                             + "; ".join(diff))
        load_checked_state(self, blob["state_dict"], "GalaxyVAE")
        return self

    def extra_repr(self) -> str:
        """Settings and parameter count shown by ``repr``."""
        c = self.config
        n = sum(p.numel() for p in self.parameters())
        return (f"size={c.size}, latent_dim={c.latent_dim}, channels={c.channels}, "
                f"hidden={c.hidden}, parameters={n}")


def _read(path, fmt: str, map_location) -> dict:
    blob = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path} is not a {fmt} file (found format {found!r})")
    return blob

