"""Periodic parameters (angles): no wall in transforms, optimisers, samplers and summaries."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skyfit.inference import (
    FunctionDensity,
    UnconstrainedDensity,
    fit_map,
    laplace,
    sample_emcee,
    sample_nuts,
)

PI = math.pi
MU, KAPPA = 0.02, 20.0  # a von Mises in the doubled angle: sd ~ 0.11 rad, true angle near 0


def _angle_density(mu=MU, kappa=KAPPA):
    """Normalised von Mises of period pi on [0, pi): p(x) = exp(k cos 2(x - mu)) / (pi I0(k))."""
    def log_p(x):
        a = x[..., 0]
        return kappa * torch.cos(2 * (a - mu)) - math.log(PI * np.i0(kappa))
    return FunctionDensity(log_p, ["phi"], 0.0, PI, periodic=["phi"], initial=[1.0])


def _reference_cdf(mu=MU, kappa=KAPPA):
    grid = np.linspace(0.0, PI, 200001)
    pdf = np.exp(kappa * np.cos(2 * (grid - mu)))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return lambda x: np.interp(x, grid, cdf)


def test_transform_jacobian_matches_finite_differences():
    names = ["angle", "unit", "positive", "negative", "free"]
    lo = torch.tensor([0.0, 0.0, 1.0, -math.inf, -math.inf], dtype=torch.float64)
    hi = torch.tensor([PI, 1.0, math.inf, 2.0, math.inf], dtype=torch.float64)
    d = FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), names, lo, hi,
                        periodic=["angle"])
    u = UnconstrainedDensity(d)
    h = 1e-6
    for z in (torch.tensor([0.3, -1.2, 0.4, 0.7, -2.0]), torch.tensor([7.9, 2.5, -1.0, -0.3, 4.0]),
              torch.tensor([-11.0, 0.0, 2.0, 1.5, 0.0])):
        z = z.double()
        x = u.to_constrained(z)
        assert 0.0 <= x[0] < PI and bool(((x >= lo) & (x <= hi)).all())
        fd = (u.to_constrained(z + h) - u.to_constrained(z - h)) / (2 * h)
        # the periodic entry's Jacobian is 1; its extra term is the weak Normal on unwrapped z
        normal = stats.norm.logpdf(z[0].item(), PI / 2, 10 * PI) + math.log(PI)
        expected = float(torch.log(fd.abs()).sum()) + normal
        assert float(u.log_abs_det_jacobian(z)) == pytest.approx(expected, abs=1e-6)
        # round trip: to_unconstrained(x) lands on the same x (z up to whole periods)
        assert torch.allclose(u.to_constrained(u.to_unconstrained(x)), x, atol=1e-9)


def test_unconstrained_density_of_an_angle_is_proper_and_wraps_to_p():
    u = UnconstrainedDensity(_angle_density())
    z = torch.linspace(-60 * PI, 60 * PI, 2_000_001, dtype=torch.float64)[:, None]
    p = u.log_prob(z).exp()
    dz = float(z[1, 0] - z[0, 0])
    assert float(p.sum() * dz) == pytest.approx(1.0, abs=1e-6)
    # the density of wrap(z) is p(x): the mass in [0, 0.1) against the analytic CDF
    x = u.to_constrained(z)[:, 0]
    mass = float(p[x < 0.1].sum() * dz)
    assert mass == pytest.approx(_reference_cdf()(0.1), abs=3e-4)  # grid step 2e-4


def test_nuts_marginal_of_an_angle_near_zero_is_wrapped():
    s = sample_nuts(_angle_density(), n_chains=4, n_warmup=500, n_draws=1000, seed=1,
                    progress=False)
    draws = s["phi"][:, ::4].ravel()
    assert draws.min() >= 0.0 and draws.max() < PI
    # the true angle is 0.02: about 43% of the mass lies just below pi
    assert 0.3 < np.mean(draws > PI / 2) < 0.55
    assert stats.kstest(draws, _reference_cdf()).pvalue > 0.01
    # circular summary: mean near 0.02 (not pi/2), sd near the wrapped-normal 0.113
    table = s.summary(warn=False)
    mean = float(table.loc["phi", "mean"])
    assert min(abs(mean - MU), abs(mean - MU - PI)) < 0.02
    assert float(table.loc["phi", "sd"]) == pytest.approx(0.113, abs=0.015)


def _angle_and_offset_density():
    """The von Mises angle times an independent N(1, 0.5^2) offset (ensemble moves need two
    dimensions)."""
    angle = _angle_density()

    def log_p(x):
        return angle.log_prob(x[..., :1]) - 0.5 * ((x[..., 1] - 1.0) / 0.5) ** 2
    return FunctionDensity(log_p, ["phi", "offset"], [0.0, -math.inf], [PI, math.inf],
                           periodic=["phi"], initial=[1.0, 0.0])


def test_emcee_marginal_of_an_angle_near_zero_is_wrapped():
    # walkers start at 0.02, at the very edge of the range: on a wall half of them would be
    # stuck and the mass just below pi (43%) would be missed
    s = sample_emcee(_angle_and_offset_density(), init=torch.tensor([MU, 1.0]), n_steps=3000,
                     n_burn=1000, seed=3, progress=False)
    draws = s["phi"][:, ::20].ravel()  # thinned to roughly independent draws (tau ~ 20 steps)
    assert draws.min() >= 0.0 and draws.max() < PI
    assert 0.3 < np.mean(draws > PI / 2) < 0.55
    assert stats.kstest(draws, _reference_cdf()).pvalue > 0.01
    offset = s["offset"][:, ::20].ravel()
    assert stats.kstest(offset, stats.norm(1.0, 0.5).cdf).pvalue > 0.01
    # the stored log-density is the density's own at the wrapped draws (no line weight)
    d = _angle_and_offset_density()
    logp = d.log_prob(torch.as_tensor(s.draws[:2, -5:])).numpy()
    assert np.allclose(s.log_density[:2, -5:], logp, atol=1e-10)
    table = s.summary(warn=False)
    mean = float(table.loc["phi", "mean"])
    assert min(abs(mean - MU), abs(mean - MU - PI)) < 0.02
    assert float(table.loc["phi", "sd"]) == pytest.approx(0.113, abs=0.015)


@pytest.mark.parametrize("start", [0.5, 1.6, 2.9, 3.1])
def test_fits_from_any_start_agree_and_are_wrapped(start):
    d = _angle_density()
    res = fit_map(d, torch.tensor([start], dtype=torch.float64))
    assert res.converged, res.reason
    assert 0.0 <= res.x[0] < PI
    assert float(res.x[0]) == pytest.approx(MU, abs=1e-6)


def test_laplace_of_an_angle_reports_wrapped_draws_and_circular_summary():
    d = _angle_density()
    lap = laplace(d, fit_map(d, torch.tensor([2.9], dtype=torch.float64)))
    assert float(lap.mean[0]) == pytest.approx(MU, abs=1e-6)
    s = lap.sample(4000, seed=0)
    assert s.draws.min() >= 0.0 and s.draws.max() < PI
    assert float(s.mean()[0]) == pytest.approx(MU, abs=0.01)
    assert float(s.std()[0]) == pytest.approx(float(lap.std[0]), rel=0.05)
