"""Point source (a star, a supernova, a quasar image): rendered through the PSF."""

from __future__ import annotations

import caskade as ck

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param

__all__ = ["PointSource"]


class PointSource(ModuleDisplay, ck.Module):
    """An unresolved source at a sub-pixel position.

    It has no surface brightness: a scene renders it as ``flux`` times the PSF centred at
    ``(x0, y0)`` (see :meth:`skyfit.GaussianPSF.point_image`), so its image sums to ``flux``
    when it lies well inside the grid. ``flux`` may carry a leading batch (for instance one value
    per epoch, from a light curve).

    Example:
        >>> from skyfit import PointSource, GaussianPSF, PixelGrid
        >>> grid = PixelGrid((32, 32), 0.1)
        >>> sn = PointSource(x0=0.03, y0=-0.02, flux=3.0)
        >>> img = GaussianPSF(sigma=0.15).point_image(grid, *sn.position_flux())
        >>> round(img.sum().item(), 6)
        3.0
    """

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, flux=1.0):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="position, x")
        self.y0 = Param("y0", y0, units="arcsec", description="position, y")
        self.flux = Param("flux", flux, valid=(0.0, None), units="flux", description="total flux")

    @forward
    def position_flux(self, x0=None, y0=None, flux=None):
        """``(x0, y0, flux)`` as tensors, in the current parameter context."""
        return x0, y0, flux
