"""Named pointer functions of the lens constructors that derive a Param from physical ones.

Named callables rather than lambdas, so that models holding them can be saved
(:func:`skyfit.save_model` stores ``spec()``) and pickled.
"""

from __future__ import annotations

__all__ = ["SISEinsteinRadius", "PointMassEinsteinRadius", "NFWAngle"]


class SISEinsteinRadius:
    """``theta_E`` (arcsec) of an SIS from its ``sigma_v`` and ``geometry`` links."""

    def __call__(self, p):
        return p.geometry.sis_einstein_radius(p.sigma_v.value)

    def spec(self) -> dict:
        """The arguments that rebuild this function (none)."""
        return {}


class PointMassEinsteinRadius:
    """``theta_E`` (arcsec) of a point mass from its ``mass`` and ``geometry`` links."""

    def __call__(self, p):
        return p.geometry.point_mass_einstein_radius(p.mass.value)

    def spec(self) -> dict:
        """The arguments that rebuild this function (none)."""
        return {}


class NFWAngle:
    """``Rs`` (``index=0``) or ``alpha_Rs`` (``index=1``), arcsec, of an NFW halo from its
    ``m200c``, ``concentration`` and ``geometry`` links."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, p):
        return p.geometry.nfw_angles(p.m200c.value, p.concentration.value)[self.index]

    def spec(self) -> dict:
        """The arguments that rebuild this function: ``NFWAngle(**spec())``."""
        return {"index": self.index}
