"""A galaxy source whose light comes from a VAE decoder, with a normalising-flow latent prior."""

from __future__ import annotations

import copy
import math

import torch

from .._forward import forward
from ..errors import ShapeError
from ..params import Param
from .base import Source
from .profiles import bilinear_interpolate

__all__ = ["VAESource"]

LATENTS = ("eps", "z")


class VAESource(Source):
    """Surface brightness of a galaxy decoded from a latent vector by a trained VAE.

    The decoder turns the latent ``z`` into a unit-flux stamp of ``size x size`` pixels of side
    ``scale`` arcsec centred on ``(x0, y0)``; the brightness at any coordinates is the bilinear
    interpolation of ``flux * stamp / scale^2`` (zero outside the stamp), so a lens simulator can
    ray-trace it like any other :class:`~skyfit.Source`.

    Latent parametrisation (``latent=``):

    - ``"eps"`` (default): the Param is ``eps`` and ``z = flow(eps)``; the prior term is
      ``log N(eps | 0, I)``. With an IAF the map is one network pass: the fast choice for HMC and
      VI. With a MAF the same map is the MAF's inverse, ``D`` passes per layer.
    - ``"z"``: the Param is ``z`` itself and the prior term is the flow's ``log p(z)`` (one pass
      for a MAF).

    ``prior="normal"`` uses the VAE's own N(0, I) prior on ``z`` (no flow). The prior term is
    :meth:`log_prior`, which :class:`~skyfit.Posterior` adds to the log-density by itself.

    The networks are copied, frozen and converted to ``dtype`` (float64 by default, so HMC
    energies are accurate).

    References:
        | Chianese, Coogan, Hofma, Otten & Weniger (2020), MNRAS 496, 381
        | https://arxiv.org/abs/1910.09410

    Arguments:
        model: a trained :class:`~skyfit.generative.GalaxyModel`.
        prior: ``"iaf"``, ``"maf"`` or ``"normal"``. latent: ``"eps"`` or ``"z"``.
        latent_value: initial latent (default zeros: the prior's median galaxy for ``"eps"``).
        x0, y0: stamp centre (arcsec). scale: stamp pixel side (arcsec). flux: total flux.

    Example:
        >>> import torch
        >>> from skyfit.generative import GalaxyModel, GalaxyVAE, LatentFlow
        >>> model = GalaxyModel(GalaxyVAE(size=16, latent_dim=4, channels=(8, 16)),
        ...                     iaf=LatentFlow(4, "iaf"))
        >>> src = VAESource(model, scale=0.05, flux=2.0)
        >>> src.brightness(torch.zeros(3), torch.zeros(3)).shape
        torch.Size([3])
    """

    def __init__(self, model, name: str | None = None, prior: str = "iaf", latent: str = "eps",
                 latent_value=None, x0=0.0, y0=0.0, scale=0.05, flux=1.0,
                 dtype: torch.dtype = torch.float64):
        super().__init__(name)
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
        flow = model.flow(prior)
        self.prior = prior
        self.latent_kind = latent
        self.latent_dim = model.latent_dim
        self.size = model.size
        # copies: frozen, in the inference dtype, kept outside caskade's graph
        self._nets = {
            "vae": copy.deepcopy(model.vae).to(dtype).requires_grad_(False).eval(),
            "flow": None if flow is None
            else copy.deepcopy(flow).to(dtype).requires_grad_(False).eval(),
        }
        if latent_value is None:
            latent_value = torch.zeros(self.latent_dim, dtype=dtype)
        latent_value = torch.as_tensor(latent_value, dtype=dtype)
        self._check_latent(latent_value)
        self.latent = Param(
            "latent", latent_value, shape=(self.latent_dim,), units="dimensionless",
            description=("standard-normal noise eps of the latent prior, z = flow(eps)"
                         if latent == "eps" else "VAE latent vector z"),
        )
        self.x0 = Param("x0", x0, units="arcsec", description="stamp centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="stamp centre, y")
        self.scale = Param("scale", scale, valid=(0.0, None), units="arcsec",
                           description="side of one stamp pixel")
        self.flux = Param("flux", flux, valid=(0.0, None), units="flux", description="total flux")

    @property
    def vae(self):
        """The :class:`~skyfit.GalaxyVAE` whose decoder draws the source (not a Param: fixed
        weights)."""
        return self._nets["vae"]

    @property
    def flow(self):
        """The latent prior flow (a :class:`~skyfit.LatentFlow`), or None without one."""
        return self._nets["flow"]

    def _check_latent(self, value: torch.Tensor) -> None:
        if value.ndim == 0 or value.shape[-1] != self.latent_dim:
            raise ShapeError(f"latent vector has trailing size {tuple(value.shape)[-1:] or 0}, "
                             f"this VAESource's model has latent_dim={self.latent_dim}")

    def to_z(self, latent: torch.Tensor) -> torch.Tensor:
        """The VAE latent ``z`` of a Param value (identity for ``latent="z"``)."""
        latent = torch.as_tensor(latent)
        self._check_latent(latent)
        if self.latent_kind == "z" or self.flow is None:
            return latent
        return self.flow.from_noise(latent)

    def from_z(self, z: torch.Tensor) -> torch.Tensor:
        """The Param value that gives the VAE latent ``z`` (inverse of :meth:`to_z`)."""
        z = torch.as_tensor(z)
        self._check_latent(z)
        if self.latent_kind == "z" or self.flow is None:
            return z
        return self.flow.to_noise(z)

    @torch.no_grad()
    def latent_of_stamp(self, stamp: torch.Tensor) -> torch.Tensor:
        """Param value whose decoded stamp matches ``stamp (size, size)`` best according to the
        encoder (its posterior mean ``z``): a starting point for fits."""
        stamp = torch.as_tensor(stamp, dtype=next(self.vae.parameters()).dtype)
        return self.from_z(self.vae.encode(stamp / stamp.sum())[0])

    @forward
    def stamp(self, latent=None):
        """Decoded unit-flux stamp ``(..., size, size)`` (flux per stamp pixel)."""
        img = self.vae.decode(self.to_z(latent))
        return img / img.sum((-2, -1), keepdim=True)

    @forward
    def brightness(self, x, y, latent=None, x0=None, y0=None, scale=None, flux=None):
        # batches of parameter sets: use torch.vmap (as Posterior does); a leading batch of
        # latents alone also works natively (one stamp each, same position and scale)
        """Surface brightness (flux / arcsec^2) at ``(x, y)`` (arcsec): the decoded stamp,
        normalised to ``flux``, ``scale`` arcsec per stamp pixel, bilinearly interpolated."""
        img = self.vae.decode(self.to_z(latent))
        img = img / img.sum((-2, -1), keepdim=True)
        sb = img * torch.as_tensor(flux / scale**2)[..., None, None]
        return bilinear_interpolate(sb, x, y, x0, y0, scale)

    @forward
    def log_prior(self, latent=None):
        """Log prior density of the latent (nats): ``log N(eps)`` or the flow's ``log p(z)``."""
        if self.latent_kind == "z" and self.flow is not None:
            return self.flow.log_prob(latent)
        return -0.5 * latent.pow(2).sum(-1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
