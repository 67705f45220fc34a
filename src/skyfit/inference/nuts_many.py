"""NUTS for many independent objects: objects x chains as one batch of chains."""

from __future__ import annotations

import numpy as np
import torch

from .batched import BatchedDensity, ObjectRows
from .many_results import ManyResult
from .mcmc import NUTS
from .mcmc.integrators import ValueAndGrad
from .sampling import _sample
from .transforms import UnconstrainedDensity

__all__ = ["sample_nuts_many", "split_rhat", "bulk_ess"]


class _ObjectsNUTS(NUTS):
    # chain k samples object k // n_chains: each evaluation selects the objects of the chains
    # it is given, so the batch stays one vmapped call however many chains are still building
    def __init__(self, rows_density: ObjectRows, value_and_grad, max_tree_depth: int):
        super().__init__(value_and_grad, max_tree_depth)
        self.rows_density = rows_density

    def value_and_grad_of(self, z, chains):
        self.rows_density.select(chains)
        try:
            return self.value_and_grad(z)
        finally:
            self.rows_density.select(None)


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split-chain R-hat (Gelman et al. 2013, BDA3 eq. 11.4) of ``draws (..., chains, n, dim)``,
    vectorised over the leading axes: shape ``(..., dim)``."""
    half = draws.shape[-2] // 2
    parts = np.concatenate([draws[..., :half, :], draws[..., half:2 * half, :]], axis=-3)
    n = parts.shape[-2]
    within = parts.var(-2, ddof=1).mean(-2)
    between = n * parts.mean(-2).var(-2, ddof=1)
    return np.sqrt(((n - 1) / n * within + between / n) / within)


def bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Effective sample size of ``draws (..., chains, n, dim)`` (split chains, Geyer's initial
    monotone sequence on the combined autocorrelation, as Stan; without rank normalisation),
    vectorised over the leading axes: shape ``(..., dim)``."""
    half = draws.shape[-2] // 2
    x = np.concatenate([draws[..., :half, :], draws[..., half:2 * half, :]], axis=-3)
    m, n = x.shape[-3], x.shape[-2]
    centred = x - x.mean(-2, keepdims=True)
    spectrum = np.fft.rfft(centred, n=2 * n, axis=-2)
    autocov = np.fft.irfft(spectrum * np.conj(spectrum), axis=-2)[..., :n, :] / n
    within = x.var(-2, ddof=1).mean(-2)
    var_plus = within * (n - 1) / n + x.mean(-2).var(-2, ddof=1)
    rho = 1 - (within[..., None, :] - autocov.mean(-3)) / var_plus[..., None, :]
    n_pairs = n // 2
    pairs = rho[..., 0:2 * n_pairs:2, :] + rho[..., 1:2 * n_pairs:2, :]
    positive = np.cumprod(pairs > 0, axis=-2).astype(bool)
    monotone = np.minimum.accumulate(np.where(positive, pairs, 0.0), axis=-2)
    tau = -1 + 2 * np.where(positive, monotone, 0.0).sum(-2)
    return m * n / np.maximum(tau, 1.0 / np.log10(max(m * n, 10)))


def sample_nuts_many(density: BatchedDensity, init, n_chains: int = 4, n_warmup: int = 500,
                     n_draws: int = 500, seed: int = 0, target_accept: float = 0.8,
                     max_tree_depth: int = 10, init_scale: float = 0.1,
                     progress: bool = False) -> ManyResult:
    """NUTS on every object at once: ``N x n_chains`` chains in one batch, each object's chains
    on that object's log-density; per-chain step-size and diagonal mass adaptation (so each
    object adapts its own); per-object split R-hat and ESS.

    Arguments:
        density: a :class:`~skyfit.inference.batched.BatchedDensity`.
        init: starts ``(N, dim)`` (e.g. a :func:`fit_map_many` result's ``x``, or the result);
            each object's chains start there plus ``init_scale`` N(0, 1) in unconstrained space.

    Returns:
        :class:`~skyfit.inference.ManyResult` with ``x`` the posterior means, ``covariance``
        the sample covariances, ``rhat`` and ``ess`` ``(N, dim)``, ``draws``
        ``(N, chains, draws, dim)``; ``converged`` is ``max R-hat < 1.01`` per object.
    """
    x0 = density.as_points(init.x if isinstance(init, ManyResult) else init)
    n, d = density.n_objects, density.dim
    rows = torch.arange(n, device=density.device).repeat_interleave(n_chains)
    objects = ObjectRows(density, rows)
    u = UnconstrainedDensity(objects)
    generator = torch.Generator(device=density.device).manual_seed(seed + 1)
    z0 = u.to_unconstrained(x0[rows])
    z0 = z0 + init_scale * torch.randn(z0.shape, generator=generator, dtype=z0.dtype,
                                       device=z0.device)
    kernel = _ObjectsNUTS(objects, ValueAndGrad(u), max_tree_depth)
    samples = _sample(kernel, u, u.to_constrained(z0), 0.0, n * n_chains, n_warmup, n_draws,
                      seed, "diag", False, target_accept, None, 100, False, progress)
    draws = np.asarray(samples.draws).reshape(n, n_chains, n_draws, d)
    rhat, ess = split_rhat(draws), bulk_ess(draws)
    flat = torch.as_tensor(draws.reshape(n, n_chains * n_draws, d))
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    covariance = centred.transpose(1, 2) @ centred / (flat.shape[1] - 1)
    diverging = np.asarray(samples.sample_stats["diverging"]).reshape(n, -1).sum(1)
    result = ManyResult(names=list(density.names), x=mean,
                        log_density=density.log_prob_rows(mean.to(density.device),
                                                          torch.arange(n, device=density.device)
                                                          ).detach().cpu(),
                        converged=torch.as_tensor(rhat.max(-1) < 1.01), covariance=covariance,
                        rhat=rhat, ess=ess, draws=draws,
                        wall_time=float(samples.info["wall_time"]))
    result.extra["n_divergent"] = torch.as_tensor(diverging)
    for i in np.nonzero(rhat.max(-1) >= 1.01)[0].tolist():
        result.warnings[i].append(f"nuts: max R-hat {rhat[i].max():.3f} >= 1.01")
    for i in np.nonzero(diverging)[0].tolist():
        result.warnings[i].append(f"nuts: {int(diverging[i])} divergent transitions")
    return result
