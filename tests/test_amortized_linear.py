"""Amortised posterior of a linear-Gaussian simulator, whose exact posterior is known:
x = A theta + N(0, sigma^2 I), theta ~ N(0, I)  =>  theta | x ~ N(S A^T x / sigma^2, S),
S = (A^T A / sigma^2 + I)^-1. One network is trained (reduced size) and checked against it:
moments, SBC ranks, expected coverage, PSIS refinement, save/load."""

import caskade as ck
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from skyfit import GaussianLikelihood, Posterior
from skyfit._forward import forward
from skyfit.amortized import (
    AmortizedPosterior,
    ImproperPriorError,
    calibration,
    fit,
    importance_weights,
    refine,
    sample_prior,
    simulate,
)
from skyfit.inference import Samples
from skyfit.params import Param

F64 = dict(dtype=torch.float64)
SIGMA = 0.5
N_TRAIN = 6000
N_HELD_OUT = 1000


class Linear(ck.Module):
    def __init__(self, matrix):
        super().__init__("Linear")
        self.matrix = matrix
        self.theta = Param("theta", shape=(matrix.shape[1],))

    @forward
    def __call__(self, theta=None):
        return self.matrix @ theta


def linear_problem(x_obs=None, prior=True):
    matrix = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), **F64)
    data = torch.zeros(6, **F64) if x_obs is None else x_obs
    like = GaussianLikelihood(Linear(matrix), data, variance=torch.full((6,), SIGMA**2, **F64))
    priors = {"Linear.theta": Normal(torch.zeros(2, **F64), torch.ones(2, **F64))}
    return Posterior(like, priors=priors if prior else None), matrix


def exact_posterior(matrix, x):
    cov = torch.linalg.inv(matrix.T @ matrix / SIGMA**2 + torch.eye(2, **F64))
    mean = (cov @ matrix.T @ x.T / SIGMA**2).T
    return mean, cov


@pytest.fixture(scope="module")
def trained():
    posterior, matrix = linear_problem()
    post = fit(posterior, n_train=N_TRAIN, kind="nsf", transforms=2, epochs=30, batch_size=512,
               lr=3e-3, embedding_hidden=(64, 64), features=16, progress=False, seed=0)
    held_out = simulate(posterior, N_HELD_OUT, seed=12345, progress=False)
    return post, matrix, held_out


def test_flat_prior_is_refused_with_a_request_for_a_prior():
    posterior, _ = linear_problem(prior=False)
    with pytest.raises(ImproperPriorError, match="Linear.theta.*give each a proper prior"):
        sample_prior(posterior, 10)


def test_simulated_pairs_follow_the_linear_gaussian_model():
    posterior, matrix = linear_problem()
    pairs = simulate(posterior, 4000, seed=3, batch_size=1000, progress=False)
    residual = (pairs.x - pairs.theta @ matrix.T) / SIGMA
    assert abs(float(residual.mean())) < 0.05 and abs(float(residual.std()) - 1) < 0.02
    assert abs(float(pairs.theta.std()) - 1) < 0.05  # the N(0, 1) prior
    again = simulate(posterior, 4000, seed=3, batch_size=1000, progress=False)
    assert torch.equal(pairs.x, again.x)  # seeded


def test_simulations_stream_to_hdf5_in_chunks(tmp_path):
    posterior, _ = linear_problem()
    memory = simulate(posterior, 250, seed=1, batch_size=100, progress=False)
    disk = simulate(posterior, 250, seed=1, batch_size=100, progress=False,
                    path=tmp_path / "pairs.h5")
    assert torch.equal(memory.theta, disk.theta) and torch.equal(memory.x, disk.x)
    assert disk.names == ["Linear.theta[0]", "Linear.theta[1]"]


def test_flow_matches_the_exact_linear_gaussian_posterior(trained):
    post, matrix, held = trained
    x = held.x[:200]
    draws, _ = post.draw(x, 1000, seed=1)
    mean, cov = exact_posterior(matrix, x)
    sd = cov.diag().sqrt()
    error = (draws.mean(0) - mean) / sd
    # amortisation error of a network trained on 6000 simulations, averaged over observations
    assert float(error.pow(2).mean().sqrt()) < 0.25, error.pow(2).mean(0).sqrt()
    ratio = draws.std(0) / sd
    assert torch.all((ratio.mean(0) - 1).abs() < 0.1), ratio.mean(0)
    corr = torch.stack([torch.corrcoef(d.T)[0, 1] for d in draws.unbind(1)])
    assert abs(float(corr.mean()) - float(cov[0, 1] / sd.prod())) < 0.1


def test_psis_refinement_recovers_the_exact_posterior_within_monte_carlo_error(trained):
    post, matrix, held = trained
    x_obs = held.x[0]
    posterior, _ = linear_problem(x_obs)
    theta, log_w, k = importance_weights(post, posterior, n=4000, seed=2)
    assert k < 0.7
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = 1 / np.sum(w**2)
    mean, cov = exact_posterior(matrix, x_obs[None])
    est = (w[:, None] * theta.numpy()).sum(0)
    mcse = np.sqrt(cov.diag().numpy() / ess)
    assert np.all(np.abs(est - mean[0].numpy()) < 4 * mcse), (est, mean, mcse)
    samples = refine(post, posterior, n=4000, seed=2)
    assert isinstance(samples, Samples) and samples.info["pareto_k"] == pytest.approx(k)
    assert np.all(np.abs(samples.std() / cov.diag().sqrt().numpy() - 1) < 0.1)


def test_sbc_ranks_are_uniform_and_coverage_is_nominal(trained):
    post, _, held = trained
    cal = calibration(post, held.theta, held.x, n_draws=199, seed=5)
    assert cal["n_sims"] >= 500
    assert np.all(cal["sbc_pvalue"] > 0.001), cal["sbc_pvalue"]
    for level, covered in cal["coverage"].items():
        assert abs(covered - level) < 0.05, cal["coverage"]
    for level, covered in cal["central_coverage"].items():
        assert np.all(np.abs(covered - level) < 0.05), cal["central_coverage"]
    # the check has power: a posterior shifted by half a sd fails it
    shifted = calibration(post, held.theta + 0.5 * 0.4, held.x, n_draws=199, seed=5)
    assert np.any(shifted["sbc_pvalue"] < 0.001)


def test_one_or_many_observations_give_samples(trained):
    post, _, held = trained
    one = post.sample(held.x[0], 300, seed=0)
    many = post.sample(held.x[:5], 300, seed=0)
    assert isinstance(one, Samples) and one.draws.shape == (1, 300, 2)
    assert len(many) == 5 and all(s.draws.shape == (1, 300, 2) for s in many)
    lq = post.log_prob(torch.stack([torch.as_tensor(s.draws[0, :10]) for s in many], 1), held.x[:5])
    assert lq.shape == (10, 5)
    assert torch.allclose(lq[:, 0], torch.as_tensor(many[0].log_density[0, :10]), atol=1e-3)


def test_save_and_load_give_the_same_posterior(trained, tmp_path):
    post, _, held = trained
    post.save(tmp_path / "npe.pt")
    loaded = AmortizedPosterior.load(tmp_path / "npe.pt")
    theta = held.theta[:20]
    assert torch.allclose(post.log_prob(theta, held.x[:20]), loaded.log_prob(theta, held.x[:20]))
    blob = torch.load(tmp_path / "npe.pt", weights_only=True)  # no pickle needed
    assert blob["format"] == "skyfit.AmortizedPosterior"
