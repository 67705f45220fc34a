"""Simulation-based calibration of the light-curve posterior: prior draw -> mock photometry ->
posterior draws; the rank of the truth among the draws must be uniform (Talts et al. 2018,
arXiv:1804.06788)."""

import warnings

import numpy as np
import pytest
import torch
from torch.distributions import LogNormal, Normal

from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior, sample_emcee
from skyfit.inference import fit_map, laplace
from skyfit.inference.diagnostics import sbc_chi2, sbc_ranks

F64 = dict(dtype=torch.float64)
N_REPLICATIONS = 100
N_RANK_DRAWS = 63  # ranks take 64 values: 8 bins of 8, 12.5 expected replications per bin
THIN = 48  # steps between kept draws of a walker: 2-3 autocorrelation times (tau ~ 15-20)


def priors():
    return {
        "GaussianLightCurve.t0": Normal(torch.tensor(0.0, **F64), torch.tensor(1.0, **F64)),
        "GaussianLightCurve.sigma": LogNormal(torch.tensor(np.log(2.5), **F64),
                                              torch.tensor(0.2, **F64)),
        "GaussianLightCurve.peak_flux": LogNormal(torch.tensor(0.0, **F64),
                                                  torch.tensor(0.3, **F64)),
    }


def replicate(seed: int):
    """Truth from the prior, photometry simulated from it, posterior draws (thinned emcee)."""
    gen = torch.Generator().manual_seed(seed)
    prior = priors()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        truth = torch.stack([d.sample() for d in prior.values()])
    time = torch.linspace(-8.0, 8.0, 16, **F64)
    flux_err = torch.full_like(time, 0.1)
    lc = GaussianLightCurve(t0=float(truth[0]), sigma=float(truth[1]),
                            peak_flux=float(truth[2]))
    flux = lc.flux(time).detach() + flux_err * torch.randn(time.shape, generator=gen, **F64)
    lc.to_dynamic()
    post = Posterior(PhotometryLikelihood(lc, time, flux, flux_err), priors=prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: emcee's "fewer than 50 tau" warning
        # start from the MAP's Laplace approximation, not from the Params' values (the truth):
        # a start at the truth would correlate the draws with it
        lap = laplace(post, fit_map(post))
        s = sample_emcee(post, init=lap, n_walkers=16, n_steps=4 * THIN, n_burn=48, seed=seed,
                         progress=False)
    draws = s.draws[:, THIN - 1::THIN].reshape(-1, 3)[:N_RANK_DRAWS]
    return truth.numpy(), draws


@pytest.mark.slow
def test_light_curve_posterior_ranks_are_uniform():
    truths, draws = zip(*(replicate(seed) for seed in range(N_REPLICATIONS)))
    ranks = sbc_ranks(np.array(truths), np.array(draws))
    assert ranks.shape == (N_REPLICATIONS, 3)
    pvalues = sbc_chi2(ranks, N_RANK_DRAWS, n_bins=8)
    assert np.all(pvalues > 0.01), pvalues
    # and the check has power: ranks against a shifted truth are far from uniform
    shifted = np.array(truths) + np.array(draws).std(axis=1)
    assert np.all(sbc_chi2(sbc_ranks(shifted, np.array(draws)), N_RANK_DRAWS, n_bins=8) < 1e-3)
