"""Warm-up of HMC/NUTS as in Stan: dual-averaging step size and a windowed mass-matrix estimate.

The warm-up has a fast initial buffer (step size only, 75 iterations), slow windows of doubling
length (25, 50, 100, ...) at the end of each of which the inverse mass matrix is set to the
(regularised) covariance of that window's draws, and a fast terminal buffer (50 iterations).
Every state here is a NamedTuple of tensors and numbers, batched over chains, and every update
returns a new state (nothing is changed in place): a checkpoint is the states' fields, and an
iteration cut off half-way is undone by keeping the previous state.

References:
    Hoffman & Gelman (2014), *The No-U-Turn Sampler*, Sec. 3.2, https://arxiv.org/abs/1111.4246
    Nesterov (2009), *Primal-dual subgradient methods for convex problems*,
    https://doi.org/10.1007/s10107-007-0149-x
    Stan Reference Manual, *HMC algorithm parameters / Automatic parameter tuning*.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from ..mcmc.integrators import leapfrog
from ..mcmc.metrics import Metric
from .welford import WelfordCovariance, WelfordState

__all__ = ["DualAveraging", "DualAveragingState", "WelfordCovariance", "WelfordState",
           "warmup_windows", "find_reasonable_step_size", "WindowAdaptation",
           "AdaptationState"]


def warmup_windows(n_warmup: int, init_buffer: int = 75, term_buffer: int = 50,
                   base_window: int = 25) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[start, end)`` of a warm-up of ``n_warmup`` iterations.

    If the three default phases do not fit, Stan's fallback is used (15% / 75% / 10%); below 20
    iterations there is no mass-matrix window (the step size is still adapted).

    Example:
        >>> warmup_windows(1000)
        [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    """
    if n_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > n_warmup:
        init_buffer = int(0.15 * n_warmup)
        term_buffer = int(0.1 * n_warmup)
        base_window = n_warmup - (init_buffer + term_buffer)
    end_slow = n_warmup - term_buffer
    windows, start, size = [], init_buffer, base_window
    while start < end_slow:
        end = min(start + size, end_slow)
        # the next window would not fit: this one stretches to the end of the slow phase
        if windows and end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class DualAveragingState(NamedTuple):
    """Per-chain dual-averaging state; ``counter`` counts updates since the last restart."""

    step_size: torch.Tensor
    mu: torch.Tensor
    counter: int
    s_bar: torch.Tensor
    x_bar: torch.Tensor


class DualAveraging:
    """Per-chain step size by Nesterov dual averaging towards a target acceptance statistic.

    Arguments:
        target: target mean acceptance statistic (Stan ``delta``: 0.8).
        gamma, t0, kappa: Stan's defaults 0.05, 10, 0.75.

    Example:
        >>> import torch
        >>> da = DualAveraging()
        >>> state = da.init(torch.ones(2, dtype=torch.float64))
        >>> for _ in range(2000):  # acceptance exp(-eps): 0.8 at eps = 0.223
        ...     state = da.update(state, torch.exp(-state.step_size))
        >>> [round(x, 2) for x in da.final_step_size(state).tolist()]
        [0.23, 0.23]
    """

    def __init__(self, target: float = 0.8, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75):
        self.target, self.gamma, self.t0, self.kappa = float(target), gamma, t0, kappa
        self._table = None  # sqrt(k) and k ** -kappa for per-chain counts k (see _powers)

    @staticmethod
    def init(step_size: torch.Tensor) -> DualAveragingState:
        """Start (or restart) at ``step_size (chain,)``, with ``mu = log(10 * step_size)``."""
        return DualAveragingState(step_size.clone(), torch.log(10 * step_size), 0,
                                  torch.zeros_like(step_size), torch.zeros_like(step_size))

    def update(self, state: DualAveragingState, accept_prob: torch.Tensor) -> DualAveragingState:
        """Learn from one transition's acceptance statistic; the new state holds the next
        step sizes. ``counter`` may be a tensor of per-chain counts (chains out of step)."""
        n = state.counter + 1
        stat = torch.nan_to_num(accept_prob, nan=0.0).clamp(max=1.0)
        eta = 1.0 / (n + self.t0)
        s_bar = (1 - eta) * state.s_bar + eta * (self.target - stat)
        root_n, x_eta = self._powers(n)
        x = state.mu - s_bar * root_n / self.gamma
        x_bar = (1 - x_eta) * state.x_bar + x_eta * x
        return DualAveragingState(torch.exp(x), state.mu, n, s_bar, x_bar)

    def _powers(self, n):
        """``sqrt(n)`` and ``n ** -kappa`` by Python's ``math`` for an int count or, per chain,
        for a tensor of counts (looked up): chains out of step then take exactly the steps of
        :func:`~skyfit.sample_nuts` (a vectorised ``pow`` differs from ``math.pow`` in the
        last bit, and a trajectory amplifies that)."""
        if not isinstance(n, torch.Tensor):
            return math.sqrt(n), n ** (-self.kappa)
        counts = n.long()
        need = int(counts.max()) + 1 if counts.numel() else 1
        if self._table is None or self._table.shape[1] < need \
                or self._table.device != n.device:
            size = max(need, 1024)
            self._table = torch.tensor([[math.sqrt(k) for k in range(size)],
                                        [k ** (-self.kappa) if k else 0.0 for k in range(size)]],
                                       dtype=torch.float64, device=n.device)
        table = self._table.to(n.dtype)
        return table[0][counts], table[1][counts]

    @staticmethod
    def final_step_size(state: DualAveragingState) -> torch.Tensor:
        """The averaged step size used after warm-up."""
        return torch.exp(state.x_bar) if state.counter > 0 else state.step_size


