"""Euclidean metrics of HMC: an inverse mass matrix per chain, diagonal or dense."""

from __future__ import annotations

import torch

__all__ = ["Metric"]


class Metric:
    """Euclidean metric of HMC: an inverse mass matrix per chain, diagonal or dense.

    The kinetic energy is ``K(p) = p^T M^{-1} p / 2`` and momenta are drawn from ``N(0, M)``; a
    good ``M^{-1}`` is the posterior covariance in the sampler's (unconstrained) space.

    Arguments:
        inv_mass: ``(chain, dim)`` diagonal or ``(chain, dim, dim)`` dense inverse mass matrix.

    Example:
        >>> import torch
        >>> m = Metric(torch.full((2, 3), 4.0, dtype=torch.float64))
        >>> m.kinetic(torch.ones(2, 3, dtype=torch.float64)).tolist()
        [6.0, 6.0]
    """

    def __init__(self, inv_mass: torch.Tensor):
        if inv_mass.ndim not in (2, 3) or (inv_mass.ndim == 3
                                           and inv_mass.shape[-1] != inv_mass.shape[-2]):
            raise ValueError(
                "inv_mass must be (chain, dim) or (chain, dim, dim), got shape "
                f"{tuple(inv_mass.shape)}"
            )
        self.inv_mass = inv_mass
        self.dense = inv_mass.ndim == 3
        if self.dense:
            self.chol = torch.linalg.cholesky(inv_mass)  # L L^T = M^{-1}
        else:
            self.inv_sqrt = inv_mass.sqrt()

    def select(self, index: torch.Tensor) -> Metric:
        """The metric of the chains ``index`` (no new factorisation)."""
        new = Metric.__new__(Metric)
        new.inv_mass, new.dense = self.inv_mass.index_select(0, index), self.dense
        if self.dense:
            new.chol = self.chol.index_select(0, index)
        else:
            new.inv_sqrt = self.inv_sqrt.index_select(0, index)
        return new

    @property
    def n_chains(self) -> int:
        return self.inv_mass.shape[0]

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M^{-1} p`` for ``p`` of shape ``(chain, ..., dim)``."""
        if self.dense:
            if p.ndim == 2:
                return torch.matmul(p.unsqueeze(1), self.inv_mass).squeeze(1)
            flat = p.reshape(p.shape[0], -1, p.shape[-1])
            return torch.matmul(flat, self.inv_mass).reshape(p.shape)
        if p.ndim == 2:
            return p * self.inv_mass
        return p * self.inv_mass.view(p.shape[0], *([1] * (p.ndim - 2)), p.shape[-1])

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def sample_momentum(self, generator: torch.Generator) -> torch.Tensor:
        """``p ~ N(0, M)``, one per chain: ``(chain, dim)``."""
        shape = self.inv_mass.shape[:2]
        xi = torch.randn(shape, generator=generator, dtype=self.inv_mass.dtype,
                         device=self.inv_mass.device)
        if self.dense:  # p = L^{-T} xi has covariance (L L^T)^{-1} = M
            return torch.linalg.solve_triangular(
                self.chol.transpose(-1, -2), xi.unsqueeze(-1), upper=True
            ).squeeze(-1)
        return xi / self.inv_sqrt
