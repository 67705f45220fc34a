"""Pixelated (free-form) source."""

from __future__ import annotations

import torch

from .._forward import forward
from .._tensor import batch_param
from ..params import Param
from .base import Source
from .profiles import bilinear_interpolate

__all__ = ["Pixelated"]


class Pixelated(Source):
    """Surface brightness given on a regular stamp of pixels, bilinearly interpolated.

    Useful as a free-form lensed source or a galaxy template. The stamp's pixel centres follow the
    :class:`~skyfit.PixelGrid` convention around ``(x0, y0)``; outside the stamp the brightness
    is 0.
    The total flux is ``values.sum() * pixel_scale**2``.

    Arguments:
        values: ``(ny, nx)`` surface brightness (flux / arcsec^2).
        pixel_scale: stamp pixel side (arcsec), fixed.
        x0, y0: stamp centre (arcsec).

    Example:
        >>> import torch
        >>> from skyfit import Pixelated
        >>> src = Pixelated(values=torch.ones(5, 5), pixel_scale=0.1)
        >>> src.brightness(torch.tensor(0.0), torch.tensor(0.0)).item()
        1.0
    """

    def __init__(self, name: str | None = None, values=None, pixel_scale: float = 0.05, x0=0.0,
                 y0=0.0):
        super().__init__(name)
        if values is None:
            raise ValueError("Pixelated needs `values`: a (ny, nx) surface-brightness stamp")
        values = torch.as_tensor(values)
        if values.ndim != 2:
            raise ValueError(f"Pixelated values must be 2-D (ny, nx), got shape "
                             f"{tuple(values.shape)}")
        self.pixel_scale = float(pixel_scale)
        self.values = Param(
            "values", values, shape=tuple(values.shape), units="flux/arcsec^2",
            description="surface brightness of the stamp pixels",
        )
        self.x0 = Param("x0", x0, units="arcsec", description="stamp centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="stamp centre, y")

    @forward
    def brightness(self, x, y, values=None, x0=None, y0=None):
        """Surface brightness (flux / arcsec^2) at ``(x, y)`` (arcsec), bilinearly interpolated in
        the stamp ``values``; zero outside the stamp."""
        return bilinear_interpolate(values, x, y, batch_param(x0, x), batch_param(y0, x),
                                    self.pixel_scale)
