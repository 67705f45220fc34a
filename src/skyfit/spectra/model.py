"""A differentiable normalised stellar spectrum from labels (Teff, log g, abundances)."""

from __future__ import annotations

from dataclasses import dataclass

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param
from .functions import (
    absorption_spectrum,
    doppler_width,
    instrumental_broadening,
    line_optical_depth,
    planck_continuum,
)

__all__ = ["LineList", "synthetic_line_list", "StellarSpectrum", "ATOMIC_MASS"]

# log10 of the central optical depth of a solar-abundance, log gf = 0, 0 eV line: sets how
# many lines are saturated (here the strongest few, as in a solar spectrum near 5100 A)
LINE_STRENGTH_ZERO_POINT = 1.5
ATOMIC_MASS = {"Fe": 55.85, "Mg": 24.31, "Si": 28.09, "Ca": 40.08, "Ti": 47.87, "Ba": 137.33}
"""Atomic mass per element, in atomic mass units (for thermal Doppler widths)."""


@dataclass
class LineList:
    """Atomic lines: ``center`` (Angstrom), ``element`` (index into ``elements``), ``log_gf``,
    ``excitation`` (eV), ``ionized`` (1.0 for lines of the singly ionised stage).

    Example:
        >>> import torch
        >>> one = torch.tensor([1.0])
        >>> lines = LineList(("Fe",), 5000 * one, torch.tensor([0]), 0 * one, one, 0 * one)
        >>> len(lines), lines.of("Fe").tolist()
        (1, [0])
    """

    elements: tuple[str, ...]
    center: torch.Tensor
    element: torch.Tensor
    log_gf: torch.Tensor
    excitation: torch.Tensor
    ionized: torch.Tensor

    def __len__(self) -> int:
        return self.center.shape[0]

    def of(self, element: str) -> torch.Tensor:
        """Indices of the lines of ``element``."""
        return torch.nonzero(self.element == self.elements.index(element)).flatten()


def synthetic_line_list(elements=("Fe", "Mg", "Si", "Ca", "Ti"), lines_per_element: int = 12,
                        wavelength_range=(5000.0, 5100.0), seed: int = 0) -> LineList:
    """A reproducible made-up line list: uniform centres, ``log_gf`` in [-1.5, 0.5], excitation
    in [0, 5] eV, a third of each element's lines ionised (a stand-in for a real list such as
    VALD's, which is not redistributable).

    Example:
        >>> lines = synthetic_line_list(elements=("Fe", "Mg"), lines_per_element=3)
        >>> len(lines), lines.elements, lines.of("Mg").tolist()
        (6, ('Fe', 'Mg'), [3, 4, 5])
    """
    gen = torch.Generator().manual_seed(seed)
    n = lines_per_element * len(elements)
    lo, hi = wavelength_range
    margin = 0.02 * (hi - lo)
    kw = dict(generator=gen, dtype=torch.float64)
    return LineList(
        elements=tuple(elements),
        center=lo + margin + (hi - lo - 2 * margin) * torch.rand(n, **kw),
        element=torch.arange(len(elements)).repeat_interleave(lines_per_element),
        log_gf=-1.5 + 2.0 * torch.rand(n, **kw),
        excitation=3.0 * torch.rand(n, **kw),
        ionized=(torch.rand(n, **kw) < 1 / 3).to(torch.float64),
    )


class StellarSpectrum(ModuleDisplay, ck.Module):
    """Normalised spectrum ``continuum(lambda; Teff) * exp(-sum of line opacities)``, broadened
    by the spectrograph's line-spread function, on ``n_pixels`` wavelengths.

    Line depths follow the labels through :func:`line_optical_depth` (abundance, Teff through
    the excitation, log g for ionised lines), widths through thermal Doppler broadening; the
    instrument has resolving power ``resolution`` (Gaussian LSF). Noise is the likelihood's
    business (e.g. ``GaussianLikelihood(spectrum, data, variance=1 / snr**2)``).

    Arguments:
        lines: a :class:`LineList`. wavelength_range, n_pixels: the uniform wavelength grid.
        resolution: resolving power ``lambda / FWHM``.
        teff, logg, abundances: initial label values (abundances: one [X/H] per element).

    Example:
        >>> import torch
        >>> lines = synthetic_line_list(lines_per_element=4)
        >>> spec = StellarSpectrum(lines, n_pixels=1000)
        >>> flux = spec()
        >>> tuple(flux.shape), bool(flux.max() < 1.1), bool(flux.min() > 0)
        ((1000,), True, True)
    """

    def __init__(self, lines: LineList, wavelength_range=(5000.0, 5100.0), n_pixels: int = 1500,
                 resolution: float = 20000.0, teff=5500.0, logg=4.0, abundances=None,
                 name: str | None = None):
        super().__init__(name)
        self.lines = lines
        lo, hi = wavelength_range
        self.wavelength = torch.linspace(lo, hi, n_pixels, dtype=torch.float64)
        self.reference = 0.5 * (lo + hi)
        step = (hi - lo) / (n_pixels - 1)
        self.lsf_pixels = self.reference / resolution / 2.3548 / step
        self.atomic_mass = torch.tensor([ATOMIC_MASS[e] for e in lines.elements],
                                        dtype=torch.float64)[lines.element]
        if abundances is None:
            abundances = [0.0] * len(lines.elements)
        self.teff = Param("teff", teff, valid=(4000.0, 7000.0), units="K",
                          description="effective temperature")
        self.logg = Param("logg", logg, valid=(1.0, 5.0), units="log10(cm s^-2)",
                          description="surface gravity")
        self.abundances = Param("abundances", abundances, shape=(len(lines.elements),),
                                valid=(-1.0, 0.5), units="dex",
                                description=f"[X/H] of {', '.join(lines.elements)}")

    @forward
    def __call__(self, teff=None, logg=None, abundances=None):
        # fixed tensors follow the labels' dtype and device (float32 / CUDA runs stay there)
        kw = dict(dtype=teff.dtype, device=teff.device)
        lines = self.lines
        center = lines.center.to(**kw)
        element = lines.element.to(teff.device)
        wavelength = self.wavelength.to(**kw)
        tau = line_optical_depth(abundances[..., element], lines.log_gf.to(**kw),
                                 lines.excitation.to(**kw), lines.ionized.to(**kw), teff, logg,
                                 LINE_STRENGTH_ZERO_POINT)
        width = doppler_width(center, teff, self.atomic_mass.to(**kw))
        flux = planck_continuum(wavelength, teff, self.reference) * absorption_spectrum(
            wavelength, center, tau, width)
        return instrumental_broadening(flux, self.lsf_pixels)
