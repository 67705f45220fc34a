"""Batched Hamiltonian Monte Carlo: metric, leapfrog and a fixed-trajectory (jittered) HMC kernel.

All chains move together: positions are ``(chain, dim)`` tensors and every leapfrog step makes one
batched call of the log-density and its gradient. The NUTS kernel (``nuts.py``) reuses these pieces.

References:
    Neal (2011), *MCMC using Hamiltonian dynamics*, https://arxiv.org/abs/1206.1901
    Betancourt (2017), *A Conceptual Introduction to Hamiltonian Monte Carlo*,
    https://arxiv.org/abs/1701.02434
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Metric", "HMCState", "HMCInfo", "HMC", "ValueAndGrad", "leapfrog"]

MAX_DELTA_ENERGY = 1000.0  # Stan's threshold: an energy error above this is a divergence


class ValueAndGrad:
    """``z (n, dim) -> (log p (n,), grad (n, dim))`` of a log-density, never NaN, with counters.

    A non-finite log-density (NaN, +inf or -inf), a non-finite gradient or a non-finite position
    gives ``log p = -inf`` and a zero gradient, so a sampler rejects that point (and a trajectory
    that reaches it counts as divergent) instead of carrying NaN along.

    Arguments:
        density: a :class:`~skyfit.inference.LogDensity` (usually an ``UnconstrainedDensity``).

    Attributes:
        n_calls: batched calls made; n_evals: points evaluated (rows over all calls).
    """

    def __init__(self, density):
        self.density = density
        self.n_calls = 0
        self.n_evals = 0

    def raw(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The density's own value and gradient, non-finite values left as they are."""
        self.n_calls += 1
        self.n_evals += z.shape[0]
        return self.density.value_and_grad(z)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        finite_z = torch.isfinite(z.sum(-1))
        all_finite = bool(finite_z.all())
        logp, grad = self.raw(z if all_finite else torch.where(finite_z[:, None], z, 0.0))
        ok = torch.isfinite(logp + grad.sum(-1)) & (logp < torch.inf)
        if not all_finite:
            ok = ok & finite_z
        if not bool(ok.all()):
            logp = torch.where(ok, logp, -torch.inf)
            grad = torch.where(ok[:, None], grad, 0.0)
        return logp, grad


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


class HMCState(NamedTuple):
    """Where the chains are: ``position (chain, dim)``, ``log_density (chain,)``, ``grad``."""

    position: torch.Tensor
    log_density: torch.Tensor
    grad: torch.Tensor


class HMCInfo(NamedTuple):
    """Per-chain facts of one HMC transition, each ``(chain,)``."""

    accept_prob: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    n_steps: torch.Tensor


def leapfrog(value_and_grad, metric: Metric, z, p, grad, step_size, n_steps: int = 1):
    """``n_steps`` leapfrog steps of signed per-chain ``step_size (chain,)``, one batched call each.

    Returns ``(z, p, grad, log_density)`` at the end of the trajectory.
    """
    eps = step_size[:, None]
    p = p + 0.5 * eps * grad
    logp = None
    for i in range(n_steps):
        z = z + eps * metric.velocity(p)
        logp, grad = value_and_grad(z)
        p = p + (0.5 if i == n_steps - 1 else 1.0) * eps * grad
    return z, p, grad, logp


class HMC:
    """Batched HMC kernel with a trajectory of ``n_leapfrog`` steps shared by every chain.

    All chains take the same number of leapfrog steps, so no chain waits for another (no
    lock-step waste, unlike NUTS). The driver jitters ``n_leapfrog`` from one transition to the
    next, which breaks the periodic orbits that make a fixed trajectory resonate. A transition is
    a Metropolis step on the energy error; NaN or an energy error above 1000 is a divergence and
    is rejected.

    Arguments:
        value_and_grad: batched ``z -> (log p, grad)`` (see :class:`ValueAndGrad`).
        max_delta_energy: energy error counted as a divergence.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> vg = ValueAndGrad(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2))
        >>> kernel = HMC(vg)
        >>> state = kernel.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> metric = Metric(torch.ones(3, 2, dtype=torch.float64))
        >>> g = torch.Generator().manual_seed(0)
        >>> eps = torch.full((3,), 0.5, dtype=torch.float64)
        >>> state, info = kernel.step(g, state, eps, metric, 4)
        >>> state.position.shape, info.n_steps.tolist()
        (torch.Size([3, 2]), [4, 4, 4])
    """

    def __init__(self, value_and_grad, max_delta_energy: float = MAX_DELTA_ENERGY):
        self.value_and_grad = value_and_grad
        self.max_delta_energy = max_delta_energy

    def init(self, position: torch.Tensor) -> HMCState:
        logp, grad = self.value_and_grad(position)
        return HMCState(position, logp, grad)

    def step(self, generator, state: HMCState, step_size, metric: Metric, n_leapfrog: int):
        z0, logp0, g0 = state
        p0 = metric.sample_momentum(generator)
        h0 = -logp0 + metric.kinetic(p0)
        z, p, g, logp = leapfrog(self.value_and_grad, metric, z0, p0, g0, step_size, n_leapfrog)
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
        return new, HMCInfo(accept_prob, diverging, energy, n)
