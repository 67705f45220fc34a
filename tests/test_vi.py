"""Variational fits: Gaussian posteriors recovered, Jacobian of bounded parameters, flows."""

import sys

import numpy as np
import pytest
import torch
from scipy import integrate, optimize
from targets import ar_gaussian, flat_bounded

from skyfit.errors import LogDensityError, ParameterRangeError
from skyfit.inference import FunctionDensity, Samples, VIResult, fit_vi, init_to_feasible, laplace
from skyfit.inference.diagnostics import ks_uniform

CENTRE = init_to_feasible()  # the centre of the support: these targets have no initial()


def test_fullrank_recovers_correlated_gaussian_mean_and_covariance():
    density, mu, cov = ar_gaussian()
    res = fit_vi(density, family="fullrank", n_steps=2000, progress=False, init=CENTRE)
    sd = np.sqrt(np.diag(cov))
    # the family contains the target: the fit is exact up to optimisation error
    assert np.all(np.abs(res.mean.numpy() - mu) < 0.01 * sd)
    np.testing.assert_allclose(res.std.numpy(), sd, rtol=0.03)
    corr = res.covariance.numpy() / np.outer(res.std.numpy(), res.std.numpy())
    np.testing.assert_allclose(corr, cov / np.outer(sd, sd), atol=0.01)
    assert res.info["pareto_k"] < 0.7
    s = res.sample(4000, seed=1)
    assert isinstance(s, Samples) and s.draws.shape == (1, 4000, 10) and s.sampler == "vi-fullrank"
    assert np.all(np.abs(s.mean() - mu) < 4 * sd / np.sqrt(4000))
    np.testing.assert_allclose(s.log_density[0, :5], density(torch.as_tensor(s.draws[0, :5])))


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_meanfield_matches_the_conditional_precision():
    # the mean-field KL(q || p) optimum of a Gaussian has variances 1 / diag(precision)
    density, mu, cov = ar_gaussian(rho=0.5)
    res = fit_vi(density, family="meanfield", n_steps=2000, progress=False, init=CENTRE)
    expected_sd = 1 / np.sqrt(np.diag(np.linalg.inv(cov)))
    np.testing.assert_allclose(res.std.numpy(), expected_sd, rtol=0.03)
    assert np.all(np.abs(res.mean.numpy() - mu) < 0.1 * np.sqrt(np.diag(cov)))
    assert np.count_nonzero(res.covariance.numpy() - np.diag(np.diag(res.covariance.numpy()))) == 0


def optimal_gaussian_for_logistic():
    """(0, sd) of the Gaussian minimising KL(q || logistic): the uniform density on a bounded
    range seen in the logit space, where the Jacobian makes it the logistic density."""
    def neg_elbo(log_sd):
        sd = np.exp(log_sd)
        f = lambda z: (np.exp(-0.5 * (z / sd) ** 2) / (sd * np.sqrt(2 * np.pi))  # noqa: E731
                       * (-np.logaddexp(0, -z) - np.logaddexp(0, z)))
        e_logp = integrate.quad(f, -12 * sd, 12 * sd)[0]
        return -(e_logp + np.log(sd) + 0.5 * np.log(2 * np.pi * np.e))
    return np.exp(optimize.minimize_scalar(neg_elbo, bounds=(-1, 2), method="bounded").x)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_bounded_uniform_prior_fit_in_unconstrained_space_with_jacobian():
    res = fit_vi(flat_bounded(), family="fullrank", n_steps=1500, progress=False, init=CENTRE)
    # without the log-Jacobian the target in z would be flat and the fitted sd would diverge
    assert abs(res.mean.numpy()[0]) < 0.05
    assert res.std.numpy()[0] == pytest.approx(optimal_gaussian_for_logistic(), rel=0.02)
    x = res.sample(2000, seed=3).draws[0, :, 0]
    assert x.min() > 2.0 and x.max() < 5.0
    assert ks_uniform(x, 2.0, 5.0) > 0.01


