"""skyfit's unit strings as astropy units, and Quantities in and out of parameters.

Parameters declare their units as strings (``Param(..., units="arcsec")``); :data:`UNITS` maps
each string skyfit uses to an astropy unit, in one place. ``"flux"`` is the data's own flux unit
(whatever the image or photometry is in), an astropy unit of its own that converts to nothing
else. astropy is an optional dependency (``pip install skyfit[astropy]``), imported only here
and only when a Quantity is asked for or given.
"""

from __future__ import annotations

import functools

import torch

from .errors import UnitsError

__all__ = ["astropy_unit", "is_quantity", "to_quantity", "from_quantity"]

UNIT_STRINGS = {  # skyfit's string -> astropy's spelling of it
    "": "", "dimensionless": "", "arcsec": "arcsec", "rad": "rad", "day": "day", "s": "s",
    "Msun": "solMass",
    "km/s": "km/s", "km/s/Mpc": "km/(s Mpc)", "e-": "electron",
    "e-/s/pixel": "electron/(s pix)", "flux": "flux", "flux/arcsec^2": "flux/arcsec2",
    "flux/day": "flux/day", "e-/s": "electron/s", "e-/s per pixel": "electron/(s pix)",
    "K": "K", "mag": "mag", "dex": "dex", "log10(cm s^-2)": "dex(cm/s2)",
    "10 M_sun": "10 solMass", "500 R_sun": "500 solRad", "1e51 erg": "1e51 erg",
    # caustics' spellings (its modules are fitted by skyfit as they are)
    "unitless": "", "radians": "rad", "arcsec/pixel": "arcsec/pix", "Msol": "solMass",
    "Msun/Mpc^3": "solMass/Mpc3",
}


@functools.cache
def _flux_unit():
    import astropy.units as u

    return u.def_unit("flux", doc="the data's own flux unit (image or photometry units)")


@functools.cache
def astropy_unit(units: str | None):
    """The astropy unit of a skyfit unit string (None and ``""``: dimensionless).

    Example:
        >>> astropy_unit("km/s/Mpc")
        Unit("km / (Mpc s)")
    """
    import astropy.units as u

    spelling = UNIT_STRINGS.get(units or "", units)
    try:
        if "flux" in spelling:
            return _parse_with_flux(spelling)
        return u.Unit(spelling, parse_strict="raise")
    except ValueError:
        raise UnitsError(f"unit string {units!r} has no astropy equivalent") from None


def _parse_with_flux(spelling: str):
    import astropy.units as u

    with u.add_enabled_units([_flux_unit()]):
        return u.Unit(spelling)


def is_quantity(value) -> bool:
    """True for an astropy Quantity (checked without importing astropy)."""
    return type(value).__module__.startswith("astropy.units") and hasattr(value, "to_value")


def to_quantity(value, units: str | None):
    """``value`` (a number, array or tensor) as a Quantity in the skyfit ``units``."""
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    return value * astropy_unit(units)


def from_quantity(value, units: str | None, name: str = "parameter") -> torch.Tensor:
    """The float64 tensor of a Quantity converted to the skyfit ``units``.

    Raises:
        UnitsError: the Quantity's units do not convert to ``units`` (``"rad"`` takes degrees;
            dimensionless parameters take dimensionless Quantities only).
    """
    import astropy.units as u

    target = astropy_unit(units)
    try:
        number = value.to_value(target, equivalencies=u.dimensionless_angles()
                                if target == u.rad else [])
    except u.UnitConversionError:
        raise UnitsError(f"{name} is in {units or 'no units'!r} ({target}); a Quantity in "
                         f"{value.unit} cannot be converted to it") from None
    return torch.as_tensor(number, dtype=torch.float64)
