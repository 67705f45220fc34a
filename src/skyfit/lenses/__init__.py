"""Strong gravitational lensing: mass models, distances, image finding and time delays.

Conventions (stated here once for all of skyfit's lensing):

- **Angles** in arcsec: positions, Einstein radii, deflections ``alpha``. The lensing potential
  ``psi`` and the Fermat potential are in arcsec^2; the convergence ``kappa`` is dimensionless.
  ``x`` grows to the right, ``y`` up (the :class:`~skyfit.PixelGrid` convention).
- **Ellipses**: ``q`` = minor / major axis ratio in (0, 1]; ``phi`` = position angle of the
  major axis, radians counter-clockwise from +x (as the light profiles). To compare with
  lenstronomy: ``e = (1 - q) / (1 + q)``, ``e1 = e cos 2phi``, ``e2 = e sin 2phi``.
- **Einstein radius** ``theta_E``: lenstronomy's convention, the radius along the intermediate
  axis ``sqrt(q x'^2 + y'^2 / q) = theta_E`` (product average of the semi-axes), so the mean
  convergence inside the critical curve of an SIE is 1 whatever ``q``.
- **Lens equation**: ``beta = theta - alpha(theta)`` (:meth:`ThinLens.raytrace`); the Jacobian
  ``A = d beta / d theta`` comes from autograd of the deflection; magnification ``1 / det A``
  is signed (negative for saddle images).
- **Redshifts**: angular mass models need none (their deflection is already scaled to the
  system's source plane). The lens redshift ``z_l``, the source redshift ``z_s`` and the
  cosmology live in one :class:`LensGeometry`, shared by whatever needs them (time delays,
  physical parametrisations such as :meth:`SIS.from_velocity_dispersion`).
- **Time delays** in days, ``dt = D_dt / c * d(Fermat potential)``, relative to the image that
  arrives first.
"""

from .astropy_cosmology import AstropyCosmology
from .base import ThinLens
from .caustics import critical_curves
from .cosmology import FlatLambdaCDM
from .geometry import LensGeometry
from .models import EPL, NFW, SIE, SIS, CompositeLens, ExternalShear, MassSheet, PointMass
from .point_source import LensedPointSource, LensedSupernova
from .solver import ImageCountWarning, LensImages, find_images

__all__ = [
    "ThinLens",
    "SIS",
    "SIE",
    "PointMass",
    "ExternalShear",
    "MassSheet",
    "NFW",
    "EPL",
    "CompositeLens",
    "FlatLambdaCDM",
    "AstropyCosmology",
    "LensGeometry",
    "find_images",
    "LensImages",
    "ImageCountWarning",
    "critical_curves",
    "LensedPointSource",
    "LensedSupernova",
]
