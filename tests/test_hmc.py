"""Batched HMC: metric, leapfrog geometry, dual averaging, Welford, fixed-trajectory sampler."""


import numpy as np
import pytest
import torch
from scipy import stats
from targets import assert_recovers, correlated_gaussian

from skyfit.inference import FunctionDensity, GaussianApproximation, sample_hmc
from skyfit.inference.adaptation import DualAveraging, WelfordCovariance
from skyfit.inference.mcmc import HMC, KernelParams, Metric, ValueAndGrad, leapfrog


def test_dense_metric_momenta_have_covariance_mass():
    inv_mass = torch.tensor([[[2.0, 0.6], [0.6, 0.5]]], dtype=torch.float64).expand(20000, 2, 2)
    metric = Metric(inv_mass.clone())
    p = metric.sample_momentum(torch.Generator().manual_seed(0))
    mass = torch.linalg.inv(inv_mass[0])
    assert torch.allclose(torch.cov(p.T), mass, atol=0.05 * mass.abs().max())
    v = metric.velocity(p)
    assert torch.allclose(v, p @ inv_mass[0])
    assert torch.allclose(metric.kinetic(p), 0.5 * (p * v).sum(-1))


def test_leapfrog_is_reversible_and_conserves_energy_on_a_gaussian():
    density, _, _ = correlated_gaussian(dim=4)
    vg = ValueAndGrad(density)
    gen = torch.Generator().manual_seed(1)
    metric = Metric(torch.full((8, 4), 1.0, dtype=torch.float64) * torch.logspace(-2, 2, 4,
                                                                                 dtype=torch.float64))
    z0 = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    p0 = metric.sample_momentum(gen)
    logp0, g0 = vg(z0)
    eps = torch.full((8,), 0.01, dtype=torch.float64)
    z, p, g, logp = leapfrog(vg, metric, z0, p0, g0, eps, 50)
    zb, pb, _, _ = leapfrog(vg, metric, z, p, g, -eps, 50)  # integrating backwards returns
    assert torch.allclose(zb, z0, atol=1e-10) and torch.allclose(pb, p0, atol=1e-10)
    h0 = metric.kinetic(p0) - logp0
    h1 = metric.kinetic(p) - logp
    assert ((h1 - h0).abs() < 1e-2 * h0.abs().clamp(min=1)).all()


def test_dual_averaging_reaches_target_acceptance():
    da = DualAveraging(target=0.8)
    state = da.init(torch.ones(3, dtype=torch.float64))
    for _ in range(2000):
        eps = state.step_size
        state = da.update(state, torch.exp(-2 * eps))  # acceptance exp(-2 eps): 0.8 at 0.1116
    assert torch.allclose(da.final_step_size(state), torch.full((3,), -np.log(0.8) / 2,
                                                           dtype=torch.float64), rtol=0.03)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("pooled", [False, True])
def test_welford_matches_numpy(dense, pooled):
    x = torch.randn(50, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    w = WelfordCovariance(3, 4, dense=dense, pooled=pooled)
    state = w.init()
    for row in x:
        state = w.update(state, row)
    cov = w.covariance(state)
    data = x.reshape(-1, 4).numpy() if pooled else None
    for c in range(3):
        ref = np.cov(data if pooled else x[:, c].numpy(), rowvar=False)
        got = cov[c].numpy()
        assert np.allclose(got, ref if dense else np.diag(ref))


def test_hmc_kernel_takes_the_same_steps_in_every_chain():
    vg = ValueAndGrad(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 3))
    kernel = HMC(vg, n_leapfrog=7, jitter=False)
    state = kernel.init(torch.zeros(5, 3, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    calls = vg.n_calls
    params = KernelParams(torch.full((5,), 0.3, dtype=torch.float64),
                          Metric(torch.ones(5, 3, dtype=torch.float64)))
    state, info = kernel.step(gen, state, params)
    assert vg.n_calls - calls == 7  # one batched gradient call per leapfrog step, all chains


def test_jittered_hmc_has_no_lockstep_waste_and_bounded_steps():
    d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)
    s = sample_hmc(d, init=torch.zeros(2), n_chains=4, n_warmup=50, n_draws=100, n_leapfrog=6,
                   seed=3, progress=False)
    n = s.sample_stats["n_steps"]
    assert n.min() >= 1 and n.max() <= 6
    assert (n == n[:1]).all()  # one trajectory length per iteration, shared by every chain
    # the jittered length is uniform on 1..6 (chi^2 on the 100 draws' lengths, 5 dof)
    counts = np.bincount(n[0].astype(int), minlength=7)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3
    fixed = sample_hmc(d, init=torch.zeros(2), n_chains=4, n_warmup=50, n_draws=20,
                       n_leapfrog=6, jitter=False, seed=3, progress=False)
    assert (fixed.sample_stats["n_steps"] == 6).all()


@pytest.mark.slow
def test_hmc_recovers_correlated_gaussian_10d():
    density, mean, cov = correlated_gaussian()
    rough = GaussianApproximation(mean, torch.diag(cov.diagonal()), density.names)
    s = sample_hmc(density, init=rough, n_chains=16, n_warmup=200, n_draws=600, seed=4,
                   mass="dense", progress=False)
    assert s.info["n_divergent"] == 0
    assert_recovers(s, mean, cov)
    assert np.isfinite(s.info["trajectory_length"]).all()


def test_hmc_rejects_non_positive_trajectory_lengths():
    d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)
    for kw, match in ((dict(n_leapfrog=0), "n_leapfrog"), (dict(n_leapfrog=-3), "n_leapfrog"),
                      (dict(max_leapfrog=0), "max_leapfrog")):
        with pytest.raises(ValueError, match=match):
            sample_hmc(d, init=torch.zeros(2), n_warmup=5, n_draws=5, progress=False, **kw)
