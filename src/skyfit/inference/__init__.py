"""Inference on any LogDensity: optimisation, Laplace, MCMC, variational fits, results.

Nothing here knows about astronomy: it sees a log-density of a flat vector with names and bounds.
"""

from .density import FunctionDensity, LogDensity
from .results import Samples
from .transforms import UnconstrainedDensity

__all__ = ["LogDensity", "FunctionDensity", "UnconstrainedDensity", "Samples"]
