"""Example problems and the demo, built on skyfit's public API; nothing in the library imports them.

- :mod:`skyfit.examples.supernova`: a supernova on a host galaxy over five seeded epochs.
- :mod:`skyfit.examples.lensed_galaxy`: an SIE lens of a held-out synthetic galaxy, fitted with a
  :class:`~skyfit.VAESource`.
- :mod:`skyfit.examples.demo`: the main job (``python -m skyfit demo``).
"""

from .lensed_galaxy import LensProblem, lensed_galaxy_problem
from .supernova import SupernovaData, simulate_supernova, supernova_light_curve_model

__all__ = ["LensProblem", "lensed_galaxy_problem", "SupernovaData", "simulate_supernova",
           "supernova_light_curve_model"]
