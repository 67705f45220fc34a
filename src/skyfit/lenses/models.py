"""Mass models: thin caskade Modules over :mod:`skyfit.lenses.functions`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._forward import forward
from .._graph import ModuleList
from .._tensor import batch_param
from ..params import Param
from . import functions as F
from .base import ThinLens
from .pointers import NFWAngle, PointMassEinsteinRadius, SISEinsteinRadius

__all__ = ["SIS", "SIE", "PointMass", "ExternalShear", "MassSheet", "NFW", "EPL", "CompositeLens"]


def _b(x, *params):
    return [batch_param(p, x) for p in params]


class SIS(ThinLens):
    """Singular isothermal sphere: ``kappa = theta_E / (2 r)``.

    Arguments:
        x0, y0: centre (arcsec). theta_E: Einstein radius (arcsec).

    Example:
        >>> import torch
        >>> lens = SIS(theta_E=1.0)
        >>> [round(a.item(), 6) for a in lens.deflection(torch.tensor(2.0), torch.tensor(0.0))]
        [1.0, 0.0]
    """

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, theta_E=1.0):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="mass centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="mass centre, y")
        self.theta_E = Param("theta_E", theta_E, valid=(0.0, None), units="arcsec",
                             description="Einstein radius (intermediate-axis convention)")

    @classmethod
    def from_velocity_dispersion(cls, sigma_v, geometry, name: str | None = None, x0=0.0, y0=0.0):
        """An SIS parametrised by its velocity dispersion ``sigma_v`` (km/s):
        ``theta_E = 4 pi (sigma_v / c)^2 D_ls / D_s``, with the distances of ``geometry``
        (a :class:`~skyfit.LensGeometry`). ``theta_E`` becomes a function of the new Param
        ``sigma_v`` and of the geometry's Params (redshifts, cosmology)."""
        lens = cls(name, x0=x0, y0=y0, theta_E=None)
        lens.sigma_v = Param("sigma_v", sigma_v, valid=(0.0, None), units="km/s",
                             description="velocity dispersion")
        lens.theta_E = SISEinsteinRadius()
        lens.theta_E.link("sigma_v", lens.sigma_v)
        lens.theta_E.link("geometry", geometry)
        return lens

    @forward
    def deflection(self, x, y, x0=None, y0=None, theta_E=None):
        return F.sis_deflection(x, y, *_b(x, x0, y0, theta_E))

    @forward
    def convergence(self, x, y, x0=None, y0=None, theta_E=None):
        return F.sis_convergence(x, y, *_b(x, x0, y0, theta_E))

    @forward
    def potential(self, x, y, x0=None, y0=None, theta_E=None):
        return F.sis_potential(x, y, *_b(x, x0, y0, theta_E))


class _Elliptical:
    """Mixed in before :class:`ThinLens` by elliptical mass models: declares their common Params
    (centre, axis ratio, position angle, Einstein radius) in its own ``__init__``."""

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, q=0.8, phi=0.0, theta_E=1.0):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="mass centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="mass centre, y")
        self.q = Param("q", q, valid=(0.0, 1.0), units="dimensionless",
                       description="axis ratio minor/major")
        self.phi = Param("phi", phi, valid=(0.0, torch.pi), cyclic=True, units="rad",
                         description="position angle of the major axis, ccw from +x")
        self.theta_E = Param("theta_E", theta_E, valid=(0.0, None), units="arcsec",
                             description="Einstein radius (intermediate-axis convention)")


class SIE(_Elliptical, ThinLens):
    """Singular isothermal ellipsoid: ``kappa = theta_E / (2 sqrt(q x'^2 + y'^2 / q))``.

    ``theta_E`` is the Einstein radius of the intermediate axis (lenstronomy's convention): the
    mass inside the critical curve does not depend on ``q``. Closed-form deflection (Kormann et
    al. 1994); ``q = 1`` is handled exactly (it is the SIS).

    Arguments:
        x0, y0: centre (arcsec). q: axis ratio minor/major. phi: position angle of the major
        axis (rad, ccw from +x). theta_E: Einstein radius (arcsec).

    Example:
        >>> import torch
        >>> lens = SIE(q=0.7, phi=0.3, theta_E=1.2)
        >>> round(lens.convergence(torch.tensor(0.8), torch.tensor(0.4)).item(), 6)
        0.790933
    """

    @forward
    def deflection(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None):
        return F.sie_deflection(x, y, *_b(x, x0, y0, q, phi, theta_E))

    @forward
    def convergence(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None):
        return F.sie_convergence(x, y, *_b(x, x0, y0, q, phi, theta_E))

    @forward
    def potential(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None):
        return F.sie_potential(x, y, *_b(x, x0, y0, q, phi, theta_E))


