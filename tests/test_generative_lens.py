"""Lens inference through the neural source prior: a seeded SIE lens of a held-out galaxy
(S/N 30) is fitted with a VAESource (latent through the IAF) by MAP, NUTS and SVI."""

import warnings

import pytest

import skyfit
from skyfit.examples import lensed_galaxy_problem
from skyfit.generative import load_pretrained

THETA_E = 1.2


@pytest.fixture(scope="module")
def fitted():
    problem = lensed_galaxy_problem(load_pretrained("galaxy32"), seed=0, theta_E=THETA_E,
                                    snr=30.0, free_source=("flux",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", skyfit.errors.ConvergenceWarning)
        fit = skyfit.fit_map(problem.posterior, problem.start)
    return problem, fit, skyfit.laplace(problem.posterior, fit.x)


def test_map_from_the_prior_median_galaxy_finds_the_einstein_radius(fitted):
    problem, fit, lap = fitted
    assert problem.posterior.names[0] == "SIE.theta_E"
    assert fit.log_density > problem.posterior(problem.start).item() + 100
    assert abs(fit.x[0].item() - THETA_E) < 3 * lap.std[0].item()
    # the best-fit image describes the data to the noise
    problem.posterior.set(fit.x)
    chi2 = ((problem.simulator().detach() - problem.data) ** 2 / problem.variance).mean()
    assert chi2 < 1.1


@pytest.mark.slow
def test_nuts_and_svi_einstein_radius_posteriors_contain_the_truth_and_agree(fitted):
    problem, fit, lap = fitted
    post = problem.posterior
    nuts = skyfit.sample_nuts(post, init=lap, n_chains=2, n_warmup=50, n_draws=80,
                              mass="dense", seed=1, progress=False)
    te = nuts["SIE.theta_E"]
    mean, std = te.mean(), te.std()
    assert abs(mean - THETA_E) < 2 * std
    assert std / mean < 0.02
    assert nuts.sample_stats["diverging"].sum() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", skyfit.errors.ConvergenceWarning)
        vi = skyfit.fit_vi(post, family="fullrank", n_steps=200, n_samples=4, init=lap, seed=0,
                           progress=False)
    te_vi = vi.sample(1000, seed=0)["SIE.theta_E"]
    assert abs(te_vi.mean() - mean) < std
    assert 0.5 < te_vi.std() / std < 2.0
