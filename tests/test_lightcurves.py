"""Light curves: analytic peaks and limits, per-band shapes, gradients, and linked source fluxes."""

import math

import numpy as np
import pytest
import torch

from skyfit import (
    Bazin,
    GaussianLightCurve,
    PhotometryLikelihood,
    Villar,
)
from skyfit.errors import ShapeError

f64 = torch.float64


def dense(lo, hi, n=50_001):
    return torch.linspace(lo, hi, n, dtype=f64)


# --------------------------------------------------------------------------- Gaussian


def test_gaussian_light_curve_peaks_at_t0_with_peak_flux():
    lc = GaussianLightCurve(t0=3.5, sigma=2.0, peak_flux=0.25)
    t = dense(-20, 30)
    f = lc.flux(t)
    assert abs(t[f.argmax()].item() - 3.5) <= (t[1] - t[0]).item()
    assert lc.flux(torch.tensor(3.5, dtype=f64)).item() == pytest.approx(0.25, rel=1e-7)
    one_sigma = lc.flux(torch.tensor([1.5, 5.5], dtype=f64))
    torch.testing.assert_close(one_sigma, torch.full((2,), 0.25 * math.exp(-0.5), dtype=f64),
                               rtol=1e-7, atol=0)


# --------------------------------------------------------------------------- Bazin


def bazin_peak(t0, tau_rise, tau_fall):
    return t0 + tau_rise * math.log(tau_fall / tau_rise - 1)


