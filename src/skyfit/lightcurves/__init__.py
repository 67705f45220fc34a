"""Light curves: flux as a function of time, per band, and sources whose flux follows one."""

from .base import LightCurve
from .bazin import Bazin
from .functions import bazin_light_curve, gaussian_light_curve, villar_light_curve
from .gaussian import GaussianLightCurve
from .link import link_flux_to_light_curve
from .population import NonCentredPopulation
from .starts import (
    default_priors,
    from_photometry,
    light_curve_scales,
    villar_half_peak_plateau,
)
from .villar import Villar

__all__ = [
    "LightCurve",
    "GaussianLightCurve",
    "Bazin",
    "Villar",
    "gaussian_light_curve",
    "bazin_light_curve",
    "villar_light_curve",
    "link_flux_to_light_curve",
    "from_photometry",
    "default_priors",
    "light_curve_scales",
    "villar_half_peak_plateau",
    "NonCentredPopulation",
]
