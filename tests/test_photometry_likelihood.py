"""Photometric likelihoods (flux, magnitude, Student-t, censored limits, jitter) and the fitting
bugs of issue 18: each test states the behaviour that the old code got wrong."""

import math
import warnings

import caskade as ck
import pytest
import torch
from scipy import integrate, stats

import skyfit
from skyfit import (
    Bazin,
    GaussianLightCurve,
    PhotometryLikelihood,
    Posterior,
    fit_map,
)
from skyfit.data import Photometry
from skyfit.errors import ConvergenceWarning, DataError, ShapeError
from skyfit.inference import FunctionDensity
from skyfit.likelihoods import censored_log_likelihood

T = torch.linspace(-10.0, 20.0, 16, dtype=torch.float64)


def _bump(**kw) -> GaussianLightCurve:
    return GaussianLightCurve(t0=2.0, sigma=5.0, peak_flux=100.0, **kw)


def test_gaussian_flux_likelihood_is_the_analytic_sum():
    lc = _bump()
    flux = lc.flux(T).detach() + torch.linspace(-1, 1, 16, dtype=torch.float64)
    err = torch.full((16,), 0.7, dtype=torch.float64)
    like = PhotometryLikelihood(lc, T, flux, err)
    expected = stats.norm.logpdf(flux.numpy(), lc.flux(T).detach().numpy(), 0.7).sum()
    assert like().item() == pytest.approx(expected, rel=1e-12)


def test_magnitude_and_flux_likelihoods_agree_at_high_signal_to_noise():
    lc = _bump()
    model = lc.flux(T).detach()
    noise = 1e-3 * torch.sin(torch.arange(16.0, dtype=torch.float64)) * model
    phot = Photometry(T, flux=model + noise, flux_err=1e-3 * model)
    in_flux = PhotometryLikelihood(lc, phot)
    in_mag = PhotometryLikelihood(lc, phot, space="mag")
    assert in_mag.chi2().item() == pytest.approx(in_flux.chi2().item(), rel=2e-3)
    # the densities differ by the Jacobian |dF/dm| = F ln10 / 2.5 of each point
    jacobian = torch.log(phot.flux * math.log(10) / 2.5).sum().item()
    assert in_mag().item() == pytest.approx(in_flux().item() + jacobian, abs=0.05)


def test_student_t_likelihood_matches_scipy():
    lc = _bump()
    flux = lc.flux(T).detach() + 3.0 * torch.cos(T)
    like = PhotometryLikelihood(lc, T, flux, torch.full((16,), 2.0), noise="student_t", dof=3.0)
    expected = stats.t.logpdf(flux.numpy(), 3.0, lc.flux(T).detach().numpy(), 2.0).sum()
    assert like().item() == pytest.approx(expected, rel=1e-12)


def test_censored_term_is_the_integral_of_the_measurement_density_below_the_limit():
    for limit, model, sigma in [(5.0, 2.0, 1.5), (1.0, 8.0, 2.0), (10.0, 10.0, 0.3)]:
        integral, _ = integrate.quad(lambda f, m=model, s=sigma: stats.norm.pdf(f, m, s),
                                      -math.inf, limit)
        term = censored_log_likelihood(*torch.tensor([limit, model, sigma], dtype=torch.float64))
        assert term.item() == pytest.approx(math.log(integral), rel=1e-8)
    # far below the model: finite, as torch's log_ndtr (which cannot be vmapped), not log(0)
    x = torch.linspace(-60.0, 8.0, 69, dtype=torch.float64)
    term = censored_log_likelihood(x, torch.zeros(()), torch.ones(()))
    assert torch.allclose(term, torch.special.log_ndtr(x), rtol=1e-12, atol=1e-300)


def test_upper_limits_enter_as_censored_terms():
    lc = _bump()
    phot = Photometry([0.0, 30.0], flux=[lc.flux(torch.tensor(0.0)).item(), math.nan],
                      flux_err=[1.0, 2.0], limit=[math.nan, 5.0])
    like = PhotometryLikelihood(lc, phot)
    model = lc.flux(torch.tensor([0.0, 30.0], dtype=torch.float64)).detach()
    expected = stats.norm.logpdf(0.0, 0.0, 1.0) + stats.norm.logcdf(5.0, model[1].item(), 2.0)
    assert like().item() == pytest.approx(expected, rel=1e-12)


def test_jitter_per_band_adds_in_quadrature_and_is_fitted():
    lc = _bump(bands=("g", "r"))
    band = torch.arange(16) % 2
    flux = lc.flux(T, band=band).detach()
    like = PhotometryLikelihood(lc, T, flux + 1.0, torch.ones(16), band=band, jitter=True)
    assert like.jitter.dynamic and like.jitter.shape == (2,)
    value = like(jitter=torch.tensor([0.5, 2.0], dtype=torch.float64)).item()
    sd = [math.sqrt(1.25) if b == 0 else math.sqrt(5.0) for b in band.tolist()]
    assert value == pytest.approx(stats.norm.logpdf(1.0, 0.0, sd).sum(), rel=1e-12)
    assert "PhotometryLikelihood.jitter[1]" in Posterior(like).names[-1]