class PointMass(ThinLens):
    """Point mass: ``alpha = theta_E^2 / r`` radially; ``theta_E^2 = 4 G M D_ls / (c^2 D_l D_s)``.

    Arguments:
        x0, y0: position (arcsec). theta_E: Einstein radius (arcsec).

    Example:
        >>> import torch
        >>> lens = PointMass(theta_E=1.0)
        >>> round(lens.magnification(torch.tensor(2.0), torch.tensor(0.0)).item(), 6)
        1.066667
    """

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, theta_E=1.0):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="mass centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="mass centre, y")
        self.theta_E = Param("theta_E", theta_E, valid=(0.0, None), units="arcsec",
                             description="Einstein radius (intermediate-axis convention)")

    @classmethod
    def from_mass(cls, mass, geometry, name: str | None = None, x0=0.0, y0=0.0):
        """A point mass parametrised by its ``mass`` in solar masses (``theta_E`` follows from
        ``geometry``, a :class:`~skyfit.LensGeometry`)."""
        lens = cls(name, x0=x0, y0=y0, theta_E=None)
        lens.mass = Param("mass", mass, valid=(0.0, None), units="Msun", description="mass")
        lens.theta_E = PointMassEinsteinRadius()
        lens.theta_E.link("mass", lens.mass)
        lens.theta_E.link("geometry", geometry)
        return lens

    @forward
    def deflection(self, x, y, x0=None, y0=None, theta_E=None):
        return F.point_mass_deflection(x, y, *_b(x, x0, y0, theta_E))

    @forward
    def convergence(self, x, y, x0=None, y0=None, theta_E=None):
        return F.point_mass_convergence(x, y, *_b(x, x0, y0, theta_E))

    @forward
    def potential(self, x, y, x0=None, y0=None, theta_E=None):
        return F.point_mass_potential(x, y, *_b(x, x0, y0, theta_E))


class ExternalShear(ThinLens):
    """External shear: ``psi = (gamma1 (dx^2 - dy^2) + 2 gamma2 dx dy) / 2``.

    The shear strength is ``sqrt(gamma1^2 + gamma2^2)`` and its angle ``atan2(gamma2, gamma1)/2``
    (ccw from +x). The origin ``(x0, y0)`` of the potential is a fixed number, not a parameter:
    moving it only shifts the source.

    Example:
        >>> import torch
        >>> shear = ExternalShear(gamma1=0.05, gamma2=0.0)
        >>> [round(a.item(), 6) for a in shear.deflection(torch.tensor(1.0), torch.tensor(1.0))]
        [0.05, -0.05]
    """

    has_centre = False

    def __init__(self, name: str | None = None, gamma1=0.0, gamma2=0.0, x0: float = 0.0,
                 y0: float = 0.0):
        super().__init__(name)
        self.gamma1 = Param("gamma1", gamma1, valid=(-1.0, 1.0), units="dimensionless",
                            description="shear along x / y")
        self.gamma2 = Param("gamma2", gamma2, valid=(-1.0, 1.0), units="dimensionless",
                            description="shear along the diagonals")
        self.origin = (float(x0), float(y0))

    @forward
    def deflection(self, x, y, gamma1=None, gamma2=None):
        return F.shear_deflection(x, y, *self.origin, *_b(x, gamma1, gamma2))

    @forward
    def convergence(self, x, y, gamma1=None, gamma2=None):
        return F.shear_convergence(x, y, *self.origin, *_b(x, gamma1, gamma2))

    @forward
    def potential(self, x, y, gamma1=None, gamma2=None):
        return F.shear_potential(x, y, *self.origin, *_b(x, gamma1, gamma2))


