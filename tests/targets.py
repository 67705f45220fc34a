"""Toy target densities shared by the sampler tests."""

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
