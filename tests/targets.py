"""Toy target densities shared by the sampler tests."""

import numpy as np
import torch

from skyfit.inference import FunctionDensity


def correlated_gaussian(dim=10, rho=0.9, mean=None):
    """N(mean, C) with C_ij = s_i s_j rho^|i-j|, standard deviations s log-spaced from 0.1 to 10
    and means 0..dim-1 unless given; returns ``(density, mean, cov)`` as torch tensors."""
    i = torch.arange(dim, dtype=torch.float64)
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)
    cov = rho ** (i[:, None] - i[None, :]).abs() * scales[:, None] * scales[None, :]
    prec = torch.linalg.inv(cov)
    mean = i.clone() if mean is None else mean

    def logp(x):
        r = x - mean
        return -0.5 * ((r @ prec) * r).sum(-1)

    return FunctionDensity(logp, dim), mean, cov


def ar_gaussian(dim=10, rho=0.9):
    """:func:`correlated_gaussian` with means spread as the scales (-2 s_0 .. 2 s_{dim-1});
    ``(density, mean, cov)`` with numpy ``mean`` and ``cov``."""
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)
    mean = torch.linspace(-2, 2, dim, dtype=torch.float64) * scales
    density, mean, cov = correlated_gaussian(dim, rho, mean)
    return density, mean.numpy(), cov.numpy()


def flat_bounded():
    """A flat density on ``u`` in [2, 5]: any correct sampler draws it uniformly."""
    return FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), ["u"], 2.0, 5.0)


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
