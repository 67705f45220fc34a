"""Warm-up of HMC/NUTS as in Stan: dual-averaging step size and a windowed mass-matrix estimate.

The warm-up has a fast initial buffer (step size only, 75 iterations), slow windows of doubling
length (25, 50, 100, ...) at the end of each of which the inverse mass matrix is set to the
(regularised) covariance of that window's draws, and a fast terminal buffer (50 iterations).
All states here are batched over chains and serialise to plain tensors (for checkpoints).

References:
    Hoffman & Gelman (2014), *The No-U-Turn Sampler*, Sec. 3.2, https://arxiv.org/abs/1111.4246
    Nesterov (2009), *Primal-dual subgradient methods for convex problems*,
    https://doi.org/10.1007/s10107-007-0149-x
    Stan Reference Manual, *HMC algorithm parameters / Automatic parameter tuning*.
"""

from __future__ import annotations

import math

import torch

from .hmc import Metric, leapfrog

__all__ = ["DualAveraging", "WelfordCovariance", "warmup_windows", "find_reasonable_step_size"]


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


class DualAveraging:
    """Per-chain step size by Nesterov dual averaging towards a target acceptance statistic.

    Arguments:
        step_size: ``(chain,)`` initial step sizes; ``mu = log(10 * step_size)``.
        target: target mean acceptance statistic (Stan ``delta``: 0.8).
        gamma, t0, kappa: Stan's defaults 0.05, 10, 0.75.

    Example:
        >>> import torch
        >>> da = DualAveraging(torch.ones(2, dtype=torch.float64))
        >>> for _ in range(2000):  # acceptance exp(-eps): 0.8 at eps = 0.223
        ...     eps = da.update(torch.exp(-da.step_size))
        >>> [round(x, 2) for x in da.final_step_size().tolist()]
        [0.23, 0.23]
    """

    def __init__(self, step_size: torch.Tensor, target: float = 0.8, gamma: float = 0.05,
                 t0: float = 10.0, kappa: float = 0.75):
        self.target, self.gamma, self.t0, self.kappa = float(target), gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: torch.Tensor) -> None:
        self.step_size = step_size.clone()
        self.mu = torch.log(10 * step_size)
        self.counter = 0
        self.s_bar = torch.zeros_like(step_size)
        self.x_bar = torch.zeros_like(step_size)

    def update(self, accept_prob: torch.Tensor) -> torch.Tensor:
        """Learn from one transition's acceptance statistic; returns the next step sizes."""
        self.counter += 1
        n = self.counter
        stat = torch.nan_to_num(accept_prob, nan=0.0).clamp(max=1.0)
        eta = 1.0 / (n + self.t0)
        self.s_bar = (1 - eta) * self.s_bar + eta * (self.target - stat)
        x = self.mu - self.s_bar * math.sqrt(n) / self.gamma
        x_eta = n ** (-self.kappa)
        self.x_bar = (1 - x_eta) * self.x_bar + x_eta * x
        self.step_size = torch.exp(x)
        return self.step_size

    def final_step_size(self) -> torch.Tensor:
        """The averaged step size used after warm-up."""
        return torch.exp(self.x_bar) if self.counter > 0 else self.step_size

    def state_dict(self) -> dict:
        return dict(step_size=self.step_size, mu=self.mu, counter=self.counter,
                    s_bar=self.s_bar, x_bar=self.x_bar)

    def load_state_dict(self, state: dict) -> None:
        self.step_size, self.mu, self.s_bar, self.x_bar = (
            state["step_size"], state["mu"], state["s_bar"], state["x_bar"])
        self.counter = int(state["counter"])


class WelfordCovariance:
    """Running mean and (co)variance of draws, per chain or pooled over chains (Welford).

    Arguments:
        n_chains, dim: shape of the draws ``(chain, dim)``.
        dense: estimate full covariances (else variances only).
        pooled: one estimate from all chains' draws, shared by every chain.
    """

    def __init__(self, n_chains: int, dim: int, dense: bool = False, pooled: bool = False,
                 dtype=torch.float64, device=None):
        self.n_chains, self.dim, self.dense, self.pooled = n_chains, dim, dense, pooled
        self.kw = dict(dtype=dtype, device=device)
        self.reset()

    def reset(self) -> None:
        lead = () if self.pooled else (self.n_chains,)
        self.count = 0
        self.mean = torch.zeros(*lead, self.dim, **self.kw)
        shape = (*lead, self.dim, self.dim) if self.dense else (*lead, self.dim)
        self.m2 = torch.zeros(shape, **self.kw)

    def update(self, x: torch.Tensor) -> None:
        """Add one draw per chain, ``x (chain, dim)``."""
        if self.pooled:  # Chan et al.'s merge of a batch of n_chains draws into the running sums
            n_b = x.shape[0]
            mean_b = x.mean(0)
            dx = x - mean_b
            m2_b = dx.T @ dx if self.dense else (dx * dx).sum(0)
            n = self.count + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            corr = torch.outer(delta, delta) if self.dense else delta * delta
            self.m2 = self.m2 + m2_b + corr * (self.count * n_b / n)
            self.count = n
            return
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        delta2 = x - self.mean
        if self.dense:
            self.m2 = self.m2 + delta[:, :, None] * delta2[:, None, :]
        else:
            self.m2 = self.m2 + delta * delta2

    def covariance(self) -> torch.Tensor:
        """Sample (co)variance, ``(chain, dim[, dim])`` (pooled: the same for every chain)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 draws for a covariance, have {self.count}")
        cov = self.m2 / (self.count - 1)
        if self.pooled:
            cov = cov.expand(self.n_chains, *cov.shape).clone()
        return cov

    def inverse_mass(self, prior: torch.Tensor | None = None,
                     prior_count: float = 0.0) -> torch.Tensor:
        """Stan's regularised estimate: shrink towards ``1e-3 I`` with weight ``5 / (n + 5)``.

        With a ``prior`` inverse mass (e.g. a Laplace covariance, ``(chain, dim[, dim])``) the
        estimate is instead ``(n S + n0 prior) / (n + n0)`` with ``n0 = prior_count``: a short
        window's noisy (co)variance then refines a good starting metric instead of replacing it.
        """
        n = self.count
        cov = self.covariance()
        if prior is not None and prior_count > 0:
            if self.dense:
                cov = 0.5 * (cov + cov.transpose(-1, -2))
            return (n * cov + prior_count * prior) / (n + prior_count)
        shrink = 1e-3 * 5.0 / (n + 5.0)
        if self.dense:
            eye = torch.eye(self.dim, **self.kw)
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            return (n / (n + 5.0)) * cov + shrink * eye
        return (n / (n + 5.0)) * cov + shrink

    def state_dict(self) -> dict:
        return dict(count=self.count, mean=self.mean, m2=self.m2)

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), state["mean"], state["m2"]


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
