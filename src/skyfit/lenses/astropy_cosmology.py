"""Any astropy cosmology as the distance provider of a :class:`~skyfit.LensGeometry`."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay

__all__ = ["AstropyCosmology", "is_astropy_cosmology"]


def is_astropy_cosmology(obj) -> bool:
    """True for an ``astropy.cosmology.Cosmology`` (checked without importing astropy)."""
    return any(c.__module__.startswith("astropy.cosmology") and c.__name__ == "Cosmology"
               for c in type(obj).__mro__)


class AstropyCosmology(ModuleDisplay, ck.Module):
    """Distances (Mpc) and critical density (solar masses per Mpc^3) from an astropy cosmology.

    The interface of :class:`~skyfit.FlatLambdaCDM` (``angular_diameter_distance``,
    ``angular_diameter_distance_z1z2``, ``critical_density``) for any astropy cosmology
    (curvature, w0waCDM, massive neutrinos, ...). Evaluated by astropy in float64 numpy: no
    gradient flows to the redshifts, and the cosmological parameters are not Params (use
    :class:`~skyfit.FlatLambdaCDM` to fit ``H0`` or ``Om0``).

    Arguments:
        cosmology: an ``astropy.cosmology.Cosmology`` instance (default astropy's default
            cosmology, ``astropy.cosmology.default_cosmology.get()``).

    Example:
        >>> from astropy.cosmology import Planck18
        >>> from skyfit import LensGeometry
        >>> geometry = LensGeometry(z_l=0.5, z_s=2.0, cosmology=Planck18)
        >>> round(geometry.distances()[0].item(), 1)  # D_l, Mpc
        1297.6
    """

    def __init__(self, cosmology=None, name: str | None = None):
        super().__init__(name)
        if cosmology is None:
            from astropy.cosmology import default_cosmology

            cosmology = default_cosmology.get()
        if not is_astropy_cosmology(cosmology):
            raise TypeError(f"expected an astropy cosmology, got {type(cosmology).__name__}")
        self.__dict__["astropy"] = cosmology  # not a graph node

    def _tensor(self, value, like) -> torch.Tensor:
        like = like if torch.is_tensor(like) else torch.as_tensor(like, dtype=torch.float64)
        dtype = like.dtype if like.is_floating_point() else torch.float64
        return torch.as_tensor(value, dtype=dtype, device=like.device)

    @staticmethod
    def _numpy(z):
        return z.detach().cpu().numpy() if torch.is_tensor(z) else z

    def angular_diameter_distance(self, z) -> torch.Tensor:
        """Angular diameter distance to ``z``, Mpc."""
        d = self.astropy.angular_diameter_distance(self._numpy(z)).to_value("Mpc")
        return self._tensor(d, z)

    def angular_diameter_distance_z1z2(self, z1, z2) -> torch.Tensor:
        """Angular diameter distance from ``z1`` to ``z2 > z1``, Mpc."""
        z1, z2_ = self._numpy(z1), self._numpy(z2)
        try:  # astropy >= 7 takes (z1, z2); the z1z2 method is deprecated there
            d = self.astropy.angular_diameter_distance(z1, z2_)
        except TypeError:
            d = self.astropy.angular_diameter_distance_z1z2(z1, z2_)
        return self._tensor(d.to_value("Mpc"), z2)

    def critical_density(self, z) -> torch.Tensor:
        """Critical density at ``z``, solar masses per Mpc^3."""
        rho = self.astropy.critical_density(self._numpy(z)).to_value("solMass / Mpc3")
        return self._tensor(rho, z)
