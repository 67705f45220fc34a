"""Amortised posterior of a light-curve simulator against NUTS on the same simulator, object by
object: 20 held-out light curves, posterior means within 0.2 sd and sds within 15%.

NUTS runs once on all 20 objects: a 20-"band" light curve whose bands are the objects, so the
60-parameter posterior is the product of the 20 independent ones and each object's marginal is
its own posterior (same sampler, one batched run)."""

import numpy as np
import pytest
import torch

from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior, sample_nuts
from skyfit.amortized import fit, simulate

F64 = dict(dtype=torch.float64)
N_OBJECTS = 20
VALID = {"t0": (-2.0, 2.0), "sigma": (1.5, 3.5), "peak_flux": (0.5, 2.0)}
TIME = torch.linspace(-8.0, 8.0, 15, **F64)
FLUX_ERR = 0.4


def light_curve(bands=None) -> GaussianLightCurve:
    lc = GaussianLightCurve(t0=0.0, sigma=2.5, peak_flux=1.0, bands=bands)
    for name, valid in VALID.items():
        getattr(lc, name).valid = valid
    lc.to_dynamic()
    return lc


def template() -> Posterior:
    """One object: uniform priors within VALID, photometry at TIME with FLUX_ERR."""
    return Posterior(PhotometryLikelihood(light_curve(), TIME, torch.zeros_like(TIME),
                                          torch.full_like(TIME, FLUX_ERR)))


def nuts_per_object(flux: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """NUTS draws ``(object, draw, 3)`` of every object's posterior, from one batched run."""
    n = flux.shape[0]
    lc = light_curve(bands=[f"object{i}" for i in range(n)])
    band = torch.arange(n).repeat_interleave(len(TIME))
    like = PhotometryLikelihood(lc, TIME.repeat(n), flux.reshape(-1),
                                torch.full((n * len(TIME),), FLUX_ERR, **F64), band=band)
    posterior = Posterior(like)
    init = torch.cat([truth[:, 0], truth[:, 1], truth[:, 2]])  # t0[all], sigma[all], peak[all]
    samples = sample_nuts(posterior, init=init, n_chains=2, n_warmup=300, n_draws=500, seed=1,
                          progress=False)
    draws = samples.flat().reshape(-1, 3, n)  # (draw, parameter, object)
    return np.transpose(draws, (2, 0, 1))


@pytest.mark.slow
def test_amortized_posterior_agrees_with_nuts_object_by_object():
    posterior = template()
    post = fit(posterior, n_train=10_000, kind="nsf", transforms=3, epochs=40, batch_size=512,
               lr=3e-3, embedding="lightcurve", embedding_hidden=(64, 64), features=16,
               progress=False, seed=0)
    held = simulate(posterior, N_OBJECTS, seed=2024, progress=False)
    reference = nuts_per_object(held.x, held.theta)
    draws, _ = post.draw(held.x, 4000, seed=3)
    flow = draws.permute(1, 0, 2).numpy()  # (object, draw, parameter)
    sd = reference.std(1)
    mean_error = (flow.mean(1) - reference.mean(1)) / sd
    sd_ratio = flow.std(1) / sd
    assert np.all(np.abs(mean_error) < 0.2), mean_error
    assert np.all(np.abs(sd_ratio - 1) < 0.15), sd_ratio
