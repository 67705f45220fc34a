"""Optimisers for many independent problems at once (pure torch, any device).

:func:`minimize_batched` runs a batched L-BFGS (:mod:`.lbfgs`, an ``init`` / ``step`` kernel with
a lockstep strong-Wolfe line search) on B problems, one per row; :func:`minimize_newton` runs
damped Newton steps with exact per-row Hessians (:mod:`.newton`, for small dimensions);
:func:`multistart` runs the L-BFGS from many starts on one
:class:`~skyfit.inference.LogDensity` and reports the distinct optima found.
"""

from .driver import BatchedResult, curvature_scales, minimize_batched
from .lbfgs import LBFGSInfo, LBFGSOptions, LBFGSState, Status
from .line_search import LineSearchResult, strong_wolfe
from .multiple_starts import MultistartResult, Optimum, group_optima, multistart
from .newton import NewtonOptions, NewtonState, minimize_newton

__all__ = [
    "multistart", "MultistartResult", "Optimum", "group_optima",
    "minimize_batched", "BatchedResult", "curvature_scales",
    "LBFGSOptions", "LBFGSState", "LBFGSInfo", "Status",
    "strong_wolfe", "LineSearchResult",
    "minimize_newton", "NewtonOptions", "NewtonState",
]
