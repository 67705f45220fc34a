"""Example problem: a mock strong lens whose source is a held-out synthetic galaxy, fitted with a
VAESource."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import (
    SIE,
    GaussianLikelihood,
    GaussianPSF,
    LensedImage,
    Pixelated,
    PixelGrid,
    Posterior,
    VAESource,
)
from ..generative import make_galaxies

__all__ = ["LensProblem", "lensed_galaxy_problem"]


@dataclass
class LensProblem:
    """A seeded lens-inference problem: the posterior, its truth and the pieces behind it.

    Attributes:
        posterior: :class:`~skyfit.Posterior` over the free lens parameters, the source latent,
            position and flux. truth: the true vector in ``posterior.names`` order (the latent
            part is the encoder's estimate for the true galaxy: a galaxy has no exact latent).
        start: a starting point away from the truth (latent 0, the prior's median galaxy).
        data, variance: the noisy image and its noise variance. simulator: the model
            :class:`~skyfit.LensedImage`. source: its :class:`~skyfit.VAESource`. lens: its SIE.
        true_image: the noiseless image. galaxy: the true source stamp (unit flux).
    """

    posterior: Posterior
    truth: torch.Tensor
    start: torch.Tensor
    data: torch.Tensor
    variance: torch.Tensor
    simulator: LensedImage
    source: VAESource
    lens: SIE
    true_image: torch.Tensor
    galaxy: torch.Tensor


def lensed_galaxy_problem(
    model,
    seed: int = 0,
    shape: tuple[int, int] = (40, 40),
    pixel_scale: float = 0.1,
    theta_E: float = 1.2,
    q: float = 0.8,
    phi: float = 0.6,
    source_position: tuple[float, float] = (0.06, -0.04),
    source_scale: float = 0.05,
    snr: float = 30.0,
    psf_sigma: float = 0.08,
    supersample: int = 2,
    free_lens: tuple[str, ...] = ("theta_E",),
    free_source: tuple[str, ...] = ("x0", "y0", "flux"),
    prior: str = "iaf",
    latent: str = "eps",
) -> LensProblem:
    """Simulate an SIE lens of a held-out synthetic galaxy and build the posterior to fit it.

    The true source is the noiseless stamp of ``make_galaxies(1, seed=10_000 + seed)`` (a galaxy
    the VAE never saw), drawn as a :class:`~skyfit.Pixelated` source of ``source_scale`` arcsec
    pixels; the image gets white Gaussian noise with ``sqrt(sum(image^2)) / sigma = snr``.
    The model is the same lens with a :class:`~skyfit.VAESource` of the same stamp scale: the
    free parameters are ``free_lens`` of the SIE, the latent (``prior``, ``latent`` as in
    :class:`~skyfit.VAESource`) and ``free_source`` of the VAESource (the others stay at the
    truth).

    Example:
        >>> from skyfit.generative import load_pretrained
        >>> prob = lensed_galaxy_problem(load_pretrained(), seed=0)
        >>> prob.posterior.names[:2]
        ['SIE.theta_E', 'VAESource.latent[0]']
    """
    g = torch.Generator().manual_seed(seed)
    galaxy = make_galaxies(1, size=model.size, seed=10_000 + seed).truth[0].double()
    grid = PixelGrid(shape, pixel_scale, supersample=supersample)
    psf = GaussianPSF(sigma=psf_sigma, size=7)
    x0, y0 = source_position
    true_lens = SIE(x0=0.0, y0=0.0, q=q, phi=phi, theta_E=theta_E)
    flux = 100.0
    true_src = Pixelated(values=flux * galaxy / source_scale**2, pixel_scale=source_scale,
                         x0=x0, y0=y0)
    true_image = LensedImage(grid, true_lens, [true_src], psf=psf)().detach()
    sigma = true_image.pow(2).sum().sqrt() / snr
    data = true_image + sigma * torch.randn(true_image.shape, generator=g, dtype=torch.float64)
    variance = torch.full_like(data, sigma.item() ** 2)

    lens = SIE(x0=0.0, y0=0.0, q=q, phi=phi, theta_E=theta_E)
    source = VAESource(model, prior=prior, latent=latent, x0=x0, y0=y0, scale=source_scale,
                       flux=flux)
    true_latent = source.latent_of_stamp(galaxy)
    source.latent.value = true_latent
    sim = LensedImage(grid, lens, [source], psf=psf)
    for name in free_lens:
        getattr(lens, name).to_dynamic()
    for p in [source.latent] + [getattr(source, name) for name in free_source]:
        p.to_dynamic()
    posterior = Posterior(GaussianLikelihood(sim, data, variance=variance))
    truth = posterior.initial()
    start = truth.clone()
    for i, name in enumerate(posterior.names):
        if name.startswith("VAESource.latent"):
            start[i] = 0.0
        elif name == "SIE.theta_E":
            start[i] = theta_E * 1.03
        elif name == "VAESource.flux":
            start[i] = flux * 0.8
        elif name in ("VAESource.x0", "VAESource.y0"):
            start[i] = 0.0
    return LensProblem(posterior, truth, start, data, variance, sim, source, lens, true_image,
                       galaxy)
