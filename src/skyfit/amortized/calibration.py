"""Is the amortised posterior trustworthy? Calibration on held-out simulations (SBC ranks,
expected coverage) and importance-weighted refinement against the exact likelihood (PSIS).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..inference import Samples
from ..inference.diagnostics import sbc_chi2, sbc_ranks
from ..posterior import Posterior
from .npe import AmortizedPosterior
from .simulate import observation_of

__all__ = ["calibration", "importance_weights", "refine", "PARETO_K_MAX"]

PARETO_K_MAX = 0.7
"""Largest Pareto k for trustworthy PSIS estimates (Vehtari et al. 2024, arXiv:1507.02646)."""


def calibration(post: AmortizedPosterior, theta, x, n_draws: int = 199,
                levels=(0.5, 0.68, 0.95), seed: int = 0) -> dict:
    """SBC ranks and expected coverage of ``post`` on held-out pairs ``theta (N, dim)``, ``x``.

    - **SBC** (Talts et al. 2018, arXiv:1804.06788): rank of each true value among ``n_draws``
      posterior draws, per parameter; ``sbc_pvalue`` is the chi-square p-value of uniformity.
    - **Expected coverage** of the highest-density regions of ``q`` (Hermans et al. 2022,
      arXiv:2110.06581): the truth is inside the ``c`` HPD region when fewer than a fraction
      ``c`` of the draws have a higher ``log q`` than the truth; a calibrated posterior covers
      the truth with frequency ``c`` (``coverage[c]``).
    - ``central_coverage[c]``: per parameter, the fraction of truths inside the central ``c``
      interval of the marginal draws.

    All draws come from one batched call over the ``N`` observations.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    with torch.no_grad():
        draws, lq_draws = post.draw(x, n_draws, seed=seed)  # (n, N, dim), (n, N)
        lq_truth = post.log_prob(theta, x)  # (N,)
    draws_np = draws.permute(1, 0, 2).cpu().numpy()
    truth_np = theta.cpu().numpy()
    ranks = sbc_ranks(truth_np, draws_np)
    n_bins = int(min(20, max(4, len(theta) // 25)))
    hpd_level = (lq_draws > lq_truth).double().mean(0).cpu().numpy()  # (N,)
    coverage, central = {}, {}
    for c in levels:
        coverage[c] = float(np.mean(hpd_level < c))
        lo, hi = np.quantile(draws_np, [(1 - c) / 2, (1 + c) / 2], axis=1)
        central[c] = ((truth_np >= lo) & (truth_np <= hi)).mean(0)
    return {"ranks": ranks, "sbc_pvalue": sbc_chi2(ranks, n_draws, n_bins=n_bins),
            "coverage": coverage, "central_coverage": central, "n_sims": len(theta),
            "n_draws": n_draws}


def importance_weights(post: AmortizedPosterior, posterior: Posterior, n: int = 2000,
                       seed: int = 0, x_obs=None):
    """Draws of ``q(theta | x_obs)`` and their PSIS-smoothed, normalised log-weights
    ``log p(theta | x_obs) - log q(theta | x_obs)`` against the exact Posterior.

    ``posterior`` must hold the observation (``x_obs`` defaults to its data). Returns
    ``(theta (n, dim), log_weights (n,), pareto_k)``; ``k > 0.7`` means the flow is too far from
    the exact posterior for the weights to be trusted.
    """
    import arviz as az

    x_obs = observation_of(posterior) if x_obs is None else x_obs
    theta, lq = post.draw(x_obs, n, seed=seed)
    with torch.no_grad():
        lp = posterior.log_prob(theta.to(posterior.dtype))
    log_w = (lp - lq.to(lp.dtype)).cpu().numpy()
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns itself about large k; reported below
        smoothed, k = az.psislw(log_w.copy())
    return theta, np.asarray(smoothed), float(k)


def refine(post: AmortizedPosterior, posterior: Posterior, n: int = 2000, seed: int = 0,
           x_obs=None) -> Samples:
    """Importance-resample ``q(theta | x)`` to the exact posterior (PSIS, Vehtari et al. 2024).

    The returned Samples hold ``n`` draws resampled (systematic resampling) by the smoothed
    weights, so their moments estimate the exact posterior's; ``info`` holds ``pareto_k``, the
    importance ``ess`` and the raw ``log_weights``. A :class:`~skyfit.errors.ConvergenceWarning`
    is emitted when ``pareto_k > 0.7``: the network is then not trustworthy for this object.
    """
    from ..errors import ConvergenceWarning

    theta, log_w, k = importance_weights(post, posterior, n, seed, x_obs)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = float(1.0 / np.sum(w**2))
    rng = np.random.default_rng(seed)
    positions = (rng.random() + np.arange(n)) / n
    index = np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)
    draws = theta.cpu().numpy()[index]
    with torch.no_grad():
        lp = posterior.log_prob(torch.as_tensor(draws, dtype=posterior.dtype)).cpu().numpy()
    if k > PARETO_K_MAX:
        warnings.warn(ConvergenceWarning(
            f"importance refinement: Pareto k = {k:.2f} > {PARETO_K_MAX}; the amortised "
            f"posterior is far from the exact one for this observation (importance ESS "
            f"{ess:.0f} of {n}): run MCMC, or train on more simulations"), stacklevel=2)
    return Samples(draws[None], list(post.names), lp[None], f"npe-{post.config['kind']}-psis",
                   info={"pareto_k": k, "ess": ess, "log_weights": log_w, "seed": seed})
