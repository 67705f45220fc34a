"""Likelihoods: analytic values, Poisson against scipy, photometry, and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import skyfit
from skyfit.errors import DataError, ShapeError


def small_scene(flux=3.0):
    grid = skyfit.PixelGrid((12, 12), 0.1, supersample=2)
    src = skyfit.Gaussian("src", sigma=0.2, flux=flux)
    return skyfit.Scene(grid, [src], name="scene"), src


def test_gaussian_likelihood_equals_sum_of_normal_log_densities():
    scene, _ = small_scene()
    model = scene().detach()
    g = torch.Generator().manual_seed(0)
    var = 0.01 + 0.05 * torch.rand(model.shape, generator=g, dtype=torch.float64)
    data = model + var.sqrt() * torch.randn(model.shape, generator=g, dtype=torch.float64)
    like = skyfit.GaussianLikelihood(scene, data, variance=var)
    expected = stats.norm(model.numpy(), np.sqrt(var.numpy())).logpdf(data.numpy()).sum()
    assert like().item() == pytest.approx(expected, rel=1e-12)


def test_gaussian_likelihood_with_noise_model_uses_model_variance():
    scene, _ = small_scene()
    model = scene().detach()
    noise = skyfit.ReadPoissonNoise(exposure_time=10.0, read_noise=3.0)
    data = noise.sample(model, torch.Generator().manual_seed(1))
    var = model / 10.0 + (3.0 / 10.0) ** 2
    like = skyfit.GaussianLikelihood(scene, data, noise=noise)
    expected = stats.norm(model.numpy(), np.sqrt(var.numpy())).logpdf(data.numpy()).sum()
    assert like().item() == pytest.approx(expected, rel=1e-12)


def test_mask_drops_pixels():
    scene, _ = small_scene()
    model = scene().detach()
    data = model + 0.1
    var = torch.full_like(model, 0.04)
    mask = torch.zeros_like(model, dtype=torch.bool)
    mask[:6] = True
    full = skyfit.GaussianLikelihood(scene, data, variance=var)()
    half = skyfit.GaussianLikelihood(scene, data, variance=var, mask=mask)()
    per_pixel = -0.5 * (0.1**2 / 0.04 + math.log(2 * math.pi * 0.04))
    assert full.item() == pytest.approx(per_pixel * 144, rel=1e-12)
    assert half.item() == pytest.approx(per_pixel * 72, rel=1e-12)


def test_poisson_likelihood_matches_scipy():
    scene, _ = small_scene(flux=50.0)
    rate = scene().detach()
    counts = torch.poisson(rate * 4.0, generator=torch.Generator().manual_seed(2))
    like = skyfit.PoissonLikelihood(scene, counts, exposure_time=4.0)
    expected = stats.poisson(rate.numpy() * 4.0).logpmf(counts.numpy()).sum()
    assert like().item() == pytest.approx(expected, rel=1e-10)


def test_photometry_likelihood_value():
    lc = skyfit.GaussianLightCurve(t0=1.0, sigma=3.0, peak_flux=10.0)
    t = torch.linspace(-5, 8, 9, dtype=torch.float64)
    f = lc.flux(t).detach() + 0.3
    err = torch.full_like(t, 0.5)
    like = skyfit.PhotometryLikelihood(lc, t, f, err)
    expected = stats.norm(f.numpy() - 0.3, 0.5).logpdf(f.numpy()).sum()
    assert like().item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data_is_rejected(bad):
    scene, _ = small_scene()
    data = scene().detach().clone()
    data[3, 4] = bad
    with pytest.raises(DataError, match="NaN or inf"):
        skyfit.GaussianLikelihood(scene, data, variance=torch.ones_like(data))


def test_non_finite_or_non_positive_variance_is_rejected():
    scene, _ = small_scene()
    data = scene().detach()
    var = torch.ones_like(data)
    var[0, 0] = float("inf")
    with pytest.raises(DataError, match="variance"):
        skyfit.GaussianLikelihood(scene, data, variance=var)
    var[0, 0] = 0.0
    with pytest.raises(DataError, match="positive"):
        skyfit.GaussianLikelihood(scene, data, variance=var)


def test_shape_mismatch_is_reported():
    scene, _ = small_scene()
    like = skyfit.GaussianLikelihood(scene, torch.zeros(10, 12, dtype=torch.float64),
                                     variance=torch.ones(10, 12))
    with pytest.raises(ShapeError, match=r"\(12, 12\).*\(10, 12\)"):
        like()
    with pytest.raises(ShapeError, match="mask"):
        skyfit.GaussianLikelihood(scene, torch.zeros(12, 12), variance=torch.ones(12, 12),
                                  mask=torch.ones(3, 3, dtype=torch.bool))


def test_photometry_rejects_non_positive_errors():
    lc = skyfit.GaussianLightCurve(t0=0.0, sigma=1.0, peak_flux=1.0)
    with pytest.raises(DataError, match="flux_err must be positive"):
        skyfit.PhotometryLikelihood(lc, torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 0, 1]))
    with pytest.raises(ShapeError):
        skyfit.PhotometryLikelihood(lc, torch.zeros(3), torch.zeros(4), torch.ones(3))


def test_poisson_likelihood_with_sky_and_mask_matches_scipy():
    grid = skyfit.PixelGrid((12, 12), 0.1, supersample=2)
    scene = skyfit.Scene(grid, [skyfit.Gaussian(sigma=0.2, flux=50.0)])
    m = scene().detach()
    t, sky = 4.0, 0.7
    counts = torch.poisson((m + sky) * t, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[:, :7] = True
    like = skyfit.PoissonLikelihood(scene, counts, exposure_time=t, sky=sky, mask=mask)
    expected = stats.poisson(((m + sky) * t).numpy()).logpmf(counts.numpy())[mask.numpy()].sum()
    assert like().item() == pytest.approx(expected, rel=1e-10)
    for bad in (dict(counts=-counts - 1), dict(counts=counts + 0.5),
                dict(counts=counts, exposure_time=0.0)):
        with pytest.raises(DataError):
            skyfit.PoissonLikelihood(scene, **bad)


def test_poisson_likelihood_in_float32_with_empty_pixels_is_finite():
    # pixels whose model underflows to 0: 1e-300 is 0 in float32, and 0 log 0 must be 0
    grid = skyfit.PixelGrid((8, 8), 0.1, dtype=torch.float32)
    scene = skyfit.Scene(grid, [skyfit.Gaussian(sigma=torch.tensor(0.02), flux=torch.tensor(1.0))])
    assert (scene() == 0).any()
    counts = torch.zeros(8, 8)
    counts[4, 4] = 1
    value = skyfit.PoissonLikelihood(scene, counts)()
    assert torch.isfinite(value)
    m = scene().double()
    expected = stats.poisson(m.numpy()).logpmf(counts.numpy())
    assert value.item() == pytest.approx(np.where(np.isfinite(expected), expected, 0).sum(),
                                         rel=1e-5)


def test_noise_model_with_sky_but_no_read_noise_is_accepted():
    scene = skyfit.Scene(skyfit.PixelGrid((8, 8), 0.1), [skyfit.Gaussian(sigma=0.2, flux=3.0)])
    noise = skyfit.ReadPoissonNoise(exposure_time=10.0, read_noise=0.0, sky=5.0)
    model = scene().detach()
    like = skyfit.GaussianLikelihood(scene, model, noise=noise)
    # a perfect model: only the normalisation, with the variance (model + sky) / t of each pixel
    expected = -0.5 * torch.log(2 * math.pi * (model + 5.0) / 10.0).sum()
    assert like().item() == pytest.approx(expected.item(), rel=1e-12)


def test_noise_model_without_read_noise_is_rejected():
    scene, _ = small_scene()
    with pytest.raises(DataError, match="read_noise"):
        skyfit.GaussianLikelihood(scene, scene().detach(),
                                  noise=skyfit.ReadPoissonNoise(exposure_time=1.0, read_noise=0.0))


def test_noise_parameters_with_a_batch_are_refused_not_summed():
    grid = skyfit.PixelGrid((8, 6), 0.1, dtype=torch.float64)
    scene = skyfit.Scene(grid, [skyfit.Gaussian(flux=1.0, sigma=0.2)])
    noise = skyfit.ReadPoissonNoise(exposure_time=100.0, read_noise=3.0,
                                    sky=torch.tensor([[[0.5]], [[1.0]], [[2.0]]]))
    like = skyfit.GaussianLikelihood(scene, scene().detach(), noise=noise)
    with pytest.raises(ShapeError, match="noise parameters must not add batch"):
        like()


def test_noise_variance_below_minus_sky_is_the_read_noise_exactly_in_float32():
    # the clamp must act before the sky is added back: cancelling -sky/t + sky/t in float32 left
    # 0 where the variance is the (tiny) read-noise term
    noise = skyfit.ReadPoissonNoise(exposure_time=torch.tensor(1.0), read_noise=torch.tensor(1e-3),
                                    sky=torch.tensor(100.0))
    var = noise.variance(torch.tensor([-201.0, 5.0]))
    assert var.dtype == torch.float32
    assert var[0].item() == pytest.approx(1e-6, rel=1e-6)
    assert var[1].item() == pytest.approx(105.0 + 1e-6, rel=1e-6)
