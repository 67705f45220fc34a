"""Sersic light profile."""

from __future__ import annotations

import torch

from .._forward import forward
from .._tensor import batch_param
from ..params import Param
from .base import Source
from .profiles import sersic_profile

__all__ = ["Sersic"]


class Sersic(Source):
    """Elliptical Sersic profile normalised to its total ``flux``.

    ``I(R) = I_e exp(-b_n [(R / Re)^(1/n) - 1])`` with ``b_n`` from :func:`sersic_b` (4e-9
    relative) and the circularised elliptical radius ``R``; ``I_e`` follows from ``flux``.

    References:
        Sersic (1963), Bol. Asoc. Argentina Astron. 6, 41.
        Graham & Driver (2005), PASA 22, 118 (arXiv:astro-ph/0503176).

    Arguments:
        x0, y0: centre (arcsec). q: axis ratio. phi: position angle (rad, ccw from +x).
        n: Sersic index (0.36 - 10 is the accurate range of b_n; valid 0.2 - 10).
        Re: circularised half-light radius (arcsec). flux: total flux (image units).

    Example:
        >>> from skyfit import Sersic, PixelGrid
        >>> s = Sersic(n=1.0, Re=0.3, flux=2.0)
        >>> grid = PixelGrid((200, 200), 0.05, supersample=5)
        >>> x, y = grid.subpixel_coordinates()
        >>> round(grid.integrate(s.brightness(x, y)).sum().item(), 3)
        2.0
    """

    def __init__(
        self,
        name: str | None = None,
        x0=0.0,
        y0=0.0,
        q=1.0,
        phi=0.0,
        n=1.0,
        Re=0.5,
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
        self.n = Param("n", n, valid=(0.2, 10.0), units="dimensionless", description="Sersic index")
        self.Re = Param(
            "Re", Re, valid=(0.0, None), units="arcsec",
            description="circularised half-light radius",
        )
        self.flux = Param("flux", flux, valid=(0.0, None), units="flux", description="total flux")

    @forward
    def brightness(self, x, y, x0=None, y0=None, q=None, phi=None, n=None, Re=None, flux=None):
        """Surface brightness (flux / arcsec^2) at sky position ``(x, y)`` (arcsec); Params
        broadcast in front of ``x``."""
        b = lambda p: batch_param(p, x)  # noqa: E731
        return b(flux) * sersic_profile(x, y, b(x0), b(y0), b(q), b(phi), b(n), b(Re))
