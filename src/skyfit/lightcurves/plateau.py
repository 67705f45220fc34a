"""A Type II-P (plateau) supernova light curve from progenitor parameters (Popov 1993 scalings).

Explosion energy, ejecta mass and progenitor radius set the plateau luminosity and duration,
``L_p ~ E^(5/6) M^(-1/2) R^(2/3)`` and ``t_p ~ E^(-1/6) M^(1/2) R^(1/6)`` (Popov 1993, ApJ 414,
712; Kasen & Woosley 2009, ApJ 703, 2205, eqs. 11-12, arXiv:0910.1590). Two numbers for three
parameters: the plateau alone leaves a line of degenerate progenitors, ``d ln E = -5/4 d ln R``,
``d ln M = -3/4 d ln R`` (a larger, less massive, less energetic star gives the same plateau).
Only the early shock-cooling emission, ``~ L_p R``, and bluer than the plateau, breaks it, so with
noisy early data the posterior of (E, M) is a curved ridge: the model degeneracy of seed 000.

Units: ``energy`` in 1e51 erg, ``mass`` in 10 solar masses, ``radius`` in 500 solar radii; time
in days since explosion; flux relative to the plateau of (1, 1, 1), per band g, r, i.
"""

from __future__ import annotations

import torch

from .._forward import forward
from ..params import Param
from .base import LightCurve

__all__ = ["PlateauSupernova", "plateau_light_curve", "PLATEAU_BANDS"]

PLATEAU_BANDS = ("g", "r", "i")
# relative flux per band of the three components (plateau ~6000 K recombination photosphere,
# bluer shock cooling, redder radioactive tail); fixed colours, not parameters
_PLATEAU_COLOUR = (0.8, 1.0, 1.05)
_COOLING_COLOUR = (2.0, 1.0, 0.6)
_TAIL_COLOUR = (0.4, 0.8, 1.0)
PLATEAU_DAYS = 122.0  # t_p of (1, 1, 1), Kasen & Woosley 2009 eq. 12
COBALT_DAYS = 111.3  # e-folding time of 56Co decay
TAIL_AT_ZERO = 0.56  # 0.05 solar masses of 56Ni, relative to the plateau luminosity
COOLING_DAYS = 10.0  # decay time of the shock-cooling excess
COOLING_FRACTION = 0.6  # shock-cooling excess at t = 0 for R = 500 R_sun, relative to L_p


def plateau_light_curve(t, band, energy, mass, radius, transition_days=4.0):
    """Flux at days ``t`` in bands ``band`` (indices into g, r, i); see the module docstring.

    ``rise(t) [(plateau + cooling) end(t) + tail(t) (1 - end(t))]`` with smooth sigmoids for the
    rise (1.5 d) and the plateau end (``transition_days``), so it is differentiable everywhere.
    """
    dtype = torch.promote_types(torch.as_tensor(t).dtype, torch.as_tensor(energy).dtype)
    t = torch.as_tensor(t, dtype=dtype)
    energy, mass, radius = (torch.as_tensor(v, dtype=dtype) for v in (energy, mass, radius))
    colour = [torch.tensor(c, dtype=dtype, device=t.device)[band]
              for c in (_PLATEAU_COLOUR, _COOLING_COLOUR, _TAIL_COLOUR)]
    luminosity = energy ** (5 / 6) * mass ** (-1 / 2) * radius ** (2 / 3)
    duration = PLATEAU_DAYS * energy ** (-1 / 6) * mass ** (1 / 2) * radius ** (1 / 6)
    rise = torch.sigmoid(t / 1.5)
    end = torch.sigmoid((duration - t) / transition_days)
    plateau = colour[0] * luminosity
    cooling = colour[1] * COOLING_FRACTION * luminosity * radius * torch.exp(-t / COOLING_DAYS)
    tail = colour[2] * TAIL_AT_ZERO * torch.exp(-t / COBALT_DAYS)
    return rise * ((plateau + cooling) * end + tail * (1 - end))


class PlateauSupernova(LightCurve):
    """Type II-P light curve in g, r, i from energy, ejecta mass and radius (module docstring).

    Arguments:
        energy: explosion energy (1e51 erg). mass: ejecta mass (10 M_sun). radius: progenitor
        radius (500 R_sun). Each has a ``valid`` range (0.5-2, 0.8-2, 0.5-2), the box of the
        default uniform priors.

    Example:
        >>> import torch
        >>> sn = PlateauSupernova(energy=1.0, mass=1.0, radius=1.0)
        >>> t = torch.tensor([60.0, 60.0], dtype=torch.float64)
        >>> [round(f, 3) for f in sn.flux(t, torch.tensor([0, 1])).tolist()]  # plateau g, r
        [0.803, 1.001]
    """

    def __init__(self, name: str | None = None, energy=1.0, mass=1.0, radius=1.0):
        super().__init__(name, bands=PLATEAU_BANDS, shared=("energy", "mass", "radius"))
        self.energy = Param("energy", energy, valid=(0.5, 2.0), units="1e51 erg",
                            description="explosion energy")
        self.mass = Param("mass", mass, valid=(0.8, 2.0), units="10 M_sun",
                          description="ejecta mass")
        self.radius = Param("radius", radius, valid=(0.5, 2.0), units="500 R_sun",
                            description="progenitor radius")

    @forward
    def flux(self, t, band=None, energy=None, mass=None, radius=None):
        """Flux at days ``t`` in bands ``band`` (indices or names)."""
        band = self.band_index(0 if band is None else band)
        return plateau_light_curve(t, band, energy, mass, radius)