class MassSheet(ThinLens):
    """Uniform sheet of convergence ``kappa`` (the mass-sheet degeneracy, external convergence).

    The origin ``(x0, y0)`` of its potential is a fixed number (moving it only shifts the source).

    Example:
        >>> import torch
        >>> sheet = MassSheet(kappa=0.1)
        >>> round(sheet.magnification(torch.tensor(1.0), torch.tensor(0.0)).item(), 6)
        1.234568
    """

    has_centre = False

    def __init__(self, name: str | None = None, kappa=0.0, x0: float = 0.0, y0: float = 0.0):
        super().__init__(name)
        self.kappa = Param("kappa", kappa, units="dimensionless",
                           description="convergence of the sheet")
        self.origin = (float(x0), float(y0))

    @forward
    def deflection(self, x, y, kappa=None):
        return F.mass_sheet_deflection(x, y, *self.origin, *_b(x, kappa))

    @forward
    def convergence(self, x, y, kappa=None):
        return F.mass_sheet_convergence(x, y, *self.origin, *_b(x, kappa))

    @forward
    def potential(self, x, y, kappa=None):
        return F.mass_sheet_potential(x, y, *self.origin, *_b(x, kappa))


class NFW(ThinLens):
    """Navarro, Frenk & White (1997) halo in lenstronomy's angular parametrisation.

    ``rho(r) = rho0 / ((r / Rs) (1 + r / Rs)^2)``, normalised by ``alpha_Rs``, the deflection
    at the projected radius ``Rs``. :meth:`from_m200c` builds it from a mass and concentration.

    References:
        Navarro, Frenk & White (1997), ApJ 490, 493 (arXiv:astro-ph/9611107);
        Bartelmann (1996), A&A 313, 697 (arXiv:astro-ph/9602053).

    Arguments:
        x0, y0: centre (arcsec). Rs: scale radius (arcsec). alpha_Rs: deflection at Rs (arcsec).

    Example:
        >>> import torch
        >>> halo = NFW(Rs=2.0, alpha_Rs=0.5)
        >>> round(halo.deflection(torch.tensor(2.0), torch.tensor(0.0))[0].item(), 6)
        0.5
    """

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, Rs=1.0, alpha_Rs=1.0):
        super().__init__(name)
        self.x0 = Param("x0", x0, units="arcsec", description="mass centre, x")
        self.y0 = Param("y0", y0, units="arcsec", description="mass centre, y")
        self.Rs = Param("Rs", Rs, valid=(0.0, None), units="arcsec",
                        description="scale radius")
        self.alpha_Rs = Param("alpha_Rs", alpha_Rs, valid=(0.0, None), units="arcsec",
                              description="deflection at the scale radius")

    @classmethod
    def from_m200c(cls, m200c, concentration, geometry, name: str | None = None, x0=0.0, y0=0.0):
        """An NFW halo parametrised by ``m200c`` (solar masses, inside the radius where the mean
        density is 200 times the critical density at ``z_l``) and ``concentration`` ``c =
        r200c / r_s``; ``Rs`` and ``alpha_Rs`` follow from ``geometry`` (a
        :class:`~skyfit.LensGeometry`) as in lenstronomy's ``LensCosmo.nfw_physical2angle``."""
        lens = cls(name, x0=x0, y0=y0, Rs=None, alpha_Rs=None)
        lens.m200c = Param("m200c", m200c, valid=(0.0, None), units="Msun",
                           description="mass inside r200c")
        lens.concentration = Param("concentration", concentration, valid=(0.0, None),
                                   units="dimensionless", description="r200c / scale radius")
        for i, name_ in enumerate(("Rs", "alpha_Rs")):
            setattr(lens, name_, NFWAngle(i))
            param = getattr(lens, name_)
            param.link("m200c", lens.m200c)
            param.link("concentration", lens.concentration)
            param.link("geometry", geometry)
        return lens

    @forward
    def deflection(self, x, y, x0=None, y0=None, Rs=None, alpha_Rs=None):
        return F.nfw_deflection(x, y, *_b(x, x0, y0, Rs, alpha_Rs))

    @forward
    def convergence(self, x, y, x0=None, y0=None, Rs=None, alpha_Rs=None):
        return F.nfw_convergence(x, y, *_b(x, x0, y0, Rs, alpha_Rs))

    @forward
    def potential(self, x, y, x0=None, y0=None, Rs=None, alpha_Rs=None):
        return F.nfw_potential(x, y, *_b(x, x0, y0, Rs, alpha_Rs))


