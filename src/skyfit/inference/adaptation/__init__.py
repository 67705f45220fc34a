"""Warm-up (adaptation) of the MCMC kernels' step size and metric, separate from the kernels."""

from .window_adaptation import *  # noqa: F403
from .window_adaptation import __all__  # noqa: F401
