"""The leapfrog integrator of Hamiltonian dynamics and the batched log-density it calls.

All chains move together: positions are ``(chain, dim)`` tensors and every leapfrog step makes one
batched call of the log-density and its gradient.

References:
    Neal (2011), *MCMC using Hamiltonian dynamics*, https://arxiv.org/abs/1206.1901
"""

from __future__ import annotations

import torch

from ..nonfinite import NonfiniteTally
from .metrics import Metric

__all__ = ["ValueAndGrad", "leapfrog", "MAX_DELTA_ENERGY"]

MAX_DELTA_ENERGY = 1000.0  # Stan's threshold: an energy error above this is a divergence


class ValueAndGrad:
    """``z (n, dim) -> (log p (n,), grad (n, dim))`` of a log-density, never NaN, with counters.

    A non-finite log-density (NaN, +inf or -inf), a non-finite gradient or a non-finite position
    gives ``log p = -inf`` and a zero gradient, so a sampler rejects that point (and a trajectory
    that reaches it counts as divergent) instead of carrying NaN along.

    Arguments:
        density: a :class:`~skyfit.inference.LogDensity` (usually an ``UnconstrainedDensity``).

    Attributes:
        n_calls: batched calls made; n_evals: points evaluated (rows over all calls);
        n_nonfinite: points whose log-density was NaN or +inf or whose gradient was not finite
            (a log-density of -inf is rejected without being counted);
        nonfinite: their :class:`~skyfit.inference.nonfinite.NonfiniteTally` (count and ranges).
    """

    def __init__(self, density):
        self.density = density
        self.n_calls = 0
        self.n_evals = 0
        self.nonfinite = NonfiniteTally(density.names)

    @property
    def n_nonfinite(self) -> int:
        return self.nonfinite.count

    @n_nonfinite.setter
    def n_nonfinite(self, value: int) -> None:  # restored from a checkpoint
        self.nonfinite.count = int(value)

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
            # a log-density of -inf is zero probability (e.g. outside the support): rejected,
            # but not a failure of the model; NaN, +inf or a NaN gradient are counted
            failed = ~ok & ~((logp == -torch.inf) & torch.isfinite(z.sum(-1)))
            if bool(failed.any()):
                self.nonfinite.add(z[failed])
            logp = torch.where(ok, logp, -torch.inf)
            grad = torch.where(ok[:, None], grad, 0.0)
        return logp, grad


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
