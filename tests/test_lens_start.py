"""The data-driven start of lens image fits (scenes/lens_start.py) and fit_map's candidates."""

import math
import warnings

import pytest
import torch

import skyfit
from skyfit.errors import ConvergenceWarning
from skyfit.inference import FunctionDensity, fit_map
from skyfit.inference.initialization import resolve_point
from skyfit.lens_start import init_to_lensed_image
from skyfit.scenes.lens_start import lensed_image_start


def _vec(*v):
    return torch.tensor(v, dtype=torch.float64)


def _lens(theta_e, src_xy=(0.05, 0.03), noise=0.03, seed=0, shape=(60, 60), scale=0.05):
    """A noisy SIE + shear image of a Sersic source and a posterior with all 12 parameters
    free, its truth set as the model's values."""
    grid = skyfit.PixelGrid(shape, scale, supersample=2)
    lens = skyfit.SIE("lens", theta_E=theta_e, q=0.75, phi=0.6)
    shear = skyfit.ExternalShear("shear", gamma1=0.03, gamma2=-0.02)
    src = skyfit.Sersic("src", x0=src_xy[0], y0=src_xy[1], q=0.7, phi=1.2, n=1.5, Re=0.15,
                        flux=3.0)
    sim = skyfit.LensedImage(grid, skyfit.CompositeLens([lens, shear]), [src],
                             psf=skyfit.GaussianPSF(sigma=0.1, size=7))
    with torch.no_grad():
        image = sim() + noise * torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                                            dtype=torch.float64)
    for p in (lens.theta_E, lens.q, lens.phi, shear.gamma1, shear.gamma2, src):
        p.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(sim, image, variance=noise**2))
    return sim, image, post, (lens, shear, src)


@pytest.mark.parametrize("theta_e", [0.8, 1.1, 1.5])
def test_start_lands_near_the_true_einstein_radius_and_source(theta_e):
    sim, image, post, (lens, _, src) = _lens(theta_e)
    values, _ = lensed_image_start(sim, image, variance=0.03**2)
    assert values[lens.theta_E] == pytest.approx(theta_e, rel=0.08)
    # the source is behind the lens, near its true position (0.05, 0.03)
    assert math.hypot(values[src.x0] - 0.05, values[src.y0] - 0.03) < 0.1
    # without the variance the noise is estimated from the image: the same radius
    guessed, _ = lensed_image_start(sim, image)
    assert guessed[lens.theta_E] == pytest.approx(values[lens.theta_E], rel=0.02)
    # the strategy's source size and flux (chosen by likelihood): within 2x of Re 0.15, flux 3
    x = dict(zip(post.names, resolve_point(post, init_to_lensed_image(sim, image, 0.03**2))
                 .tolist()))
    assert 0.075 < x["src.Re"] < 0.3 and 1.5 < x["src.flux"] < 6.0


def test_strategy_sets_every_parameter_of_sie_shear_sersic():
    sim, image, post, _ = _lens(1.1)
    strategy = init_to_lensed_image(sim, image, variance=0.03**2)
    x_truth_model = resolve_point(post, strategy)
    post.set(0.5 * (post.lower.clamp_min(-1) + post.upper.clamp_max(5)))  # other model values
    x_other_model = resolve_point(post, strategy)
    # the start depends on the image only: nothing comes from the model's current values
    assert torch.equal(x_truth_model, x_other_model)
    names = dict(zip(post.names, x_truth_model.tolist()))
    assert names["shear.gamma1"] == 0.0 and names["shear.gamma2"] == 0.0
    assert names["lens.q"] == names["src.q"] == 0.9


def test_flux_is_solved_exactly_when_it_is_the_only_unknown():
    # noiseless image, every other parameter at the truth: the parabola in the flux is exact
    grid = skyfit.PixelGrid((40, 40), 0.06, supersample=2)
    src = skyfit.Sersic("src", Re=0.12, flux=4.2, n=2.0)
    sim = skyfit.LensedImage(grid, skyfit.SIE("lens", theta_E=0.9, q=0.8), [src])
    image = sim().detach()
    src.flux.to_dynamic()
    src.flux.value = 1.0
    post = skyfit.Posterior(skyfit.GaussianLikelihood(sim, image, variance=1e-4))
    x = resolve_point(post, init_to_lensed_image(sim, image, 1e-4))
    assert float(x[0]) == pytest.approx(4.2, rel=1e-8)


def test_refusals():
    sim, image, post, _ = _lens(1.1)
    noise = 0.03 * torch.randn(60, 60, generator=torch.Generator().manual_seed(3),
                               dtype=torch.float64)
    with pytest.raises(ValueError, match="no lensed light"):
        lensed_image_start(sim, noise, variance=0.03**2)
    with pytest.raises(TypeError, match="LensedImage"):
        init_to_lensed_image(sim.scene, image)
    with pytest.raises(TypeError, match="Posterior"):
        resolve_point(FunctionDensity(lambda x: -(x**2).sum(-1), post.dim),
                      init_to_lensed_image(sim, image))


def _two_peaks():
    # the better peak at x = +3 (log height 0), the worse at x = -3 (log height -1), in [-10, 10]
    def log_p(x):
        return torch.logsumexp(torch.stack([-0.5 * ((x - 3) ** 2).sum(-1) / 0.25,
                                            -0.5 * ((x + 3) ** 2).sum(-1) / 0.25 - 1.0]), 0)
    return FunctionDensity(log_p, ["a"], -10.0, 10.0)


def test_candidates_are_fitted_beside_the_start_and_the_best_is_kept():
    single = fit_map(_two_peaks(), _vec(-4.0))  # alone: the worse peak
    assert float(single.x[0]) == pytest.approx(-3.0, abs=1e-6)
    res = fit_map(_two_peaks(), _vec(-4.0), candidates=[_vec(2.0)])
    assert res.converged and float(res.x[0]) == pytest.approx(3.0, abs=1e-6)
    assert res.n_evals > single.n_evals  # the work of both fits is counted
    # a candidate in the worse basin never makes the result worse than the start alone
    res = fit_map(_two_peaks(), _vec(2.0), candidates=[{"a": -4.0}])
    assert float(res.x[0]) == pytest.approx(3.0, abs=1e-6)


def test_only_the_kept_fits_warnings_are_shown():
    # a peak at +3 (log p 0) and a ramp down to the lower bound -10 (log p -10 there): x0's fit
    # ends pinned at -10 (not converged, warned), the candidate's converges on the peak
    def log_p(x):
        return torch.logsumexp(torch.stack([-0.5 * ((x - 3) ** 2).sum(-1) / 0.25,
                                            -x.sum(-1) - 20.0]), 0)
    d = FunctionDensity(log_p, ["a"], -10.0, 10.0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        alone = fit_map(d, _vec(-9.0), retries=0)
    assert not alone.converged and any(w.category is ConvergenceWarning for w in rec)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = fit_map(d, _vec(-9.0), retries=0, candidates=[_vec(2.5)])
    assert res.converged and float(res.x[0]) == pytest.approx(3.0, abs=1e-6)
    assert not any(w.category is ConvergenceWarning for w in rec)


def test_a_candidate_where_the_density_is_not_finite_is_refused():
    from skyfit.errors import LogDensityError
    d = FunctionDensity(lambda x: torch.where(x[..., 0] < 5, -(x**2).sum(-1), torch.nan),
                        ["a"], -10.0, 10.0)
    with pytest.raises(LogDensityError, match="start"):
        fit_map(d, _vec(1.0), candidates=[_vec(7.0)])
