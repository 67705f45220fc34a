"""Elliptical Gaussian light profile."""

from __future__ import annotations

import torch

from .._forward import forward
from .._tensor import batch_param
from ..params import Param
from .base import Source
from .profiles import gaussian_profile

__all__ = ["Gaussian"]


class Gaussian(Source):
    """Elliptical 2-D Gaussian normalised to its total ``flux``.

    ``I(x, y) = flux / (2 pi sigma^2) exp(-R^2 / (2 sigma^2))`` with the circularised elliptical
    radius ``R^2 = q x'^2 + y'^2 / q`` (see :mod:`skyfit.sources.profiles`).

    Arguments:
        x0, y0: centre (arcsec). q: axis ratio. phi: position angle (rad, ccw from +x).
        sigma: circularised standard deviation (arcsec). flux: total flux (image units).

    Example:
        >>> from skyfit import Gaussian, PixelGrid
        >>> g = Gaussian(x0=0.1, y0=0.0, q=0.6, phi=0.3, sigma=0.2, flux=5.0)
        >>> grid = PixelGrid((64, 64), 0.05, supersample=3)
        >>> x, y = grid.subpixel_coordinates()
        >>> round(grid.integrate(g.brightness(x, y)).sum().item(), 4)
        5.0
    """

    def __init__(
        self,
        name: str | None = None,
        x0=0.0,
        y0=0.0,
        q=1.0,
        phi=0.0,
        sigma=0.1,
        flux=1.0,
    ):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="centre, y")
        self.q = Param("q", q, valid=(0.0, 1.0), units="dimensionless",
                       description="axis ratio b/a")
        self.phi = Param(
            "phi", phi, valid=(0.0, torch.pi), cyclic=True, units="rad",
            description="position angle of the major axis, ccw from +x",
        )
        self.sigma = Param(
            "sigma", sigma, valid=(0.0, None), units="arcsec",
            description="circularised standard deviation",
        )
        self.flux = Param("flux", flux, valid=(0.0, None), units="flux", description="total flux")

    @forward
    def brightness(self, x, y, x0=None, y0=None, q=None, phi=None, sigma=None, flux=None):
        """Surface brightness (flux / arcsec^2) at sky position ``(x, y)`` (arcsec); Params
        broadcast in front of ``x``."""
        b = lambda p: batch_param(p, x)  # noqa: E731
        profile = gaussian_profile(x, y, b(x0), b(y0), b(q), b(phi), b(sigma))
        return b(flux) * profile