def banana():
    return FunctionDensity(
        lambda x: -0.5 * (x[..., 0] ** 2 / 4 + (x[..., 1] - 0.5 * x[..., 0] ** 2) ** 2), 2)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_flow_fits_a_banana_better_than_a_gaussian():
    d = banana()
    gauss = fit_vi(d, family="fullrank", n_steps=600, progress=False, init=CENTRE)
    flow = fit_vi(d, family="flow", n_steps=600, progress=False, init=CENTRE,
                  flow_kwargs=dict(transforms=2, hidden_features=(32, 32)))
    log_z = np.log(4 * np.pi)  # normalising constant of the banana
    assert gauss.elbo < log_z - 0.3
    assert flow.elbo > gauss.elbo + 0.2 and flow.elbo < log_z + 0.01
    # every VI result is a Gaussian approximation: a flow's mean and covariance are its moments
    draws = flow.q.rsample(4096).detach()
    assert flow.space == "unconstrained" and isinstance(flow.mean, torch.Tensor)
    assert torch.allclose(flow.mean, draws.mean(0), atol=0.15)
    assert torch.allclose(flow.covariance, torch.cov(draws.T), atol=0.3)
    s = flow.sample(2000, seed=0)
    assert s.sampler == "vi-flow" and s.info["pareto_k"] < 0.7
    # E[x1] = E[x0^2] / 2 = 1 for the banana
    assert s.mean()[1] == pytest.approx(1.0, abs=0.2)


def test_flow_without_zuko_names_the_ml_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "zuko", None)
    with pytest.raises(ImportError, match=r"skyfit\[ml\]"):
        fit_vi(banana(), family="flow", progress=False, init=CENTRE)


def test_laplace_init_of_a_gaussian_is_already_the_answer():
    density, mu, cov = ar_gaussian(dim=4)
    lap = laplace(density, torch.as_tensor(mu))
    res = fit_vi(density, init=lap, n_steps=50, progress=False)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(res.covariance.numpy() / np.outer(sd, sd), cov / np.outer(sd, sd),
                               atol=1e-2)
    assert np.all(np.abs(res.mean.numpy() - mu) < 1e-3 * sd)
    # a VIResult starts a new fit where the old one ended (Adam's first steps are ~lr * sd)
    again = fit_vi(density, family="fullrank", init=res, n_steps=10, progress=False)
    assert np.all(np.abs(again.mean.numpy() - mu) < 0.02 * sd)
    assert isinstance(again, VIResult)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_seeded_and_leaves_the_global_rng_alone():
    density, _, _ = ar_gaussian(dim=3)
    state = torch.get_rng_state()
    a = fit_vi(density, n_steps=100, seed=4, progress=False, init=CENTRE)
    assert torch.equal(torch.get_rng_state(), state)
    b = fit_vi(density, n_steps=100, seed=4, progress=False, init=CENTRE)
    np.testing.assert_array_equal(a.elbo_history, b.elbo_history)
    np.testing.assert_array_equal(a.sample(10, seed=1).draws, b.sample(10, seed=1).draws)


def test_start_outside_bounds_and_nan_start_are_clear_errors():
    with pytest.raises(ParameterRangeError, match=r"u=1 not in \[2, 5\]"):
        fit_vi(flat_bounded(), init=torch.tensor([1.0]), progress=False)
    d = FunctionDensity(lambda x: torch.log(x[..., 0] - 1.0) - x[..., 1] ** 2, ["width", "shift"])
    with pytest.raises(LogDensityError, match=r"width=0\.5, shift=0"):
        fit_vi(d, init=torch.tensor([0.5, 0.0]), progress=False)
    with pytest.raises(ValueError, match="family must be one of"):
        fit_vi(d, family="gaussian", progress=False, init=CENTRE)


def test_a_flow_result_can_start_another_fit_and_n_samples_is_checked():
    pytest.importorskip("zuko")
    d = FunctionDensity(lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1), 2)
    flow = fit_vi(d, "flow", n_steps=150, progress=False, init=torch.zeros(2))
    again = fit_vi(d, "fullrank", n_steps=150, progress=False, init=flow)
    np.testing.assert_allclose(again.mean.numpy(), [1.0, 1.0], atol=0.2)
    with pytest.raises(ValueError, match="n_samples"):
        fit_vi(d, n_steps=5, n_samples=0, progress=False, init=CENTRE)
