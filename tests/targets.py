"""Toy target densities shared by the sampler tests."""

import numpy as np
import torch

from skyfit.inference import FunctionDensity


def ar_gaussian(dim=10, rho=0.9):
    """N(mu, C) with C_ij = s_i s_j rho^|i-j| and scales s from 0.1 to 10; returns
    ``(density, mu, cov)`` with numpy ``mu`` and ``cov``."""
    idx = torch.arange(dim)
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)
    cov = scales[:, None] * scales[None] * rho ** (idx[:, None] - idx[None]).abs()
    mu = torch.linspace(-2, 2, dim, dtype=torch.float64) * scales
    prec = torch.linalg.inv(cov)
    density = FunctionDensity(lambda x: -0.5 * (((x - mu) @ prec) * (x - mu)).sum(-1), dim)
    return density, mu.numpy(), cov.numpy()


def flat_bounded():
    """A flat density on ``u`` in [2, 5]: any correct sampler draws it uniformly."""
    return FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), ["u"], 2.0, 5.0)


def correlated_gaussian(dim=10, rho=0.9):
    """AR(rho) correlation, standard deviations log-spaced from 0.1 to 10, means 0..dim-1."""
    i = torch.arange(dim, dtype=torch.float64)
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)
    cov = rho ** (i[:, None] - i[None, :]).abs() * scales[:, None] * scales[None, :]
    prec = torch.linalg.inv(cov)
    mean = i.clone()

    def logp(x):
        r = x - mean
        return -0.5 * ((r @ prec) * r).sum(-1)

    return FunctionDensity(logp, dim), mean, cov


def assert_recovers(samples, mean, cov):
    """Means within 4 Monte Carlo standard errors (ArviZ), standard deviations within 3%."""
    import arviz as az

    x = samples.draws
    sd = cov.diagonal().sqrt().numpy()
    err = x.reshape(-1, x.shape[-1]).mean(0) - mean.numpy()
    mcse = az.mcse(az.convert_to_dataset(x), method="mean")["x"].values
    assert np.all(np.abs(err) < 4 * mcse), (err, mcse)
    ratio = x.reshape(-1, x.shape[-1]).std(0) / sd
    assert np.all(np.abs(ratio - 1) < 0.03), ratio
