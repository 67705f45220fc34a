"""Amortised inference: a conditional flow ``q(theta | x)`` trained on simulations of any
skyfit Posterior (neural posterior estimation), its calibration and importance refinement.

Needs zuko (``pip install 'skyfit[ml]'``). Layering: this package sits above
:mod:`skyfit.posterior` and :mod:`skyfit.inference`; nothing below imports it.
"""

from . import embeddings, flows
from .calibration import *  # noqa: F403
from .embeddings import *  # noqa: F403
from .flows import *  # noqa: F403
from .npe import *  # noqa: F403
from .simulate import *  # noqa: F403
from .training import *  # noqa: F403

__all__ = [*embeddings.__all__, *flows.__all__, "AmortizedPosterior", "ImproperPriorError",
           "TrainingSet", "sample_prior", "observation_of", "simulator_of", "simulate", "train",
           "fit", "calibration", "importance_weights", "refine", "PARETO_K_MAX"]
