"""Flat LambdaCDM distances in torch (differentiable in H0, Om0 and the redshifts)."""

from __future__ import annotations

import math

import caskade as ck
import numpy as np
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param

__all__ = ["FlatLambdaCDM", "constants"]


def _redshift(z) -> torch.Tensor:
    # Python numbers as float64: torch.as_tensor(0.3) is float32, 7e-8 off before any upcast
    return z if torch.is_tensor(z) else torch.as_tensor(z, dtype=torch.float64)


class constants:
    """Physical constants in SI (CODATA 2018 and IAU 2015, the values astropy uses)."""

    c = 299_792_458.0  # speed of light, m/s
    G = 6.67430e-11  # m^3 kg^-1 s^-2
    M_sun = 1.988409870698051e30  # kg (IAU 2015 nominal GM_sun / G)
    pc = 3.0856775814913673e16  # m
    Mpc = 3.0856775814913673e22  # m
    day = 86_400.0  # s
    arcsec = math.pi / 648_000  # rad


# Gauss-Legendre nodes on [0, 1]: the integrand 1/E(z) is smooth, so 64 nodes give the comoving
# distance to ~1e-15 relative for any z < 20.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
_NODES = (_NODES + 1) / 2
_WEIGHTS = _WEIGHTS / 2


class FlatLambdaCDM(ModuleDisplay, ck.Module):
    """Flat Lambda-CDM cosmology without radiation (astropy's ``FlatLambdaCDM`` with ``Tcmb0=0``).

    Distances are in Mpc, from ``D_C(z) = c/H0 int_0^z dz' / E(z')`` with
    ``E(z) = sqrt(Om0 (1+z)^3 + 1 - Om0)``, evaluated by 64-node Gauss-Legendre quadrature so they
    are differentiable in ``H0``, ``Om0`` and ``z`` (for instance for a fit of ``H0`` from time
    delays).

    Arguments:
        H0: Hubble constant (km/s/Mpc). Om0: matter density today.

    Example:
        >>> cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
        >>> round(cosmo.angular_diameter_distance(1.0).item(), 2)  # astropy: 1651.91 Mpc
        1651.91
    """

    def __init__(self, name: str | None = None, H0=70.0, Om0=0.3):
        super().__init__(name)
        self.H0 = Param("H0", H0, valid=(0.0, None), units="km/s/Mpc",
                        description="Hubble constant")
        self.Om0 = Param("Om0", Om0, valid=(0.0, 1.0), units="dimensionless",
                         description="matter density today")

    @forward
    def comoving_distance(self, z, H0=None, Om0=None):
        """Line-of-sight comoving distance to redshift ``z`` (any shape), Mpc."""
        H0 = torch.as_tensor(H0)
        z = _redshift(z)
        z = z.to(torch.promote_types(H0.dtype, z.dtype if z.is_floating_point() else H0.dtype))
        nodes = torch.as_tensor(_NODES, dtype=z.dtype, device=z.device)
        weights = torch.as_tensor(_WEIGHTS, dtype=z.dtype, device=z.device)
        zz = z[..., None] * nodes
        Om0 = torch.as_tensor(Om0)[..., None]
        inv_E = 1 / torch.sqrt(Om0 * (1 + zz) ** 3 + 1 - Om0)
        hubble_distance = constants.c / 1e3 / H0  # Mpc
        return hubble_distance * z * (inv_E * weights).sum(-1)

    @forward
    def angular_diameter_distance(self, z):
        """Angular diameter distance to ``z``, Mpc."""
        z = _redshift(z)
        return self.comoving_distance(z) / (1 + z)

    @forward
    def angular_diameter_distance_z1z2(self, z1, z2):
        """Angular diameter distance from ``z1`` to ``z2 > z1`` (flat universe), Mpc."""
        z1, z2 = _redshift(z1), _redshift(z2)
        return (self.comoving_distance(z2) - self.comoving_distance(z1)) / (1 + z2)

    @forward
    def time_delay_distance(self, z_l, z_s):
        """``D_dt = (1 + z_l) D_l D_s / D_ls``, Mpc."""
        z_l, z_s = _redshift(z_l), _redshift(z_s)
        D_l = self.angular_diameter_distance(z_l)
        D_s = self.angular_diameter_distance(z_s)
        return (1 + z_l) * D_l * D_s / self.angular_diameter_distance_z1z2(z_l, z_s)

    @forward
    def critical_surface_density(self, z_l, z_s):
        """``Sigma_crit = c^2 D_s / (4 pi G D_l D_ls)`` in solar masses per Mpc^2."""
        z_l, z_s = _redshift(z_l), _redshift(z_s)
        D_l = self.angular_diameter_distance(z_l)
        D_s = self.angular_diameter_distance(z_s)
        D_ls = self.angular_diameter_distance_z1z2(z_l, z_s)
        factor = constants.c**2 / (4 * math.pi * constants.G) * constants.Mpc / constants.M_sun
        return factor * D_s / (D_l * D_ls)

    @forward
    def critical_density(self, z, H0=None, Om0=None):
        """Critical density of the universe at ``z``, solar masses per Mpc^3."""
        z = _redshift(z)
        H = H0 * torch.sqrt(Om0 * (1 + z) ** 3 + 1 - Om0) * 1e3 / constants.Mpc  # 1/s
        rho = 3 * H**2 / (8 * math.pi * constants.G)  # kg/m^3
        return rho * constants.Mpc**3 / constants.M_sun
