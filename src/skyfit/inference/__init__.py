"""Inference on any LogDensity: optimisation, Laplace, MCMC, variational fits, results.

Nothing here knows about astronomy: it sees a log-density of a flat vector with names and bounds.
"""

from . import checkpoint, diagnostics
from .approximations import GaussianApproximation
from .batched import BatchedDensity
from .checkpoint import *  # noqa: F403
from .compiled import CompiledDensity, compile
from .density import FunctionDensity, LogDensity
from .diagnostics import *  # noqa: F403
from .emcee import sample_emcee
from .initialization import (
    as_start,
    init_to_feasible,
    init_to_initial,
    init_to_sample,
    init_to_uniform,
    init_to_value,
    resolve_start,
)
from .laplace import LaplaceResult, laplace, log_density_hessian
from .many import fit_map_many, laplace_many
from .many_results import ManyResult
from .nuts_many import sample_nuts_many
from .nuts_many_rerun import resample_unconverged
from .optimize import MAPResult, fit_map
from .optimizers import BatchedResult, MultistartResult, minimize_batched, multistart
from .results import Samples
from .sampling import sample_hmc, sample_nuts
from .transforms import UnconstrainedDensity, UnwrappedAngles
from .vi import VIResult, fit_vi

__all__ = [
    "BatchedDensity", "ManyResult", "fit_map_many", "laplace_many", "sample_nuts_many",
    "resample_unconverged",
    "sample_emcee",
    "fit_vi",
    "VIResult",
    "sample_nuts",
    "sample_hmc",
    "LogDensity",
    "FunctionDensity",
    "CompiledDensity",
    "compile",
    "UnconstrainedDensity",
    "UnwrappedAngles",
    "Samples",
    "fit_map",
    "MAPResult",
    "minimize_batched",
    "BatchedResult",
    "multistart",
    "MultistartResult",
    "laplace",
    "LaplaceResult",
    "log_density_hessian",
    "GaussianApproximation",
    "as_start",
    "init_to_feasible",
    "init_to_initial",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "resolve_start",
    *diagnostics.__all__,
    *checkpoint.__all__,
]
