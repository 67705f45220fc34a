"""Stellar spectra: a differentiable normalised spectrum from labels (Teff, log g, abundances).

Pure torch functions in :mod:`skyfit.spectra.functions`; :class:`StellarSpectrum` is the thin
caskade Module over them.
"""

from .functions import (
    absorption_spectrum,
    doppler_width,
    instrumental_broadening,
    line_optical_depth,
    planck_continuum,
)
from .model import ATOMIC_MASS, LineList, StellarSpectrum, synthetic_line_list

__all__ = ["StellarSpectrum", "LineList", "synthetic_line_list", "ATOMIC_MASS",
           "planck_continuum", "line_optical_depth", "doppler_width", "absorption_spectrum",
           "instrumental_broadening"]