def test_mask_leaves_rows_out_even_when_they_are_nan():
    lc = _bump()
    flux = lc.flux(T).detach().clone()
    flux[3] = math.nan
    keep = torch.ones(16, dtype=torch.bool)
    keep[3] = False
    masked = PhotometryLikelihood(lc, T, flux, torch.ones(16), mask=keep)
    dropped = PhotometryLikelihood(lc, T[keep], flux[keep], torch.ones(15))
    assert masked().item() == pytest.approx(dropped().item(), rel=1e-14)
    with pytest.raises(DataError, match=r"mask=") as err:  # the advice names an existing option
        PhotometryLikelihood(lc, T, flux, torch.ones(16))
    assert "rows [3]" in str(err.value)


def test_gaussian_image_likelihood_accepts_nan_in_masked_pixels():
    scene = skyfit.Scene(skyfit.PixelGrid((8, 8), 0.1, dtype=torch.float64),
                         [skyfit.Gaussian(flux=1.0)])
    data = scene().detach().clone()
    data[0, 0] = math.nan
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[0, 0] = False
    like = skyfit.GaussianLikelihood(scene, data, variance=torch.full((8, 8), 0.01), mask=mask)
    assert torch.isfinite(like())


def test_model_shape_mismatch_is_an_error_not_a_silent_broadcast():
    # batched parameters with (n, m) times used to broadcast to (n, n, m) and sum to a wrong log L
    lc = GaussianLightCurve(t0=torch.zeros(3, dtype=torch.float64), sigma=2.0, peak_flux=1.0)
    times = torch.linspace(-3, 3, 12, dtype=torch.float64).reshape(3, 4)
    like = PhotometryLikelihood(lc, times.reshape(-1), torch.ones(12), torch.ones(12))
    with pytest.raises(ShapeError, match="one flux per row"):
        like()


def test_pandas_series_and_string_arrays_are_accepted_as_arrays():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(dict(t=T.numpy(), band=["g", "r"] * 8, f=torch.ones(16).numpy()))
    part = frame[frame.t > 0]  # index starts at 11: a positional read, not a label lookup
    lc = _bump(bands=("g", "r"))
    like = PhotometryLikelihood(lc, part.t, part.f, part.f, band=part.band)
    assert like.band.tolist() == [1 if b == "r" else 0 for b in part.band]
    assert torch.isfinite(like())


def test_unknown_bands_are_listed_once_each():
    lc = _bump(bands=("g", "r"))
    with pytest.raises(ValueError) as err:
        lc.band_index(["g"] * 40 + ["y"] * 57)
    assert "['y']" in str(err.value)


def test_a_prior_module_may_be_named_pop():
    class Pop(ck.Module):
        def __init__(self, lc):
            super().__init__("pop")
            self.lc = lc

        @ck.forward
        def log_prior(self):
            return -0.5 * (self.lc.t0.value - 1.0) ** 2

    lc = _bump()
    like = PhotometryLikelihood(lc, T, lc.flux(T).detach(), torch.ones(16))
    lc.t0.to_dynamic()
    like.population = Pop(lc)
    post = Posterior(like)
    x = torch.tensor([2.0], dtype=torch.float64)
    assert post(x).item() == pytest.approx(like().item() - 0.5)


def test_trust_exact_rejects_a_step_that_leaves_the_bounds():
    # Gamma(3, 1) on x > 0, mode 2: from x = 30 the Newton step lands below 0
    d = FunctionDensity(lambda x: (2 * torch.log(x) - x).sum(-1), 1, lower=0.0)
    res = fit_map(d, torch.tensor([30.0], dtype=torch.float64), method="trust-exact")
    assert res.converged and res.x.item() == pytest.approx(2.0, rel=1e-6)


def test_an_underflowed_model_is_not_reported_converged():
    t = 59000.0 + torch.linspace(-20, 80, 40, dtype=torch.float64)  # raw MJD: exp underflows
    truth = Bazin(t0=59000.0, A=100.0, tau_rise=3.0, tau_fall=25.0, B=0.0)
    lc = Bazin()
    lc.to_dynamic()
    post = Posterior(PhotometryLikelihood(lc, t, truth.flux(t).detach(), torch.ones(40)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_map(post)
    assert not res.converged
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("underflow" in m and "Bazin.tau_rise" in m for m in messages)


def test_module_without_flux_is_refused_at_construction():
    # a Module whose __call__ returns the model (an RV curve): the AttributeError came at the
    # first evaluation, deep inside fit_map
    class Line(ck.Module):
        def __init__(self):
            super().__init__("line")
            self.slope = ck.Param("slope", 1.0)

        @ck.forward
        def __call__(self, slope=None):
            return slope * torch.arange(3.0)

    with pytest.raises(TypeError, match="Line has no flux.*GaussianLikelihood"):
        PhotometryLikelihood(Line(), torch.arange(3.0), torch.ones(3), torch.ones(3))
