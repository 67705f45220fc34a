"""sample_nuts_many on light curves (ManyObjects over PaddedPhotometry) against the
single-object sampler on the same posteriors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skyfit.inference import sample_nuts, sample_nuts_many


def gaussian_light_curve_posterior(time, flux, flux_err):
    from skyfit import GaussianLightCurve, Posterior
    from skyfit.survey import PaddedPhotometry

    lc = GaussianLightCurve(t0=0.0, sigma=4.0, peak_flux=50.0)
    lc.to_dynamic()
    return Posterior(PaddedPhotometry(lc, time, flux, flux_err))


@pytest.mark.slow  # four NUTS runs of three light-curve objects
def test_light_curves_agree_with_single_object_nuts():
    from skyfit.lightcurves.functions import gaussian_light_curve
    from skyfit.survey import ManyObjects

    rng = np.random.default_rng(2)
    truth = np.column_stack([rng.uniform(-5, 5, 3), rng.uniform(2, 6, 3), [20.0, 60.0, 200.0]])
    time = np.tile(np.linspace(-20, 20, 25), (3, 1))
    err = np.full_like(time, 3.0)
    model = gaussian_light_curve(torch.as_tensor(time), *torch.as_tensor(truth).T[:, :, None])
    data = dict(time=time, flux=model.numpy() + err * rng.standard_normal(time.shape),
                flux_err=err)
    many = ManyObjects(gaussian_light_curve_posterior, data)
    start = torch.as_tensor(truth)
    batched = sample_nuts_many(many, start, n_chains=4, n_warmup=200, n_draws=250, seed=0)
    assert (batched.rhat < 1.05).all() and int(batched.extra["n_divergent"].sum()) == 0
    for i in range(3):
        post = gaussian_light_curve_posterior(**{k: v[i] for k, v in data.items()})
        single = sample_nuts(post, init=start[i], n_chains=4, n_warmup=200, n_draws=250,
                             seed=5, progress=False)
        flat = single.draws.reshape(-1, 3)
        sd = flat.std(0)
        # two independent runs: the means differ by their combined Monte-Carlo error
        se = sd * np.sqrt(1 / batched.ess[i] + 1 / single.ess())
        assert (np.abs(batched.x[i].numpy() - flat.mean(0)) < 5 * se).all(), i
        np.testing.assert_allclose(batched.std[i].numpy(), sd, rtol=0.25)