def test_bazin_peaks_at_the_analytic_time_with_the_analytic_value():
    t0, A, tr, tf, B = 5.0, 3.0, 2.5, 18.0, 0.2
    lc = Bazin(t0=t0, A=A, tau_rise=tr, tau_fall=tf, B=B)
    tp = bazin_peak(t0, tr, tf)
    # at the peak 1 / (1 + e^{-x/tr}) = 1 - tr/tf and e^{-x/tf} = (tf/tr - 1)^(-tr/tf)
    expected = A * (1 - tr / tf) * (tf / tr - 1) ** (-tr / tf) + B
    t = dense(-30, 100)
    f = lc.flux(t)
    assert abs(t[f.argmax()].item() - tp) <= (t[1] - t[0]).item()
    tpk = torch.tensor(tp, dtype=f64, requires_grad=True)
    fp = lc.flux(tpk)
    assert fp.item() == pytest.approx(expected, rel=1e-12)
    assert f.max().item() == pytest.approx(expected, rel=1e-9)
    (slope,) = torch.autograd.grad(fp, tpk)
    assert abs(slope.item()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bazin_tends_to_baseline_far_before_and_after(dtype):
    lc = Bazin(t0=0.0, A=5.0, tau_rise=1.0, tau_fall=10.0, B=-0.3)
    t = torch.tensor([-2000.0, -300.0, 600.0, 5000.0], dtype=dtype)
    f = lc.flux(t)
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f, torch.full_like(f, -0.3), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- Villar


def villar_piecewise(t, t0, A, beta, gamma, tr, tf):
    """Villar et al. (2019) eq. 1 exactly as printed (numpy, independent of skyfit)."""
    t = np.asarray(t, dtype=float)
    t1 = t0 + gamma
    rise = 1 / (1 + np.exp(-(t - t0) / tr))
    plateau = (A + beta * (t - t0)) * rise
    decline = (A + beta * gamma) * np.exp(-(t - t1) / tf) * rise
    return np.where(t < t1, plateau, decline)


VILLAR = dict(t0=2.0, A=4.0, beta=-0.03, gamma=25.0, tau_rise=3.0, tau_fall=15.0)


def test_villar_is_continuous_at_the_plateau_end_with_the_piecewise_value():
    lc = Villar(**VILLAR)
    t1 = VILLAR["t0"] + VILLAR["gamma"]
    at_t1 = (VILLAR["A"] + VILLAR["beta"] * VILLAR["gamma"]) / (
        1 + math.exp(-VILLAR["gamma"] / VILLAR["tau_rise"])
    )
    assert lc.flux(torch.tensor(t1, dtype=f64)).item() == pytest.approx(at_t1, rel=1e-12)
    # no step: the difference across t1 shrinks like the derivative times the gap
    eps = 1e-5
    left, right = lc.flux(torch.tensor([t1 - eps, t1 + eps], dtype=f64)).tolist()
    t1_ = torch.tensor(t1, dtype=f64, requires_grad=True)
    (slope,) = torch.autograd.grad(lc.flux(t1_), t1_)
    assert (right - left) / (2 * eps) == pytest.approx(slope.item(), rel=1e-6)


def test_villar_equals_the_piecewise_model_away_from_the_plateau_end():
    lc = Villar(**VILLAR)
    t1 = VILLAR["t0"] + VILLAR["gamma"]
    # 20 transition widths (3 days) away the blend weight of the other piece is e^-20
    t = np.concatenate([np.linspace(-30, t1 - 60, 300), np.linspace(t1 + 60, 200, 300)])
    model = lc.flux(torch.tensor(t, dtype=f64)).numpy()
    truth = villar_piecewise(t, *VILLAR.values())
    np.testing.assert_allclose(model, truth, rtol=1e-6, atol=1e-14)


def test_villar_tends_to_the_piecewise_model_as_the_transition_narrows():
    t = np.linspace(-20, 150, 3401)
    truth = villar_piecewise(t, *VILLAR.values())
    errors = []
    for width in (3.0, 0.3, 0.003):
        model = Villar(**VILLAR, transition_width=width).flux(torch.tensor(t, dtype=f64)).numpy()
        errors.append(np.abs(model - truth).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3 * VILLAR["A"]


def test_villar_flat_plateau_peaks_at_its_end_with_the_rise_value():
    # beta = 0, gamma >> tau_rise: the flux rises to A s(t1) at the plateau end, then declines
    p = dict(t0=0.0, A=2.0, beta=0.0, gamma=12.0, tau_rise=4.0, tau_fall=20.0)
    lc = Villar(**p, transition_width=1e-3)
    t = dense(-20, 100)
    f = lc.flux(t)
    peak = p["A"] / (1 + math.exp(-p["gamma"] / p["tau_rise"]))
    assert f.max().item() == pytest.approx(peak, rel=1e-4)
    assert abs(t[f.argmax()].item() - p["gamma"]) < 0.05


def _relative_to_piecewise(fraction, params, t):
    model = Villar(**params, transition_fraction=fraction).flux(torch.tensor(t, dtype=f64))
    return model.numpy() / villar_piecewise(t, *params.values()) - 1


def test_villar_with_a_transition_fraction_keeps_its_stated_limits():
    # flat plateau, slow rise done long before t1: the corner alone; the docstring's bounds
    flat = dict(t0=0.0, A=4.0, beta=0.0, gamma=60.0, tau_rise=1.0, tau_fall=20.0)
    t1, t = 60.0, np.linspace(20.0, 140.0, 24_001)
    for fraction, stated in ((0.2, 0.062), (0.3, 0.099)):
        deviation = np.abs(np.log1p(_relative_to_piecewise(fraction, flat, t)))
        assert stated - 0.001 < deviation.max() < stated + 0.001
        far = np.abs(t - t1) > 10 * fraction * flat["tau_fall"]
        assert deviation[far].max() < 1e-3
    # with a sloped plateau and a rise (VILLAR), 10 widths away still within 0.1%
    width, t1 = 0.2 * VILLAR["tau_fall"], VILLAR["t0"] + VILLAR["gamma"]
    t = np.concatenate([np.linspace(0.0, t1 - 10 * width, 200), np.linspace(t1 + 10 * width,
                                                                            150.0, 200)])
    assert np.abs(_relative_to_piecewise(0.2, VILLAR, t)).max() < 1e-3


def test_villar_with_a_transition_fraction_has_a_continuous_derivative_at_the_plateau_end():
    t1 = VILLAR["t0"] + VILLAR["gamma"]
    h = 1e-4
    t = torch.arange(t1 - 5.0, t1 + 5.0, h, dtype=f64).requires_grad_(True)
    blended, sharp = (Villar(**VILLAR, **kw) for kw in (dict(transition_fraction=0.2),
                                                          dict(transition_width=1e-6)))
    slopes = [torch.autograd.grad(lc.flux(t).sum(), t)[0] for lc in (blended, sharp)]
    # the piecewise model's slope jumps at t1 from beta s to -(A + beta gamma) s / tau_fall
    s = 1 / (1 + math.exp(-VILLAR["gamma"] / VILLAR["tau_rise"]))
    kink = s * (VILLAR["beta"] + (VILLAR["A"] + VILLAR["beta"] * VILLAR["gamma"])
                / VILLAR["tau_fall"])
    step = int(round(0.01 / h))  # the sharp model's slope 0.01 day either side of t1
    middle = int(round(5.0 / h))
    across = (slopes[1][middle + step] - slopes[1][middle - step]).item()
    assert -across == pytest.approx(kink, rel=1e-3)
    # the blend's slope turns over about a width: by less than (slope jump) x h / width per
    # grid step h (0.41 of that here), where the piecewise model's turns all at once
    assert slopes[0].diff().abs().max().item() < kink * h / (0.2 * VILLAR["tau_fall"])
    assert slopes[1].diff().abs().max().item() > 0.4 * kink


def test_villar_with_a_transition_fraction_is_invariant_under_stretching_time():
    # every time scale and t times k, beta / k: the same light curve, stretched; a blend
    # fixed in days is not (its corner keeps its width)
    k, t = 4.0, torch.linspace(-20.0, 120.0, 701, dtype=f64)
    stretched = dict(VILLAR, t0=k * VILLAR["t0"], beta=VILLAR["beta"] / k,
                     gamma=k * VILLAR["gamma"], tau_rise=k * VILLAR["tau_rise"],
                     tau_fall=k * VILLAR["tau_fall"])
    base = Villar(**VILLAR, transition_fraction=0.2).flux(t)
    torch.testing.assert_close(Villar(**stretched, transition_fraction=0.2).flux(k * t), base,
                               rtol=1e-12, atol=1e-12)
    fixed = Villar(**stretched).flux(k * t) - Villar(**VILLAR).flux(t)
    assert fixed.abs().max() > 1e-3 * VILLAR["A"]


def test_villar_refuses_a_transition_fraction_outside_zero_to_one():
    for fraction in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="transition_fraction"):
            Villar(transition_fraction=fraction)


# --------------------------------------------------------------------------- bands, shapes, errors


def test_per_band_params_and_flux_shapes():
    lc = Bazin(t0=1.0, A=[1.0, 2.0, 3.0], tau_rise=2.0, tau_fall=[10.0, 20.0, 30.0], B=0.0,
               bands=("g", "r", "i"), shared=("t0",))
    assert lc.t0.shape == ()
    assert lc.A.shape == lc.tau_rise.shape == lc.B.shape == (3,)
    t = torch.linspace(-5, 50, 20, dtype=f64).reshape(4, 5)
    band = torch.tensor([0, 1, 2, 1, 0])
    f = lc.flux(t, band=band)
    assert f.shape == (4, 5)
    for b, (A, tf) in enumerate([(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]):
        single = Bazin(t0=1.0, A=A, tau_rise=2.0, tau_fall=tf, B=0.0).flux(t)
        cols = band == b
        torch.testing.assert_close(f[:, cols], single[:, cols])
    # band names and scalar bands broadcast like indices
    torch.testing.assert_close(lc.flux(t, band="r"), lc.flux(t, band=torch.tensor(1)))
    torch.testing.assert_close(lc.flux(t[0], band=["g", "r", "i", "r", "g"]), f[0])


def test_batched_parameter_vectors_put_the_batch_in_front():
    lc = GaussianLightCurve(t0=[0.0, 2.0], sigma=[3.0, 4.0], peak_flux=[1.0, 2.0], bands="gr")
    lc.to_dynamic()
    x = lc.get_values().to(f64)
    X = torch.stack([x, 1.1 * x, 0.9 * x])
    t = torch.linspace(-5, 5, 7, dtype=f64)
    band = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    out = lc.flux(t, band, X)
    assert out.shape == (3, 7)
    for i in range(3):
        torch.testing.assert_close(out[i], lc.flux(t, band, X[i]))


def test_light_curve_bad_input_raises():
    with pytest.raises(ShapeError, match="per band"):
        Bazin(A=[1.0, 2.0], bands=("g", "r", "i"))
    with pytest.raises(ValueError, match="not parameters"):
        Villar(bands="gr", shared=("t_peak",))
    with pytest.raises(ValueError, match="distinct"):
        GaussianLightCurve(bands=("g", "g"))
    lc = GaussianLightCurve(bands="gr")
    t = torch.zeros(3)
    with pytest.raises(ValueError, match="pass `band`"):
        lc.flux(t)
    with pytest.raises(ValueError, match="unknown band"):
        lc.flux(t, band="z")
    with pytest.raises(TypeError, match="integer"):
        lc.flux(t, band=torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ShapeError, match="broadcast"):
        lc.flux(t, band=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no bands"):
        GaussianLightCurve().flux(t, band=0)
    # out-of-range indices: -1 would silently pick the last band, 2 would be an IndexError
    for band in ([-1, 0, 1], [0, 2, 1]):
        with pytest.raises(ValueError, match="band indices must lie in 0..1"):
            lc.flux(t, band=torch.tensor(band))
    with pytest.raises(TypeError, match="integer"):
        PhotometryLikelihood(lc, t, torch.ones(3), torch.ones(3), band=[0.7, 1.2, 0.0])
    with pytest.raises(ValueError, match="band indices"):
        PhotometryLikelihood(lc, t, torch.ones(3), torch.ones(3), band=[0, 1, 2])
    with pytest.raises(ValueError, match="transition_width"):
        Villar(transition_width=0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_villar_at_rise_time_zero_is_the_step_limit_with_a_finite_gradient(dtype):
    # tau_rise = 0 is the bound of its valid range, where an optimiser may stop: dt / tau_rise
    # was 0/0 there and the gradient NaN in every parameter (a fit needed a retry to escape)
    lc = Villar(**VILLAR)
    lc.to_dynamic()
    assert [p.name for p in lc.dynamic_params][4] == "tau_rise"
    x = lc.get_values().to(dtype)
    x[4] = 0.0
    x.requires_grad_(True)
    t = torch.tensor([-10.0, 2.0, 3.0, 20.0, 26.0, 60.0], dtype=dtype)  # 2.0 is t0 itself
    flux = lc.flux(t, None, x)
    (grad,) = torch.autograd.grad(flux.sum(), x, retain_graph=True)
    assert torch.isfinite(flux).all() and torch.isfinite(grad).all()
    # the value is the limit: the rise a step (0 before t0, 1/2 at t0, 1 after)
    away = t != VILLAR["t0"]
    steep = Villar(**dict(VILLAR, tau_rise=1e-6)).flux(t.double()).to(dtype)
    torch.testing.assert_close(flux.detach()[away], steep[away])
    assert flux[~away].item() == pytest.approx(0.5 * VILLAR["A"], rel=1e-3)
    # and so is d flux / d tau_rise away from t0: 0 (the smooth model's tends to 0 with tau_rise)
    for f in flux[away]:
        (g,) = torch.autograd.grad(f, x, retain_graph=True)
        assert g[4].item() == 0.0 and torch.isfinite(g).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bazin_at_rise_time_zero_is_the_step_limit_with_a_finite_gradient(dtype):
    # as Villar: dt / tau_rise was 0/0 at tau_rise = 0 (its bound) and every gradient entry NaN
    from skyfit.lightcurves.functions import bazin_light_curve

    t = torch.tensor([-10.0, 2.0, 3.0, 20.0], dtype=dtype)  # 2.0 is t0 itself
    params = torch.tensor([2.0, 4.0, 0.0, 15.0, 0.5], dtype=dtype, requires_grad=True)
    flux = bazin_light_curve(t, *params)
    (grad,) = torch.autograd.grad(flux.sum(), params)
    assert torch.isfinite(flux).all() and torch.isfinite(grad).all()
    # the value is the step limit: the baseline before t0, A/2 + B at t0, the decline after
    steep = bazin_light_curve(t.double(), 2.0, 4.0, 1e-6, 15.0, 0.5).to(dtype)
    away = t != 2.0
    torch.testing.assert_close(flux.detach()[away], steep[away])
    assert flux[~away].item() == pytest.approx(0.5 * 4.0 + 0.5, rel=1e-3)
    assert grad[2].item() == 0.0  # d flux / d tau_rise: 0 away from t0, and at t0 dt = 0


# --------------------------------------------------------------------------- autodiff, dtypes

MODELS = {
    "gaussian": lambda: GaussianLightCurve(t0=[1.0, 2.0], sigma=[3.0, 5.0],
                                           peak_flux=[1.0, 0.5], bands="gr"),
    "bazin": lambda: Bazin(t0=[1.0, 2.0], A=[2.0, 1.0], tau_rise=[2.0, 3.0],
                           tau_fall=[15.0, 25.0], B=[0.1, -0.1], bands="gr"),
    "villar": lambda: Villar(t0=[1.0, 2.0], A=[2.0, 1.0], beta=[-0.02, -0.01], gamma=[10.0, 15.0],
                             tau_rise=[2.0, 3.0], tau_fall=[15.0, 25.0], bands="gr"),
}
EPOCHS = torch.tensor([-3.0, 0.5, 4.0, 11.0, 14.0, 19.0, 40.0], dtype=f64)
EPOCH_BANDS = torch.tensor([0, 1, 0, 1, 0, 1, 1])


@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_finite_differences(name):
    lc = MODELS[name]()
    lc.to_dynamic()
    x = lc.get_values().to(f64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: lc.flux(EPOCHS, EPOCH_BANDS, v), (x,), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)
    # ... and with respect to time itself
    t = EPOCHS.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: lc.flux(s, EPOCH_BANDS, x.detach()), (t,))


@pytest.mark.parametrize("name", MODELS)
def test_float32_matches_float64(name):
    lc = MODELS[name]()
    lc.to_dynamic()
    x = lc.get_values()
    f32 = lc.flux(EPOCHS.float(), EPOCH_BANDS, x.float())
    f64_ = lc.flux(EPOCHS, EPOCH_BANDS, x.double())
    assert f32.dtype == torch.float32 and f64_.dtype == torch.float64
    torch.testing.assert_close(f32.double(), f64_, rtol=1e-5, atol=1e-6)
    # mixed: t's dtype promoted with the parameters' (a float64 fit stays float64)
    assert lc.flux(EPOCHS.float(), EPOCH_BANDS, x.double()).dtype == torch.float64
