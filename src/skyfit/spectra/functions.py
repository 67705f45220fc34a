"""Pure torch functions of a normalised stellar spectrum: continuum, line opacities, broadening.

Conventions (for all of :mod:`skyfit.spectra`): wavelengths in Angstrom on a uniform grid,
temperatures in K, ``logg`` in log10(cm s^-2), abundances ``[X/H]`` in dex relative to solar.
Every function broadcasts leading batch dimensions of its parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["planck_continuum", "line_optical_depth", "doppler_width", "absorption_spectrum",
           "instrumental_broadening"]

_HC_OVER_K = 1.4387769e8  # h c / k_B in Angstrom K
_C_KMS = 299792.458
_K_B_OVER_AMU = 8.31446e-3  # k_B / m_u in (km/s)^2 / K
_SOLAR_LOGG = 4.44


def planck_continuum(wavelength, teff, reference: float):
    """Planck ``B_lambda(T)`` divided by its value at ``reference`` Angstrom (1 there).

    Example:
        >>> import torch
        >>> wl = torch.tensor([4000.0, 5000.0, 6000.0], dtype=torch.float64)
        >>> planck_continuum(wl, torch.tensor(5772.0, dtype=torch.float64), reference=5000.0)
        tensor([0.8733, 1.0000, 0.9308], dtype=torch.float64)
    """
    teff = torch.as_tensor(teff)[..., None]
    x = _HC_OVER_K / (wavelength * teff)
    x0 = _HC_OVER_K / (reference * teff)
    return (reference / wavelength) ** 5 * torch.expm1(x0) / torch.expm1(x)


def line_optical_depth(abundance, log_gf, excitation, ionized, teff, logg, zero_point=0.0):
    """Central optical depth of each line (a Boltzmann-Saha scaling, Gray 2005 ch. 13):

    ``log10 tau = zero_point + log_gf + [X/H] - (5040 / Teff) excitation
    - ionized (logg - 4.44) / 3``: stronger for more abundant elements and larger oscillator
    strengths, weaker for high excitation potentials (eV) in cool stars, and for lines of ions
    weaker at high gravity (electron pressure ``~ g^(1/3)`` favours the neutral stage).
    ``abundance`` is ``(..., n_lines)`` (each line's element's [X/H]).

    Example:
        >>> import torch
        >>> zero, teff, logg = torch.zeros(2), torch.tensor(5040.0), torch.tensor(4.44)
        >>> abundance = torch.tensor([0.0, 0.3])  # [X/H] of each line's element
        >>> line_optical_depth(abundance, zero, zero, zero, teff, logg)
        tensor([1.0000, 1.9953])
    """
    theta = 5040.0 / torch.as_tensor(teff)[..., None]
    gravity = (torch.as_tensor(logg)[..., None] - _SOLAR_LOGG) / 3.0
    log_tau = zero_point + log_gf + abundance - theta * excitation - ionized * gravity
    return 10.0 ** log_tau


def doppler_width(center, teff, atomic_mass, microturbulence: float = 1.5,
                  macroturbulence: float = 4.0):
    """Gaussian sigma (Angstrom) of thermal, microturbulent and macroturbulent motion (km/s):
    ``center / c * sqrt(k T / m + (xi^2 + zeta^2) / 2)`` (macroturbulence taken Gaussian).

    Example:
        >>> import torch
        >>> centre, teff = torch.tensor(5000.0), torch.tensor(5772.0)
        >>> round(doppler_width(centre, teff, 55.845, 0.0, 0.0).item(), 4)  # Fe, thermal only
        0.0155
    """
    teff = torch.as_tensor(teff)[..., None]
    velocity = torch.sqrt(_K_B_OVER_AMU * teff / atomic_mass
                          + 0.5 * (microturbulence**2 + macroturbulence**2))
    return center * velocity / _C_KMS


def absorption_spectrum(wavelength, center, tau, width, window: int = 8):
    """``exp(-sum_i tau_i exp(-(lambda - c_i)^2 / (2 w_i^2)))``: lines saturate as tau grows
    (a curve of growth). ``tau, width`` are ``(..., n_lines)``; returns ``(..., n_pixels)``.

    Each line's opacity is evaluated only on the ``2 window + 1`` pixels around its centre
    (``wavelength`` must be uniform, and ``window`` pixels must exceed ~6 widths): the cost
    grows with the number of lines, not lines times pixels.

    Example:
        >>> import torch
        >>> wl = torch.linspace(4990.0, 5010.0, 201, dtype=torch.float64)  # 0.1 Angstrom pixels
        >>> centre, tau, width = torch.tensor([[5000.0], [2.0], [0.2]], dtype=torch.float64)
        >>> f = absorption_spectrum(wl, centre, tau, width)
        >>> round(f[100].item(), 6), round(f[0].item(), 6)  # exp(-2) at the centre, 1 far away
        (0.135335, 1.0)
    """
    n = wavelength.shape[0]
    step = (wavelength[-1] - wavelength[0]) / (n - 1)
    nearest = torch.round((center - wavelength[0]) / step).long()
    pixels = (nearest[:, None] + torch.arange(-window, window + 1)).clamp(0, n - 1)
    offset = (wavelength[pixels] - center[:, None]) / width[..., None]  # (..., lines, window)
    opacity = tau[..., None] * torch.exp(-0.5 * offset**2)
    inside = (nearest[:, None] + torch.arange(-window, window + 1) >= 0) & (
        nearest[:, None] + torch.arange(-window, window + 1) < n)
    opacity = torch.where(inside, opacity, torch.zeros_like(opacity))
    total = torch.zeros(opacity.shape[:-2] + (n,), dtype=opacity.dtype, device=opacity.device)
    total = total.index_add(-1, pixels.flatten(), opacity.flatten(-2))
    return torch.exp(-total)


def instrumental_broadening(flux, sigma_pixels: float):
    """Convolve ``flux (..., n_pixels)`` with a normalised Gaussian line-spread function of
    ``sigma_pixels`` (edges replicated, so a flat spectrum stays flat).

    Example:
        >>> import torch
        >>> flat = torch.ones(50, dtype=torch.float64)
        >>> torch.allclose(instrumental_broadening(flat, 2.0), flat)
        True
        >>> line = torch.zeros(51, dtype=torch.float64)
        >>> line[25] = 1.0
        >>> round(instrumental_broadening(line, 2.0).sum().item(), 6)  # flux is kept
        1.0
    """
    half = max(1, int(math.ceil(4 * sigma_pixels)))
    offsets = torch.arange(-half, half + 1, dtype=flux.dtype, device=flux.device)
    kernel = torch.exp(-0.5 * (offsets / sigma_pixels) ** 2)
    kernel = (kernel / kernel.sum()).reshape(1, 1, -1)
    batch = flux.shape[:-1]
    rows = F.pad(flux.reshape(-1, 1, flux.shape[-1]), (half, half), mode="replicate")
    return F.conv1d(rows, kernel).reshape(*batch, flux.shape[-1])
