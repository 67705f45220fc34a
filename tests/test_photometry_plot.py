"""``plot_photometry``: limits drawn pointing to fainter values, inside the axes."""

import math

import pytest

from skyfit.data import Photometry

ROWS = dict(time=[0.0, 1.0, 2.0, 3.0], band=["g"] * 4, mag=[20.0, 20.5, 21.0, 22.0],
            mag_err=[0.1, 0.1, 0.1, math.nan], upper_limit=[False, False, False, True])


@pytest.mark.parametrize("mag", [True, False])
def test_an_upper_limit_arrow_points_to_fainter_values_and_stays_in_the_axes(mag):
    # in magnitudes the axis was inverted after errorbar had drawn the arrowhead, which then
    # pointed to brighter values (an hourglass with the 'v' marker); and the axes ended at the
    # limit, so the arrow was cut off in both spaces and a limit looked like a detection
    pytest.importorskip("matplotlib")
    import matplotlib.lines as mlines

    from skyfit.plots import plot_photometry

    phot = Photometry(ROWS["time"], ROWS["band"], mag=ROWS["mag"], mag_err=ROWS["mag_err"],
                      upper_limit=ROWS["upper_limit"])
    ax = plot_photometry(phot, mag=mag).axes[0]
    heads = [line for line in ax.lines if line.get_marker() in (mlines.CARETUPBASE,
                                                                mlines.CARETDOWNBASE)]
    assert len(heads) == 1
    head = heads[0]
    # down on the screen is fainter in both (magnitudes on an inverted axis)
    assert ax.yaxis_inverted() == mag and head.get_marker() == mlines.CARETDOWNBASE
    tip = float(head.get_ydata()[0])
    limit = phot.limit_mag[3].item() if mag else phot.limit[3].item()
    assert (tip > limit) if mag else (tip < limit)
    low, high = sorted(ax.get_ylim())
    assert low < tip < high


def test_one_unnamed_band_draws_no_empty_legend():
    pytest.importorskip("matplotlib")
    import warnings

    from skyfit.plots import plot_photometry

    phot = Photometry([0.0, 1.0, 2.0], flux=[20.0, 15.0, 10.0], flux_err=[1.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib: "No artists with labels found"
        fig = plot_photometry(phot)
    assert fig.axes[0].get_legend() is None


def test_laplace_draws_outside_the_bounds_are_left_out_not_clamped_onto_them():
    # a band with one point: its tau_fall's Laplace sd is near its value, and 7 of 40 draws
    # were clamped to tau_fall = 0, a step-shaped Bazin curve (inf before t0) in the band
    from types import SimpleNamespace

    import torch

    from skyfit.plots.photometry import _draws_of

    lap = SimpleNamespace(mean=torch.tensor([1.0, 18.7], dtype=torch.float64),
                          covariance=torch.diag(torch.tensor([0.01, 14.9**2],
                                                             dtype=torch.float64)))
    post = SimpleNamespace(lower=torch.tensor([-math.inf, 0.0], dtype=torch.float64),
                           upper=torch.tensor([math.inf, math.inf], dtype=torch.float64), dim=2)
    x = _draws_of(lap, post, n_draws=40, seed=0)
    assert x.shape == (40, 2) and bool((x[:, 1] > 0).all())


@pytest.mark.parametrize("mag", [True, False])
def test_a_model_peak_between_two_points_is_inside_the_axes(mag):
    # SNLS 03D4ag: no r point near the peak, and the axes, set by the data alone, cut the top
    # of every curve off; a peak between a band's detections is the data's, not extrapolated
    pytest.importorskip("matplotlib")
    import torch

    from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
    from skyfit.plots import plot_photometry

    lc = GaussianLightCurve(t0=10.0, sigma=4.0, peak_flux=100.0)
    t = torch.tensor([2.0, 6.0, 14.0, 18.0], dtype=torch.float64)  # 61% of the peak at most
    phot = Photometry(t, flux=lc.flux(t).detach(), flux_err=torch.ones(4))
    lc.to_dynamic()
    post = Posterior(PhotometryLikelihood(lc, phot))
    ax = plot_photometry(phot, post.initial(), post, mag=mag).axes[0]
    low, high = sorted(ax.get_ylim())
    peak = 20.0 if mag else 100.0  # 25 - 2.5 log10(100)
    assert low < peak < high
    # an extrapolation is not followed: the model before the first point leaves the frame
    assert (low > -10.0) if not mag else (high < 35.0)


def test_residuals_include_the_fitted_jitter():
    # with jitter=True the residual panel divided by the quoted errors alone: SNLS 03D4ag's
    # r band showed -20 sigma where the fit, with its 0.9 jitter, saw about -2
    pytest.importorskip("matplotlib")
    import torch

    from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
    from skyfit.plots import plot_photometry

    lc = GaussianLightCurve(t0=10.0, sigma=4.0, peak_flux=100.0)
    t = torch.linspace(0.0, 20.0, 11, dtype=torch.float64)
    flux = lc.flux(t).detach() + 10.0 * (-1.0) ** torch.arange(11)  # scatter 10, errors 1
    phot = Photometry(t, flux=flux, flux_err=torch.ones(11))
    lc.to_dynamic()
    post = Posterior(PhotometryLikelihood(lc, phot, jitter=True))
    x = post.initial().clone()
    x[-1] = 10.0  # the jitter
    ax = plot_photometry(phot, x[None], post, mag=False).axes[-1]
    residuals = ax.lines[0].get_ydata()
    assert abs(residuals).max() == pytest.approx(10.0 / math.hypot(1.0, 10.0), rel=1e-6)
