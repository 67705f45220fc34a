"""MCMC kernels (BlackJAX style: ``init`` / ``step`` on NamedTuple states) and the one loop
that runs warm-up and sampling for any of them."""

from .hmc import HMC, HMCInfo, HMCState, HMCTuning, KernelParams
from .integrators import MAX_DELTA_ENERGY, ValueAndGrad, leapfrog
from .metrics import Metric
from .nuts import NUTS, NUTSInfo

__all__ = ["HMC", "HMCInfo", "HMCState", "HMCTuning", "KernelParams", "MAX_DELTA_ENERGY",
           "ValueAndGrad", "leapfrog", "Metric", "NUTS", "NUTSInfo"]