class EPL(_Elliptical, ThinLens):
    """Elliptical power law: ``kappa = (3 - gamma)/2 (theta_E / sqrt(q x'^2 + y'^2/q))^(gamma-1)``.

    ``gamma`` is the 3-D density slope (2 is isothermal: then this is the :class:`SIE`).
    Deflection by the hypergeometric series of Tessore & Metcalf (2015), summed to machine
    precision, as lenstronomy's ``EPL``.

    References:
        Tessore & Metcalf (2015), A&A 580, A79 (arXiv:1507.01819).

    Arguments:
        x0, y0: centre. q, phi: axis ratio and position angle. theta_E: Einstein radius
        (intermediate axis). gamma: slope, valid 1 < gamma < 3.

    Example:
        >>> import torch
        >>> lens = EPL(q=1.0, theta_E=1.0, gamma=2.3)
        >>> round(lens.deflection(torch.tensor(1.0), torch.tensor(0.0))[0].item(), 6)
        1.0
    """

    def __init__(self, name: str | None = None, x0=0.0, y0=0.0, q=0.8, phi=0.0, theta_E=1.0,
                 gamma=2.0):
        super().__init__(name, x0, y0, q, phi, theta_E)
        self.gamma = Param("gamma", gamma, valid=(1.0, 3.0), units="dimensionless",
                           description="3-D density slope (2: isothermal)")

    @forward
    def deflection(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None, gamma=None):
        return F.epl_deflection(x, y, *_b(x, x0, y0, q, phi, theta_E, gamma))

    @forward
    def convergence(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None, gamma=None):
        return F.epl_convergence(x, y, *_b(x, x0, y0, q, phi, theta_E, gamma))

    @forward
    def potential(self, x, y, x0=None, y0=None, q=None, phi=None, theta_E=None, gamma=None):
        return F.epl_potential(x, y, *_b(x, x0, y0, q, phi, theta_E, gamma))


class CompositeLens(ThinLens):
    """The sum of several mass models in one lens plane (deflections, convergences and
    potentials add). An empty composite is the identity lens (no deflection).

    Arguments:
        lenses: the components, e.g. ``[SIE(...), ExternalShear(...)]``.

    Example:
        >>> import torch
        >>> lens = CompositeLens([SIS(theta_E=1.0), MassSheet(kappa=0.2)])
        >>> round(lens.convergence(torch.tensor(1.0), torch.tensor(0.0)).item(), 6)
        0.7
    """

    def __init__(self, lenses: Sequence[ThinLens] = (), name: str | None = None):
        super().__init__(name)
        lenses = list(lenses)
        for i, lens in enumerate(lenses):
            if not isinstance(lens, ThinLens):
                raise TypeError(f"component {i} of CompositeLens is a {type(lens).__name__}, "
                                "not a ThinLens mass model")
        self.lenses = ModuleList(lenses, name="lenses")
        self.update_graph()  # caskade builds its bookkeeping on linking; an empty lens links none

    def _sum(self, method: str, x, y):
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for lens in self.lenses:
            total = total + getattr(lens, method)(x, y)
        return total

    @forward
    def deflection(self, x, y):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        ax = ay = torch.zeros((), dtype=x.dtype, device=x.device)
        for lens in self.lenses:
            dx, dy = lens.deflection(x, y)
            ax, ay = ax + dx, ay + dy
        return ax.expand(torch.broadcast_shapes(ax.shape, x.shape)), \
            ay.expand(torch.broadcast_shapes(ay.shape, y.shape))

    @forward
    def convergence(self, x, y):
        x = torch.as_tensor(x)
        k = self._sum("convergence", x, y)
        return k.expand(torch.broadcast_shapes(k.shape, x.shape))

    @forward
    def potential(self, x, y):
        x = torch.as_tensor(x)
        p = self._sum("potential", x, y)
        return p.expand(torch.broadcast_shapes(p.shape, x.shape))

    @forward
    def centres(self):
        """``[(x0, y0)]`` of the mass centres of all the lenses (arcsec), in order."""
        return [c for lens in self.lenses for c in lens.centres()]
