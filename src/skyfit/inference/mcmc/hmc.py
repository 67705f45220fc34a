"""Batched Hamiltonian Monte Carlo with a trajectory shared by every chain (jittered length).

A kernel in BlackJAX's style: ``init(position) -> HMCState`` and ``step(generator, state,
params) -> (HMCState, HMCInfo)``. All chains take the same number of leapfrog steps, so none waits
for another (no lock-step waste, unlike NUTS). The number of steps of a transition is drawn
uniformly from ``1 .. n_max`` (``jitter``), which breaks the periodic orbits that make a fixed
trajectory resonate. ``n_max`` is ``n_leapfrog`` if given, else the kernel tunes it in warm-up
(:meth:`HMC.tuning_end_window`): the trajectory time is set to 4 times the largest standard
deviation of the posterior in the metric's units (the optimum of ``U(0, T)`` jitter for a
Gaussian), divided by the step size; before the first window, 10 steps.

References:
    Neal (2011), *MCMC using Hamiltonian dynamics*, https://arxiv.org/abs/1206.1901
    Betancourt (2017), *A Conceptual Introduction to Hamiltonian Monte Carlo*,
    https://arxiv.org/abs/1701.02434
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..adaptation.welford import WelfordCovariance, WelfordState
from .integrators import MAX_DELTA_ENERGY, ValueAndGrad, leapfrog
from .metrics import Metric

__all__ = ["HMCState", "HMCInfo", "HMCTuning", "KernelParams", "HMC", "Metric", "ValueAndGrad",
           "leapfrog"]


class HMCState(NamedTuple):
    """Where the chains are: ``position (chain, dim)``, ``log_density (chain,)``, ``grad``."""

    position: torch.Tensor
    log_density: torch.Tensor
    grad: torch.Tensor


class HMCInfo(NamedTuple):
    """Per-chain facts of one HMC transition, each ``(chain,)``, and the batched steps taken."""

    accept_prob: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    n_steps: torch.Tensor
    lockstep_steps: int


class KernelParams(NamedTuple):
    """What a kernel's step needs from the warm-up: ``step_size (chain,)``, the metric and the
    kernel's own tuning state (``None`` for NUTS)."""

    step_size: torch.Tensor
    metric: Metric
    tuning: object = None


class HMCTuning(NamedTuple):
    """HMC's warm-up state: a pooled dense covariance estimate of the current window (``None``
    when the length is given or ``dim > 1000``) and the trajectory length per chain (NaN
    before the first window)."""

    welford: WelfordState | None
    trajectory_length: torch.Tensor