def find_reasonable_step_size(value_and_grad, metric: Metric, position, log_density, grad,
                              step_size: torch.Tensor, generator: torch.Generator,
                              max_iter: int = 100) -> torch.Tensor:
    """Stan's heuristic, per chain: double or halve the step until one leapfrog step's
    acceptance ``exp(-dH)`` crosses 0.8. One batched evaluation per round."""
    eps = step_size.clone()
    log08 = math.log(0.8)

    def delta_h():
        p = metric.sample_momentum(generator)
        h0 = -log_density + metric.kinetic(p)
        _, p1, _, logp1 = leapfrog(value_and_grad, metric, position, p, grad, eps)
        h1 = torch.nan_to_num(-logp1 + metric.kinetic(p1), nan=torch.inf)
        return h0 - h1

    direction = torch.where(delta_h() > log08, 1.0, -1.0).to(eps.dtype)
    active = torch.ones_like(eps, dtype=torch.bool)
    for _ in range(max_iter):
        dh = delta_h()
        stop = torch.where(direction > 0, ~(dh > log08), ~(dh < log08))
        active = active & ~stop
        if not bool(active.any()):
            break
        eps = torch.where(active, eps * torch.pow(2.0, direction), eps)
        eps = eps.clamp(1e-10, 1e7)
    return eps


class AdaptationState(NamedTuple):
    """The warm-up between two iterations: the current ``step_size (chain,)`` and
    ``inv_mass``, the prior metric (a start's covariance, or ``None``), the dual-averaging and
    window-estimate states, and the kernel's own warm-up state (``tuning``; HMC: its
    trajectory length; NUTS: ``None``)."""

    step_size: torch.Tensor
    inv_mass: torch.Tensor
    prior_inv_mass: torch.Tensor | None
    dual_averaging: DualAveragingState
    welford: WelfordState
    tuning: Any


