"""Non-centred hierarchical populations: one parameter of many light curves from a population."""

from __future__ import annotations

import math
from collections.abc import Sequence

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param

__all__ = ["NonCentredPopulation"]


class NonCentredPopulation(ModuleDisplay, ck.Module):
    """``theta_i = mu + tau eta_i`` with ``eta_i ~ Normal(0, 1)``: a non-centred population.

    A centred hierarchy (``theta_i ~ Normal(mu, tau)`` sampled directly) has a funnel: as ``tau``
    shrinks the ``theta_i`` must crowd together, and HMC/NUTS diverges there (Betancourt &
    Girolami 2015; issue 18 measured 598 of 600 draws divergent over 20 light curves). Sampling
    the standardised offsets ``eta_i`` instead removes the funnel: ``mu``, ``tau`` and ``eta``
    are a priori independent. With ``log=True`` the members are ``exp(mu + tau eta_i)``: a
    log-normal population, for positive parameters such as time scales.

    The module adds ``log p(eta) = sum log Normal(eta_i; 0, 1)`` through ``log_prior()``, which
    :class:`~skyfit.Posterior` picks up; give ``mu`` and ``tau`` priors with ``priors=``.
    :meth:`link` makes existing scalar Params (e.g. each light curve's ``tau_rise``) members.

    References:
        Betancourt & Girolami (2015), "Hamiltonian Monte Carlo for hierarchical models",
        arXiv:1312.0906; Papaspiliopoulos, Roberts & Skold (2007), Stat. Sci. 22, 59.

    Arguments:
        n: number of members. mu, tau: population mean and scale (of ``ln theta`` if
        ``log``); eta: standardised offsets, shape ``(n,)`` (default 0).

    Example:
        >>> from skyfit import Bazin
        >>> curves = [Bazin(f"sn{i}") for i in range(3)]
        >>> pop = NonCentredPopulation("rise", 3, mu=1.0, tau=0.5, eta=[0.0, 1.0, -2.0], log=True)
        >>> pop.link([lc.tau_rise for lc in curves])
        >>> [round(lc.tau_rise.value.item(), 4) for lc in curves]  # exp(1 + 0.5 eta)
        [2.7183, 4.4817, 1.0]
    """

    def __init__(self, name: str | None, n: int, mu=0.0, tau=1.0, eta=None, log: bool = False):
        super().__init__(name)
        self.n, self.log = int(n), bool(log)
        # mu and tau carry the units of the linked parameter (or of its log with log=True)
        self.mu = Param("mu", mu, shape=(), units="as the linked parameter",
                        description="population mean")
        self.tau = Param("tau", tau, shape=(), valid=(0.0, None),
                         units="as the linked parameter", description="population scale")
        eta = torch.zeros(self.n, dtype=torch.float64) if eta is None else eta
        self.eta = Param("eta", eta, shape=(self.n,), units="dimensionless",
                         description="standardised offsets")

    @forward
    def members(self, mu=None, tau=None, eta=None) -> torch.Tensor:
        """``mu + tau eta`` (or its exponential), shape ``(..., n)``."""
        theta = mu[..., None] + tau[..., None] * eta
        return theta.exp() if self.log else theta

    @forward
    def member(self, i: int, mu=None, tau=None, eta=None) -> torch.Tensor:
        """Member ``i``: ``mu + tau eta_i`` (or its exponential)."""
        theta = mu + tau * eta[..., i]
        return theta.exp() if self.log else theta

    @forward
    def log_prior(self, eta=None) -> torch.Tensor:
        """``sum_i log Normal(eta_i; 0, 1)``."""
        return -0.5 * (eta**2).sum(-1) - 0.5 * self.n * math.log(2 * math.pi)

    def link(self, params: Sequence[ck.Param]) -> None:
        """Make each Param of ``params`` (scalars, ``n`` of them) a member of the population."""
        if len(params) != self.n:
            raise ValueError(f"{self.name} has {self.n} members, got {len(params)} Params")
        for i, param in enumerate(params):
            param.value = lambda p, i=i: p.population.member(i)
            param.link("population", self)
