"""Running mean and (co)variance of draws (Welford), as a NamedTuple state updated by pure
functions: used for the mass-matrix windows and HMC's trajectory length."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["WelfordState", "WelfordCovariance"]


class WelfordState(NamedTuple):
    """Running count, mean and sum of squared deviations (``(chain,)``-batched or pooled).
    Per chain, ``count`` may be a ``(chain,)`` tensor: chains that run out of step
    (:mod:`~skyfit.inference.nuts_unsynced`) each have their own number of draws."""

    count: int | torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor


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

    def init(self) -> WelfordState:
        lead = () if self.pooled else (self.n_chains,)
        shape = (*lead, self.dim, self.dim) if self.dense else (*lead, self.dim)
        return WelfordState(0, torch.zeros(*lead, self.dim, **self.kw),
                            torch.zeros(shape, **self.kw))

    def update(self, state: WelfordState, x: torch.Tensor) -> WelfordState:
        """Add one draw per chain, ``x (chain, dim)``."""
        if self.pooled:  # Chan et al.'s merge of a batch of n_chains draws into the running sums
            n_b = x.shape[0]
            mean_b = x.mean(0)
            dx = x - mean_b
            m2_b = dx.T @ dx if self.dense else (dx * dx).sum(0)
            n = state.count + n_b
            delta = mean_b - state.mean
            mean = state.mean + delta * (n_b / n)
            corr = torch.outer(delta, delta) if self.dense else delta * delta
            return WelfordState(n, mean, state.m2 + m2_b + corr * (state.count * n_b / n))
        count = state.count + 1
        delta = x - state.mean
        mean = state.mean + delta / _per_chain(count, 1)
        delta2 = x - mean
        if self.dense:
            return WelfordState(count, mean, state.m2 + delta[:, :, None] * delta2[:, None, :])
        return WelfordState(count, mean, state.m2 + delta * delta2)

    def covariance(self, state: WelfordState) -> torch.Tensor:
        """Sample (co)variance, ``(chain, dim[, dim])`` (pooled: the same for every chain)."""
        fewest = int(torch.as_tensor(state.count).min())
        if fewest < 2:
            raise ValueError(f"need at least 2 draws for a covariance, have {fewest}")
        cov = state.m2 / (_per_chain(state.count, 2 if self.dense else 1) - 1)
        if self.pooled:
            cov = cov.expand(self.n_chains, *cov.shape).clone()
        return cov

    def inverse_mass(self, state: WelfordState, prior: torch.Tensor | None = None,
                     prior_count: float = 0.0) -> torch.Tensor:
        """Stan's regularised estimate: shrink towards ``1e-3 I`` with weight ``5 / (n + 5)``.

        With a ``prior`` inverse mass (e.g. a Laplace covariance, ``(chain, dim[, dim])``) the
        estimate is instead ``(n S + n0 prior) / (n + n0)`` with ``n0 = prior_count``: a short
        window's noisy (co)variance then refines a good starting metric instead of replacing it.
        """
        n = _per_chain(state.count, 2 if self.dense else 1)
        cov = self.covariance(state)
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


def _per_chain(count: int | torch.Tensor, trailing: int) -> int | torch.Tensor:
    """A ``(chain,)`` count shaped to broadcast over ``trailing`` dimensions; an int as it is."""
    return count.reshape(-1, *(1,) * trailing) if isinstance(count, torch.Tensor) else count