class WindowAdaptation:
    """Stan's windowed warm-up around any kernel: ``init(...) -> AdaptationState`` and
    ``step(iteration, state, kernel_state, accept_prob, generator) -> AdaptationState``.

    After each slow window the inverse mass matrix becomes the window's regularised (co)variance
    (with a start's covariance as a prior of weight ``10 * dim`` draws, so a short window refines
    a good metric instead of replacing it), the kernel updates its own tuning
    (``kernel.tuning_end_window``), and the step size is searched afresh and dual averaging
    restarts from it. At the last warm-up iteration the step size becomes the averaged one.

    Arguments:
        kernel: the kernel (its ``tuning_*`` hooks are called in the slow windows).
        value_and_grad: the batched log-density of the step-size search.
        n_chains, dim, n_warmup: sizes. target_accept: Stan's ``delta``.
        dense, pooled: the mass-matrix estimate (see :class:`WelfordCovariance`).
    """

    def __init__(self, kernel, value_and_grad, n_chains: int, dim: int, n_warmup: int,
                 target_accept: float, dense: bool, pooled: bool, dtype=torch.float64,
                 device=None):
        self.kernel, self.value_and_grad = kernel, value_and_grad
        self.n_chains, self.dim, self.n_warmup = n_chains, dim, n_warmup
        self.kw = dict(dtype=dtype, device=device)
        self.windows = warmup_windows(n_warmup)
        self.dual_averaging = DualAveraging(target_accept)
        self.welford = WelfordCovariance(n_chains, dim, dense, pooled, dtype=dtype, device=device)
        self.prior_count = 10.0 * dim
        self._metric = (None, None)

    def metric(self, inv_mass: torch.Tensor) -> Metric:
        """The :class:`Metric` of ``inv_mass``, factorised once per inverse mass matrix."""
        if self._metric[0] is not inv_mass:
            self._metric = (inv_mass, Metric(inv_mass))
        return self._metric[1]

    def init(self, kernel_state, inv_mass: torch.Tensor, prior_inv_mass: torch.Tensor | None,
             generator: torch.Generator) -> AdaptationState:
        """The first step size is Stan's doubling/halving search from 1."""
        step_size = find_reasonable_step_size(
            self.value_and_grad, self.metric(inv_mass), *kernel_state,
            torch.ones(self.n_chains, **self.kw), generator)
        return AdaptationState(step_size, inv_mass, prior_inv_mass,
                               self.dual_averaging.init(step_size), self.welford.init(),
                               self.kernel.tuning_init(self.n_chains, self.dim, **self.kw))

    def empty(self) -> AdaptationState:
        """A state of the right structure, to be overwritten by a checkpoint's fields."""
        ones = torch.ones(self.n_chains, **self.kw)
        inv_mass = (torch.eye(self.dim, **self.kw).expand(self.n_chains, self.dim, self.dim)
                    if self.welford.dense else torch.ones(self.n_chains, self.dim, **self.kw))
        return AdaptationState(ones, inv_mass, None, self.dual_averaging.init(ones),
                               self.welford.init(),
                               self.kernel.tuning_init(self.n_chains, self.dim, **self.kw))

    def step(self, iteration: int, state: AdaptationState, kernel_state,
             accept_prob: torch.Tensor, generator: torch.Generator) -> AdaptationState:
        """Learn from warm-up ``iteration``'s transition (ending at ``kernel_state``)."""
        da = self.dual_averaging.update(state.dual_averaging, accept_prob)
        step_size, welford, tuning, inv_mass = da.step_size, state.welford, state.tuning, \
            state.inv_mass
        for start, end in self.windows:
            if start <= iteration < end:
                welford = self.welford.update(welford, kernel_state.position)
                tuning = self.kernel.tuning_update(tuning, kernel_state.position)
                if iteration == end - 1:
                    inv_mass = self.welford.inverse_mass(welford, state.prior_inv_mass,
                                                         prior_count=self.prior_count)
                    welford = self.welford.init()
                    metric = self.metric(inv_mass)
                    tuning = self.kernel.tuning_end_window(tuning, metric)
                    step_size = find_reasonable_step_size(self.value_and_grad, metric,
                                                          *kernel_state, da.step_size, generator)
                    da = self.dual_averaging.init(step_size)
                break
        if iteration == self.n_warmup - 1:
            step_size = self.dual_averaging.final_step_size(da)
        return AdaptationState(step_size, inv_mass, state.prior_inv_mass, da, welford, tuning)

    def stage(self, iteration: int) -> str:
        """Where ``iteration`` lies: a fast buffer, a slow window or sampling."""
        if iteration >= self.n_warmup:
            return "sampling"
        for k, (s, e) in enumerate(self.windows):
            if s <= iteration < e:
                return f"slow window {k + 1}/{len(self.windows)} [{s}, {e})"
        if not self.windows or iteration < self.windows[0][0]:
            return "initial fast buffer"
        return "terminal fast buffer"
