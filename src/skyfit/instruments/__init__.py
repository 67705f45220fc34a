"""Instruments: pixel grids, PSFs, convolution and noise models."""

from .convolution import fft_convolve
from .grid import PixelGrid
from .noise import ReadPoissonNoise
from .psf import PSF, GaussianPSF, PixelatedPSF

__all__ = ["PixelGrid", "PSF", "GaussianPSF", "PixelatedPSF", "ReadPoissonNoise", "fft_convolve"]
