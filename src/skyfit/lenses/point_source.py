"""Lensed point sources: image positions, magnified fluxes, time delays; lensed supernovae."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param
from .base import ThinLens
from .geometry import LensGeometry
from .solver import LensImages, find_images

__all__ = ["LensedPointSource", "LensedSupernova"]


class LensedPointSource(ModuleDisplay, ck.Module):
    """A point source at ``(x0, y0)`` in the source plane, seen through ``lens``.

    :meth:`images` solves the lens equation (:func:`~skyfit.find_images`) and returns the images
    sorted by arrival time. Positions and magnifications are differentiable in every parameter
    (lens and source): after the search (without gradients) two Newton steps are taken with
    autograd on, which by the implicit-function theorem gives exact first and second derivatives.
    The number of images depends on the parameters, so this module cannot run under
    ``torch.vmap``: evaluate parameter sets one at a time.

    :meth:`position_flux` returns ``(x_i, y_i, flux |mu_i|)`` for a scene
    (:class:`~skyfit.LensedImage`). ``flux`` may carry a leading epoch axis (for instance from
    :func:`~skyfit.link_flux_to_light_curve`, without delays); for delayed light curves use
    :class:`LensedSupernova`.

    Arguments:
        lens: a :class:`~skyfit.ThinLens`. geometry: a :class:`~skyfit.LensGeometry` (needed
            only for :meth:`time_delays`). x0, y0: source position (arcsec). flux: unlensed flux.
        window, resolution, r_min: image search settings (:func:`~skyfit.find_images`).

    Example:
        >>> from skyfit import SIS
        >>> ps = LensedPointSource(SIS(theta_E=1.0), x0=0.2, y0=0.0, flux=2.0)
        >>> x, y, f = ps.position_flux()
        >>> [round(v, 4) for v in f.tolist()]
        [12.0, 8.0]
    """

    def __init__(self, lens: ThinLens, geometry: LensGeometry | None = None,
                 name: str | None = None, x0=0.0, y0=0.0, flux=1.0, window: float = 8.0,
                 resolution: float = 0.02, r_min: float = 1e-4):
        super().__init__(name)
        self.lens = lens
        self.geometry = geometry
        self.x0 = Param("x0", x0, units="arcsec", description="source-plane position, x")
        self.y0 = Param("y0", y0, units="arcsec", description="source-plane position, y")
        if flux is not None:  # (a LensedSupernova takes its flux from a light curve)
            self.flux = Param("flux", flux, valid=(0.0, None), units="flux",
                              description="unlensed flux")
        self.search = dict(window=window, resolution=resolution, r_min=r_min)

    @forward
    def images(self, x0=None, y0=None) -> LensImages:
        """Images sorted by arrival time; ``x, y, magnification, fermat`` carry gradients."""
        try:
            found = find_images(self.lens, x0.detach(), y0.detach(), **self.search)
        except RuntimeError as exc:
            if "vmap" not in str(exc):
                raise
            raise RuntimeError(
                f"{self.name} cannot run under torch.vmap: its number of images depends on the "
                "parameters. Evaluate parameter sets one at a time (for a Posterior: log_prob of "
                "a single (dim,) vector; samplers with batched chains need a model without "
                "lensed point sources)") from exc
        x, y = found.x.to(torch.as_tensor(x0).dtype), found.y.to(torch.as_tensor(x0).dtype)
        for _ in range(2):  # Newton steps with autograd: implicit derivatives of the positions
            bx, by = self.lens.raytrace(x, y)
            rx, ry = bx - x0, by - y0
            A = self.lens.jacobian(x, y)
            det = A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] * A[..., 1, 0]
            x = x - (A[..., 1, 1] * rx - A[..., 0, 1] * ry) / det
            y = y - (-A[..., 1, 0] * rx + A[..., 0, 0] * ry) / det
        mu = self.lens.magnification(x, y)
        fermat = self.lens.fermat_potential(x, y, x0, y0)
        return LensImages(x, y, mu, fermat, found.unresolved_centres, found.winding)

    @forward
    def time_delays(self, images: LensImages | None = None) -> torch.Tensor:
        """Delay of each image after the first (days), ``(n_images,)``; needs ``geometry``."""
        if self.geometry is None:
            raise ValueError(f"{self.name} has no LensGeometry: time delays need z_l, z_s and a "
                             "cosmology; pass geometry=LensGeometry(z_l=..., z_s=...)")
        images = self.images() if images is None else images
        return self.geometry.fermat_to_days(images.fermat - images.fermat[..., :1])

    @forward
    def position_flux(self, flux=None):
        """``(x_i, y_i, flux_i)`` of the images; ``flux_i = flux |mu_i|`` (leading flux
        dimensions, e.g. epochs, stay in front of the image axis)."""
        images = self.images()
        return images.x, images.y, torch.as_tensor(flux)[..., None] * images.magnification.abs()


class LensedSupernova(LensedPointSource):
    """A lensed transient: each image follows the light curve, delayed and magnified.

    Image ``i`` has flux ``|mu_i| F(t - dt_i)`` at the epochs ``times`` (days), where ``F`` is
    ``lightcurve.flux`` and ``dt_i`` the delay after the first image: the light curve's own time
    axis is that of the first-arriving image. :meth:`position_flux` returns fluxes of shape
    ``(n_epochs, n_images)``, so a :class:`~skyfit.LensedImage` renders one image per epoch.

    Arguments:
        lens, geometry: as :class:`LensedPointSource` (``geometry`` is required).
        lightcurve: a :class:`~skyfit.LightCurve` (or any Module with ``flux(t)``).
        times: epochs (days), ``(n_epochs,)``. x0, y0: source position (arcsec).

    Example:
        >>> import torch
        >>> from skyfit import SIS, LensGeometry, GaussianLightCurve
        >>> sn = LensedSupernova(SIS(theta_E=1.0), LensGeometry(z_l=0.5, z_s=1.5),
        ...                      GaussianLightCurve(t0=0.0, sigma=10.0, peak_flux=1.0),
        ...                      times=torch.tensor([0.0, 20.0]), x0=0.2)
        >>> sn.light_curves().shape  # (epochs, images)
        torch.Size([2, 2])
    """

    def __init__(self, lens: ThinLens, geometry: LensGeometry, lightcurve: ck.Module, times,
                 name: str | None = None, x0=0.0, y0=0.0, **search):
        if geometry is None:
            raise ValueError("LensedSupernova needs a LensGeometry for its time delays")
        super().__init__(lens, geometry, name, x0=x0, y0=y0, flux=None, **search)
        self.lightcurve = lightcurve
        times = torch.as_tensor(times, dtype=torch.float64)
        if times.ndim != 1:
            raise ValueError(f"times must be a vector (n_epochs,), got shape {tuple(times.shape)}")
        self.times = Param("times", times, units="day", description="observation epochs")

    @forward
    def light_curves(self, images: LensImages | None = None, times=None) -> torch.Tensor:
        """Flux of every image at every epoch, ``(n_epochs, n_images)``."""
        images = self.images() if images is None else images
        t = torch.as_tensor(times)[..., :, None] - self.time_delays(images)
        return self.lightcurve.flux(t) * images.magnification.abs()

    @forward
    def position_flux(self):
        """Image positions ``x, y`` (arcsec, ``(n_images,)``) and their light curves (flux,
        ``(n_times, n_images)``: magnified and delayed), as a Scene's point source takes them."""
        images = self.images()
        return images.x, images.y, self.light_curves(images)
