"""The redshifts and cosmology of a lens system: the one place ``z_l`` and ``z_s`` live."""

from __future__ import annotations

import math

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param
from .astropy_cosmology import AstropyCosmology, is_astropy_cosmology
from .cosmology import FlatLambdaCDM, constants

__all__ = ["LensGeometry"]


class LensGeometry(ModuleDisplay, ck.Module):
    """Lens redshift ``z_l``, source redshift ``z_s`` and a cosmology: the lens system's
    distances, and the conversions between physical and angular quantities.

    Mass models in angular units (``theta_E``, ``alpha_Rs``) need no redshift: they already are
    the deflections for this system's source plane. The geometry is needed for time delays
    (:class:`~skyfit.LensedPointSource`) and for physical parametrisations
    (:meth:`~skyfit.SIS.from_velocity_dispersion`, :meth:`~skyfit.PointMass.from_mass`,
    :meth:`~skyfit.NFW.from_m200c`); give all of them the same ``LensGeometry`` so the system has
    one ``z_l`` and one ``z_s`` (they are Params: fix them, or fit them, e.g. with ``H0``).

    Arguments:
        z_l: lens redshift. z_s: source redshift (> z_l). cosmology: a
        :class:`FlatLambdaCDM` (default H0 = 70, Om0 = 0.3; differentiable, H0 and Om0 are
        Params), or any ``astropy.cosmology`` instance (distances from astropy, wrapped in
        :class:`~skyfit.lenses.AstropyCosmology`: no gradients to the redshifts).

    Example:
        >>> geometry = LensGeometry(z_l=0.5, z_s=2.0)
        >>> round(geometry.time_delay_distance().item(), 1)  # Mpc
        2972.4
    """

    def __init__(self, name: str | None = None, z_l=0.5, z_s=2.0,
                 cosmology: FlatLambdaCDM | None = None):
        super().__init__(name)
        if (not callable(z_l) and not callable(z_s) and z_l is not None and z_s is not None
                and not bool(torch.all(torch.as_tensor(z_s) > torch.as_tensor(z_l)))):
            raise ValueError(f"the source must lie behind the lens: z_s = {z_s} <= z_l = {z_l}")
        self.z_l = Param("z_l", z_l, valid=(0.0, None), units="dimensionless",
                         description="lens redshift")
        self.z_s = Param("z_s", z_s, valid=(0.0, None), units="dimensionless",
                         description="source redshift")
        if cosmology is None:
            cosmology = FlatLambdaCDM()
        elif is_astropy_cosmology(cosmology):
            cosmology = AstropyCosmology(cosmology, name="cosmology")
        self.cosmology = cosmology

    @forward
    def distances(self, z_l=None, z_s=None):
        """Angular diameter distances ``(D_l, D_s, D_ls)`` in Mpc."""
        cosmo = self.cosmology
        return (cosmo.angular_diameter_distance(z_l), cosmo.angular_diameter_distance(z_s),
                cosmo.angular_diameter_distance_z1z2(z_l, z_s))

    @forward
    def time_delay_distance(self, z_l=None):
        """``D_dt = (1 + z_l) D_l D_s / D_ls`` in Mpc."""
        D_l, D_s, D_ls = self.distances()
        return (1 + z_l) * D_l * D_s / D_ls

    @forward
    def fermat_to_days(self, fermat):
        """Time delay in days of a Fermat-potential difference in arcsec^2:
        ``dt = D_dt / c * d_phi``."""
        seconds = self.time_delay_distance() * constants.Mpc / constants.c * constants.arcsec**2
        return seconds * fermat / constants.day

    @forward
    def critical_surface_density(self):
        """``Sigma_crit`` in solar masses per arcsec^2 (at the lens)."""
        D_l, D_s, D_ls = self.distances()
        per_mpc2 = (constants.c**2 / (4 * math.pi * constants.G) * constants.Mpc / constants.M_sun
                    * D_s / (D_l * D_ls))
        return per_mpc2 * (D_l * constants.arcsec) ** 2

    @forward
    def sis_einstein_radius(self, sigma_v):
        """SIS Einstein radius (arcsec) for a velocity dispersion in km/s:
        ``4 pi (sigma_v / c)^2 D_ls / D_s``."""
        _, D_s, D_ls = self.distances()
        return 4 * math.pi * (sigma_v * 1e3 / constants.c) ** 2 * D_ls / D_s / constants.arcsec

    @forward
    def point_mass_einstein_radius(self, mass):
        """Point-mass Einstein radius (arcsec) for a mass in solar masses:
        ``sqrt(4 G M D_ls / (c^2 D_l D_s))``."""
        D_l, D_s, D_ls = self.distances()
        rs = 4 * constants.G * mass * constants.M_sun / constants.c**2 / constants.Mpc  # Mpc
        return torch.sqrt(rs * D_ls / (D_l * D_s)) / constants.arcsec

    @forward
    def nfw_angles(self, m200c, concentration, z_l=None):
        """``(Rs, alpha_Rs)`` in arcsec of an NFW halo of ``m200c`` solar masses and
        concentration ``c`` (lenstronomy's ``LensCosmo.nfw_physical2angle``):
        ``r200 = (3 M / (800 pi rho_crit(z_l)))^(1/3)``, ``Rs = r200 / c``,
        ``rho0 = 200/3 rho_crit c^3 / (ln(1 + c) - c / (1 + c))``,
        ``alpha_Rs = 4 rho0 Rs^2 (1 + ln 1/2) / (Sigma_crit D_l)``."""
        D_l, D_s, D_ls = self.distances()
        rho_crit = self.cosmology.critical_density(z_l)  # Msun / Mpc^3
        c = concentration
        r200 = (3 * m200c / (4 * math.pi * 200 * rho_crit)) ** (1 / 3)  # Mpc
        Rs = r200 / c
        rho0 = 200 / 3 * rho_crit * c**3 / (torch.log(1 + c) - c / (1 + c))
        sigma_crit = (constants.c**2 / (4 * math.pi * constants.G) * constants.Mpc
                      / constants.M_sun * D_s / (D_l * D_ls))  # Msun / Mpc^2
        alpha_Rs = 4 * rho0 * Rs**2 * (1 + math.log(0.5)) / sigma_crit  # Mpc / Mpc = rad * D_l
        return Rs / D_l / constants.arcsec, alpha_Rs / D_l / constants.arcsec
