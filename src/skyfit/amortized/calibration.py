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

    Example:
        >>> import torch
        >>> from skyfit.amortized import AmortizedPosterior, TrainingSet, train
        >>> g = torch.Generator().manual_seed(0)  # theta ~ N(0, 1), x = theta + N(0, 0.5^2)
        >>> theta = torch.randn(1000, 1, generator=g, dtype=torch.float64)
        >>> x = theta + 0.5 * torch.randn(1000, 1, generator=g, dtype=torch.float64)
        >>> post = AmortizedPosterior(["theta"], [-torch.inf], [torch.inf], (1,), transforms=1,
        ...                           hidden=(16,), features=4, embedding_hidden=(16,))
        >>> _ = train(post, TrainingSet(theta, x, ["theta"]), epochs=5, lr=1e-2, batch_size=50,
        ...           progress=False)
        >>> result = calibration(post, theta[900:], x[900:], n_draws=49)  # the held-out 10%
        >>> {c: abs(cover - c) < 0.15 for c, cover in result["coverage"].items()}  # calibrated
        {0.5: True, 0.68: True, 0.95: True}
        >>> bool(result["sbc_pvalue"][0] > 0.01)  # chi-square test: the ranks look uniform
        True
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

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> from skyfit.amortized import AmortizedPosterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> lc.peak_flux.valid = (0.5, 2.0)
        >>> lc.peak_flux.to_dynamic()  # one free parameter, flat prior on (0.5, 2)
        >>> t = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
        >>> flux = torch.exp(-0.5 * (t / 2.0) ** 2)  # noise-free data of peak flux 1
        >>> posterior = Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(3)))
        >>> q = AmortizedPosterior(posterior.names, posterior.lower, posterior.upper, (3,))
        >>> theta, log_weights, k = importance_weights(q, posterior, n=2000)  # q: untrained
        >>> w = torch.as_tensor(log_weights).exp()
        >>> round(float((w * theta[:, 0]).sum()), 2), k < 0.7  # the exact mean, peak flux 1
        (1.0, True)
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
    importance ``ess`` and the raw ``log_weights``; ``units`` are the exact Posterior's. A
    :class:`~skyfit.errors.ConvergenceWarning` is emitted when ``pareto_k > 0.7``: the network
    is then not trustworthy for this object.

    Example:
        >>> import math, torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> from skyfit.amortized import AmortizedPosterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> lc.peak_flux.valid = (0.5, 2.0)
        >>> lc.peak_flux.to_dynamic()  # one free parameter, flat prior on (0.5, 2)
        >>> t = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        >>> flux = torch.exp(-0.5 * (t / 2.0) ** 2)  # noise-free data of peak flux 1
        >>> posterior = Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(5)))
        >>> q = AmortizedPosterior(posterior.names, posterior.lower, posterior.upper, (5,))
        >>> samples = refine(q, posterior, n=2000)  # an untrained q, corrected by the weights
        >>> round(float(samples.draws.mean()), 1), round(float(samples.draws.std()), 2)
        (1.0, 0.08)
        >>> round(0.1 / math.sqrt(float((flux**2).sum())), 2)  # the exact posterior sd
        0.08
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
                   info={"pareto_k": k, "ess": ess, "log_weights": log_w, "seed": seed},
                   units=dict(posterior.units))