class HMC:
    """Batched HMC kernel; a transition is a Metropolis step on the energy error, and NaN or an
    energy error above ``max_delta_energy`` is a divergence and is rejected.

    Arguments:
        value_and_grad: batched ``z -> (log p, grad)`` (see :class:`ValueAndGrad`).
        n_leapfrog: maximum (with ``jitter``) or exact number of steps; ``None``: tuned.
        jitter: draw the number of steps per transition uniformly in ``1 .. n_max``.
        max_leapfrog: cap on the tuned number of steps.
        max_delta_energy: energy error counted as a divergence.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> vg = ValueAndGrad(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2))
        >>> kernel = HMC(vg, n_leapfrog=4, jitter=False)
        >>> state = kernel.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> metric = Metric(torch.ones(3, 2, dtype=torch.float64))
        >>> g = torch.Generator().manual_seed(0)
        >>> eps = torch.full((3,), 0.5, dtype=torch.float64)
        >>> state, info = kernel.step(g, state, KernelParams(eps, metric))
        >>> state.position.shape, info.n_steps.tolist()
        (torch.Size([3, 2]), [4, 4, 4])
    """

    name = "hmc"
    stat_names = ("diverging", "energy", "step_size", "accept_prob", "n_steps")

    def __init__(self, value_and_grad, n_leapfrog: int | None = None, jitter: bool = True,
                 max_leapfrog: int = 1023, max_delta_energy: float = MAX_DELTA_ENERGY):
        if n_leapfrog is not None and int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be at least 1, got {n_leapfrog}")
        if int(max_leapfrog) < 1:
            raise ValueError(f"max_leapfrog must be at least 1, got {max_leapfrog}")
        self.value_and_grad = value_and_grad
        self.n_leapfrog = None if n_leapfrog is None else int(n_leapfrog)
        self.jitter, self.max_leapfrog = bool(jitter), int(max_leapfrog)
        self.max_delta_energy = max_delta_energy

    def config(self) -> dict:
        """The settings a resumed run must share."""
        return dict(n_leapfrog=self.n_leapfrog, jitter=self.jitter,
                    max_leapfrog=self.max_leapfrog)

    def init(self, position: torch.Tensor) -> HMCState:
        logp, grad = self.value_and_grad(position)
        return HMCState(position, logp, grad)

    def _steps(self, generator, params: KernelParams, kw) -> int:
        n_max = self.n_leapfrog
        if n_max is None:
            length = (params.tuning.trajectory_length if params.tuning is not None
                      else torch.full_like(params.step_size, math.nan))
            if torch.isnan(length).any():
                n_max = 10
            else:
                ratio = torch.median(length / params.step_size).item()
                n_max = int(min(max(math.ceil(ratio), 1), self.max_leapfrog))
        if self.jitter:
            u = torch.rand(1, generator=generator, **kw).item()
            return max(1, math.ceil(u * n_max))
        return n_max

    def step(self, generator: torch.Generator, state: HMCState,
             params: KernelParams) -> tuple[HMCState, HMCInfo]:
        """One transition of every chain with the same number of leapfrog steps."""
        z0, logp0, g0 = state
        n_leapfrog = self._steps(generator, params, dict(dtype=z0.dtype, device=z0.device))
        metric = params.metric
        p0 = metric.sample_momentum(generator)
        h0 = -logp0 + metric.kinetic(p0)
        z, p, g, logp = leapfrog(self.value_and_grad, metric, z0, p0, g0, params.step_size,
                                 n_leapfrog)
        h = -logp + metric.kinetic(p)
        delta = torch.nan_to_num(h - h0, nan=torch.inf)
        diverging = delta > self.max_delta_energy
        accept_prob = torch.exp(torch.clamp(-delta, max=0.0))
        u = torch.rand(z0.shape[0], generator=generator, dtype=z0.dtype, device=z0.device)
        accept = (u < accept_prob) & ~diverging
        a = accept[:, None]
        new = HMCState(torch.where(a, z, z0), torch.where(accept, logp, logp0),
                       torch.where(a, g, g0))
        energy = torch.where(accept, h, h0)
        n = torch.full_like(accept, n_leapfrog, dtype=torch.long)
        return new, HMCInfo(accept_prob, diverging, energy, n, n_leapfrog)

    # -- the kernel's own warm-up: the trajectory length ----------------------------------------
    def _welford(self, n_chains: int, dim: int, **kw) -> WelfordCovariance:
        return WelfordCovariance(n_chains, dim, True, True, **kw)

    def tuning_init(self, n_chains: int, dim: int, **kw) -> HMCTuning:
        auto = self.n_leapfrog is None and dim <= 1000
        self._estimator = self._welford(n_chains, dim, **kw)
        return HMCTuning(self._estimator.init() if auto else None,
                         torch.full((n_chains,), math.nan, **kw))

    def tuning_update(self, tuning: HMCTuning, position: torch.Tensor) -> HMCTuning:
        if tuning.welford is None:
            return tuning
        return tuning._replace(welford=self._estimator.update(tuning.welford, position))

    def tuning_end_window(self, tuning: HMCTuning, metric: Metric) -> HMCTuning:
        """4 x the largest posterior standard deviation in the metric's units, per chain."""
        if self.n_leapfrog is not None:
            return tuning
        n_chains, dim = metric.inv_mass.shape[:2]
        if tuning.welford is None or tuning.welford.count < dim + 2:
            lam = torch.ones(n_chains, dtype=metric.inv_mass.dtype, device=metric.inv_mass.device)
            welford = tuning.welford
        else:
            cov = self._estimator.covariance(tuning.welford)  # (C, D, D), the same for every chain
            if metric.dense:
                white = torch.linalg.solve_triangular(metric.chol, cov, upper=False)
                white = torch.linalg.solve_triangular(metric.chol, white.transpose(-1, -2),
                                                      upper=False)
            else:
                s = metric.inv_mass.rsqrt()
                white = cov * s[:, :, None] * s[:, None, :]
            lam = torch.linalg.eigvalsh(0.5 * (white + white.transpose(-1, -2)))[:, -1]
            welford = self._estimator.init()
        return HMCTuning(welford, 4.0 * lam.clamp(min=1e-12).sqrt())

    def final_info(self, tuning: HMCTuning) -> dict:
        return dict(trajectory_length=tuning.trajectory_length.cpu().numpy())
