"""emcee wrapper: batched walkers, correct moments, bounds, checkpoints, clear start errors."""

import math

import emcee
import numpy as np
import pytest
import torch
from targets import ar_gaussian, flat_bounded

from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
from skyfit.errors import LogDensityError, ParameterRangeError
from skyfit.inference import FunctionDensity, fit_vi, init_to_feasible, laplace, sample_emcee
from skyfit.inference.diagnostics import ks_uniform

short_run = pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
DE_MOVES = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]


def test_correlated_gaussian_means_within_4_mcse_and_sds_within_3_percent():
    density, mu, cov = ar_gaussian()
    scales = np.sqrt(np.diag(cov))
    s = sample_emcee(density, init=torch.as_tensor(mu), n_walkers=64, n_steps=5000,
                     n_burn=1000, moves=DE_MOVES, progress=False, seed=1)
    assert s.draws.shape == (64, 5000, 10) and s.sampler == "emcee"
    mcse = s.mcse()
    assert np.all(np.abs(s.mean() - mu) < 4 * mcse), (s.mean() - mu) / mcse
    np.testing.assert_allclose(s.std(), scales, rtol=0.03)
    # the log-density stored with each draw is the density's own value there
    x = torch.as_tensor(s.draws[3, -5:])
    np.testing.assert_allclose(s.log_density[3, -5:], density(x).numpy())
    tau = s.info["autocorr_time"]
    assert tau.shape == (10,) and np.all(np.isfinite(tau)) and np.all(tau > 1)
    assert s.info["acceptance_fraction"].shape == (64,)


@short_run
def test_all_walkers_are_evaluated_in_one_batched_call_per_half_step():
    shapes = []

    def logp(x):
        shapes.append(tuple(x.shape))
        return -0.5 * (x**2).sum(-1)

    d = FunctionDensity(logp, 3)
    s = sample_emcee(d, init=torch.zeros(3), n_walkers=16, n_steps=20, n_burn=5, progress=False)
    # start-up checks, the initial ensemble, then two halves of 8 walkers per step
    assert shapes.count((8, 3)) == 2 * 25
    assert all(len(shape) <= 2 for shape in shapes)
    assert s.info["n_evals"] >= 16 * 25


def test_uniform_prior_with_flat_likelihood_samples_uniform():
    s = sample_emcee(flat_bounded(), init=torch.tensor([3.5]), n_walkers=32, n_steps=3000,
                     n_burn=500, progress=False, seed=2)
    x = s.draws[..., 0]
    assert x.min() >= 2.0 and x.max() <= 5.0
    thin = int(math.ceil(2 * s.info["autocorr_time"][0]))
    assert ks_uniform(x[:, ::thin], 2.0, 5.0) > 0.01


@short_run
def test_same_seed_same_draws_other_seed_other_draws():
    density, mu, _ = ar_gaussian(dim=3)
    kw = dict(init=torch.as_tensor(mu), n_steps=50, n_burn=10, progress=False)
    a, b = sample_emcee(density, seed=5, **kw), sample_emcee(density, seed=5, **kw)
    c = sample_emcee(density, seed=6, **kw)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.allclose(a.draws, c.draws)


@short_run
def test_checkpoint_resume_continues_the_same_chain(tmp_path):
    density, mu, _ = ar_gaussian(dim=3)
    kw = dict(init=torch.as_tensor(mu), n_walkers=12, n_burn=50, progress=False, seed=3)
    whole = sample_emcee(density, n_steps=200, **kw)
    path = tmp_path / "run.h5"
    first = sample_emcee(density, n_steps=80, checkpoint=path, **kw)
    assert first.n_draws == 80
    resumed = sample_emcee(density, n_steps=200, checkpoint=path, resume=True, **kw)
    assert resumed.info["resumed"] and resumed.n_draws == 200
    np.testing.assert_allclose(resumed.draws, whole.draws)
    np.testing.assert_allclose(resumed.log_density, whole.log_density)
    # the file holds the whole run, burn-in included
    assert emcee.backends.HDFBackend(str(path), read_only=True).iteration == 250


@short_run
def test_walkers_start_from_the_laplace_covariance():
    density, mu, _ = ar_gaussian(dim=4)
    lap = laplace(density, torch.as_tensor(mu))
    s = sample_emcee(density, init=lap, n_walkers=200, n_steps=1, n_burn=0, progress=False)
    # after one step the ensemble still has the spread it was drawn with
    np.testing.assert_allclose(s.draws[:, 0].std(0), lap.std.numpy(),
                               rtol=0.2)


def test_start_outside_the_valid_range_is_a_clear_error():
    with pytest.raises(ParameterRangeError, match=r"u=7 not in \[2, 5\]"):
        sample_emcee(flat_bounded(), init=torch.tensor([7.0]), progress=False)


def test_nan_log_density_at_start_names_the_parameters():
    d = FunctionDensity(lambda x: torch.log(x[..., 0] - 1.0) - x[..., 1] ** 2, ["width", "shift"])
    with pytest.raises(LogDensityError, match=r"width=0\.5, shift=0"):
        sample_emcee(d, init=torch.tensor([0.5, 0.0]), progress=False)


def test_too_few_walkers_says_how_many_are_needed():
    with pytest.raises(ValueError, match="at least 2 \\* dim = 20"):
        sample_emcee(ar_gaussian()[0], init=torch.zeros(10), n_walkers=10, progress=False)


def light_curve_posterior():
    lc = GaussianLightCurve(t0=0.5, sigma=2.0, peak_flux=1.0)
    t = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    flux = lc.flux(t).detach()
    lc.to_dynamic()
    return Posterior(PhotometryLikelihood(lc, t, flux, 0.05 * torch.ones_like(t)))


@short_run
def test_posterior_default_init_starts_at_initial_without_a_hidden_fit():
    post = light_curve_posterior()
    s = sample_emcee(post, n_steps=300, n_burn=200, progress=False)
    assert s.names == post.names
    truth = np.array([0.5, 2.0, 1.0])
    # noiseless data: the posterior is centred on the truth, its width the Laplace width
    assert np.all(np.abs(s.mean() - truth) < 0.3 * s.std())
    lap = laplace(post, truth)
    np.testing.assert_allclose(s.std(), lap.std.numpy(), rtol=0.15)
    assert np.all(s.draws >= post.lower.numpy()) and np.all(s.draws <= post.upper.numpy())


def test_start_outside_a_params_valid_range_names_it():
    post = light_curve_posterior()
    x = post.initial().clone()
    x[1] = -1.0  # sigma must be positive
    with pytest.raises(ParameterRangeError, match="sigma"):
        sample_emcee(post, init=x, progress=False)


@short_run
def test_walkers_can_start_from_a_variational_fit_of_a_bounded_density():
    vi = fit_vi(flat_bounded(), n_steps=300, progress=False, init=init_to_feasible())
    s = sample_emcee(flat_bounded(), init=vi, n_walkers=16, n_steps=20, n_burn=0, progress=False)
    # the VI Gaussian lives in logit space: mapped back, the walkers span the range, inside it
    assert s.draws.min() > 2.0 and s.draws.max() < 5.0 and s.draws[:, 0].std() > 0.3
