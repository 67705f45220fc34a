"""Light sources: surface-brightness profiles and point sources."""

from .base import Source
from .gaussian import Gaussian
from .pixelated import Pixelated
from .point import PointSource
from .profiles import (
    bilinear_interpolate,
    gaussian_profile,
    sersic_b,
    sersic_b_exact,
    sersic_profile,
    sersic_total_flux,
)
from .sersic import Sersic
from .vae import VAESource

__all__ = [
    "Source",
    "Gaussian",
    "Sersic",
    "PointSource",
    "Pixelated",
    "VAESource",
    "gaussian_profile",
    "sersic_profile",
    "sersic_b",
    "sersic_b_exact",
    "sersic_total_flux",
    "bilinear_interpolate",
]
