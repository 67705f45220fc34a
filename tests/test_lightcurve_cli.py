"""``skyfit lightcurve FILE``: reads a table, fits it, writes the plot and summary.json."""

import json
import math

import numpy as np
import pytest
import torch

from skyfit import Bazin
from skyfit.cli import main


def two_band_bazin():
    """Times (days), band indices and fluxes of a g r Bazin light curve at 30 epochs."""
    truth = Bazin(t0=5.0, A=[300.0, 200.0], tau_rise=3.0, tau_fall=20.0, B=0.0, bands="gr")
    t = torch.linspace(-10.0, 70.0, 30, dtype=torch.float64)
    band = torch.arange(30) % 2
    return t, band, truth.flux(t, band=band).detach()


def test_lightcurve_command_fits_a_table_and_writes_its_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    t, band, flux = two_band_bazin()
    err = 2.0 + 0.02 * flux
    noisy = flux + err * torch.randn(30, generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64)
    lines = ["mjd,band,flux,flux_err"] + [
        f"{60000 + ti:.4f},{'gr'[b]},{f:.5f},{e:.5f}"
        for ti, b, f, e in zip(t.tolist(), band.tolist(), noisy.tolist(), err.tolist())]
    path = tmp_path / "sn.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["lightcurve", str(path), "--model", "bazin", "--shared", "t0", "tau_rise",
                 "tau_fall", "--no-nuts", "--out", str(tmp_path / "fit")])
    assert code == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert (tmp_path / "fit" / "lightcurve.png").stat().st_size > 10_000
    assert summary["map"]["converged"] and summary["reference_mjd"] == 59990.0
    assert summary["map"]["values"]["Bazin.tau_fall"] == pytest.approx(20.0, rel=0.15)
    # the peak, which Bazin's t0 is not: at t0 + tau_rise ln(tau_fall / tau_rise - 1), day
    # 10.2 (MJD 60010.2), r at 25 - 2.5 log10(flux there) = 19.71
    r_peak = summary["map"]["peaks"]["r"]
    assert r_peak["inside"] and r_peak["mjd"] == pytest.approx(60010.2, abs=0.5)
    assert r_peak["mag"] == pytest.approx(19.71, abs=0.05)
    out = capsys.readouterr().out
    assert "Bazin.tau_rise" in out and "too small" not in out  # errors that fit: no warning
    # the run's options are in its summary: it can be reproduced from summary.json
    assert (summary["transition_fraction"], summary["anchored"], summary["target_accept"]) == (
        None, False, 0.8)


@pytest.mark.parametrize("options, message", [
    (["--model", "bazin", "--anchored"], "anchored coordinates are for the villar model"),
    (["--model", "villar", "--anchored", "--no-nuts"], "do nothing without NUTS"),
    (["--target-accept", "1.5"], r"target_accept must lie in \(0, 1\), got 1.5"),
    (["--model", "gaussian", "--transition-fraction", "0.2"], "option of the villar model"),
    # was a traceback from inside the fit
    (["--model", "bazin", "--shared", "t0", "gamma"], r"shared names \['gamma'\] are not "
     r"parameters of Bazin"),
])
def test_options_the_run_cannot_use_are_usage_errors_before_any_fit(tmp_path, capsys,
                                                                   monkeypatch, options,
                                                                   message):
    import re

    import skyfit.lightcurve_fit as lf

    def no_fit(*args, **kwargs):
        raise AssertionError("a fit ran before the options were checked")

    monkeypatch.setattr(lf, "fit_photometry", no_fit)
    path = tmp_path / "sn.csv"
    path.write_text("mjd,band,flux,flux_err\n60000,g,1.0,0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["lightcurve", str(path), "--out", str(tmp_path / "fit"), *options])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_fit_from_a_far_prior_draw_reaches_the_optimum_of_the_data_start():
    # LSQ12dlf, joint Bazin in magnitudes: a draw of the default priors with t0 96 days after
    # the data start's. L-BFGS-B alone stalled there (log p -3e5, max |grad| 2e5: scipy's
    # relative-reduction stop); the trust-exact continuation must reach the same optimum as
    # the data-driven start, and report it converged.
    from skyfit import PhotometryLikelihood, Posterior
    from skyfit.data import load_example
    from skyfit.lightcurve_fit import fit_map_continued
    from skyfit.lightcurves import default_priors, from_photometry

    phot = load_example("LSQ12dlf")
    like = PhotometryLikelihood(from_photometry("bazin", phot, shared=["t0", "tau_rise"]), phot,
                                space="mag")
    post = Posterior(like, priors=default_priors(like))
    far = torch.tensor([105.411, 236.833, 33.086, 848.678, 115.578, 76.997, 7.943, 69.816,
                        14.711, 20.176, 16.63, 36.23], dtype=torch.float64)
    reference = fit_map_continued(post)
    fit = fit_map_continued(post, far)
    assert reference.converged and fit.converged
    assert fit.log_density == pytest.approx(reference.log_density, abs=1e-6)
    assert torch.allclose(fit.x, reference.x, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::skyfit.errors.LogDensityWarning")
@pytest.mark.parametrize("fraction", [None, 0.2])
def test_villar_map_of_the_tde_from_the_data_starts_is_the_best_optimum(fraction):
    # PS1-10jh (TDE), joint Villar in magnitudes with the default sharing: from the start whose
    # plateau ends at the peak, L-BFGS-B stopped in a local optimum with a rising plateau
    # (log p -145.7, or -115.2 with the blend 0.2 tau_fall) while draws of the default priors
    # reach a declining plateau that covers the early decline (log p -23.3, -26.1). The data's
    # starts (the second one's plateau ends at half the peak) must reach the best optimum found
    # from those draws.
    from skyfit import PhotometryLikelihood, Posterior, lightcurve_fit
    from skyfit.data import load_example
    from skyfit.lightcurve_fit import SHARED_DEFAULT, fit_map_continued
    from skyfit.lightcurves import default_priors, from_photometry

    phot = load_example("PS1-10jh")
    lc = from_photometry("villar", phot, shared=SHARED_DEFAULT["villar"],
                         transition_fraction=fraction)
    like = PhotometryLikelihood(lc, phot, space="mag")
    post = Posterior(like, priors=default_priors(like))
    fit = fit_map_continued(post)
    torch.manual_seed(0)
    best = -math.inf
    for _ in range(4):
        x = torch.cat([post.priors[label].sample().reshape(-1) for label in post.slices])
        other = fit_map_continued(post, torch.clamp(x, post.lower + 1e-6, post.upper))
        best = max(best, other.log_density if other.converged else -math.inf)
    assert fit.converged and fit.log_density > best - 1.0
    assert fit.values["Villar.beta"] < 0  # a declining plateau
    assert len(lightcurve_fit.data_starts(post)) == 2


def test_redshift_and_vega_options_give_the_shipped_example_posterior(tmp_path):
    """``--vega blanton-roweis-2007 --redshift 0.25`` on the shipped LSQ12dlf file builds the
    posterior of ``load_example("LSQ12dlf")`` (Vega magnitudes, z = 0.25): the MAP the command
    reports has the same log-density there. Without the options the file reads as AB at z = 0,
    another posterior, and the same point has another log-density."""
    pytest.importorskip("matplotlib")
    from skyfit import PhotometryLikelihood, Posterior
    from skyfit.data import load_example
    from skyfit.data.examples import _HERE
    from skyfit.lightcurves import default_priors, from_photometry

    code = main(["lightcurve", str(_HERE / "LSQ12dlf.csv"), "--model", "bazin", "--no-nuts",
                 "--quiet", "--vega", "blanton-roweis-2007", "--redshift", "0.25",
                 "--out", str(tmp_path / "fit")])
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert (summary["redshift"], summary["vega_offsets"]["U"]) == (0.25, 0.79)

    def log_density(phot):
        lc = from_photometry("bazin", phot, shared=summary["shared"])
        post = Posterior(like := PhotometryLikelihood(lc, phot), priors=default_priors(like))
        x = torch.tensor([summary["map"]["values"][name] for name in post.names],
                         dtype=torch.float64)
        return float(post.log_prob(x))

    # parameters per band are indexed in the file's band order, which the summary records
    example = load_example("LSQ12dlf", bands=tuple(summary["bands"]))
    assert summary["bands"] == ["V", "B", "I", "R", "U"]
    assert code in (0, 1) and log_density(example) == pytest.approx(
        summary["map"]["log_density"], rel=1e-9)
    from skyfit.data import Photometry

    as_ab = Photometry.read(_HERE / "LSQ12dlf.csv", bands=example.bands)
    assert abs(log_density(as_ab) - summary["map"]["log_density"]) > 1.0


@pytest.mark.parametrize("options, message", [
    (["--vega", "U=x"], r"--vega takes BAND=OFFSET pairs .* got 'U=x'"),
    (["--vega", "=0.3"], "no band name in '=0.3'"),
    (["--redshift", "-1"], r"redshift must be finite and above -1, got -1.0"),
    (["--redshift", "nan"], r"redshift must be finite and above -1, got nan"),
    (["--redshift", "inf"], r"redshift must be finite and above -1, got inf"),
])
def test_bad_vega_offsets_and_redshifts_are_usage_errors(tmp_path, capsys, options, message):
    import re

    path = tmp_path / "sn.csv"
    path.write_text("mjd,band,flux,flux_err\n60000,g,1.0,0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["lightcurve", str(path), "--out", str(tmp_path / "fit"), *options])
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("redshift", [-1.0, -2.0, math.nan, math.inf])
def test_a_redshift_at_or_below_minus_one_is_refused(redshift):
    from skyfit.data import Photometry

    with pytest.raises(ValueError, match="redshift must be finite and above -1"):
        Photometry([0.0, 1.0], flux=[1.0, 2.0], flux_err=[0.1, 0.1], redshift=redshift)


@pytest.mark.parametrize("header, rows, options, message", [
    # a user's own column names: the hint used to be Python's columns={...}, which the
    # command did not take
    ("MJD,filter,flux,flux_err", ["60000,g,1.0,0.1"], [],
     r"no time column 'mjd'.*\['MJD', 'filter', 'flux', 'flux_err'\]"),
    ("mjd,band,flux,fluxerr", ["60000,g,1.0,0.1"], [], "no flux_err column 'flux_err'"),
    ("mjd,band,flux,flux_err", ["60000,g,1.0,0.0"], [], "flux_err must be positive"),
    ("mjd,band,mag,mag_err", ["60000,u,20.0,0.1"], ["--vega", "B=-0.09"],
     r"no entry for band\(s\) \['u'\]"),
    # forced photometry in magnitudes: the advice was the Python API's (space=, mask=)
    ("mjd,band,flux,flux_err", ["60000,g,1.0,0.1", "60001,g,-0.5,0.1"], ["--mag"],
     r"1 detections have zero or negative flux \(rows \[1\]\).*without --mag"),
    # only non-detections: was torch's "min(): Expected reduction dim to be specified"
    ("mjd,band,mag,mag_err,upper_limit", ["60000,g,21.0,,True", "60001,r,21.5,,True"], [],
     "no detections: all 2 rows are upper limits"),
    ("mjd,band,flux,flux_err", ["60000,g,1.0,0.1"], ["--columns", "time"],
     "--columns takes ROLE=COLUMN pairs, got 'time'"),
    ("mjd,band,flux,flux_err", ["60000,g,1.0,0.1"], ["--columns", "date=mjd"],
     r"unknown column roles \['date'\]"),
])
def test_a_table_that_cannot_be_read_as_asked_is_a_usage_error_not_a_traceback(
        tmp_path, capsys, monkeypatch, header, rows, options, message):
    import re

    import skyfit.lightcurve_fit as lf

    monkeypatch.setattr(lf, "fit_photometry", lambda *a, **k: pytest.fail("a fit ran"))
    path = tmp_path / "sn.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["lightcurve", str(path), "--out", str(tmp_path / "fit"), *options])
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)
    with pytest.raises(SystemExit):  # a file that is not there: the same
        main(["lightcurve", str(tmp_path / "missing.csv")])
    assert "missing.csv" in capsys.readouterr().err


def test_columns_option_reads_a_table_with_its_own_names_and_the_table_names_the_bands(
        tmp_path, capsys):
    pytest.importorskip("matplotlib")
    truth = Bazin(t0=5.0, A=[300.0, 200.0], tau_rise=3.0, tau_fall=20.0, B=0.0, bands="gr")
    t = torch.linspace(-10.0, 70.0, 24, dtype=torch.float64)
    band = torch.arange(24) % 2
    flux = truth.flux(t, band=band).detach()
    lines = ["MJD,filter,fluxcal,fluxcalerr"] + [
        f"{60000 + ti:.4f},{'gr'[b]},{f:.5f},3.0" for ti, b, f in
        zip(t.tolist(), band.tolist(), flux.tolist())]
    path = tmp_path / "sn.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["lightcurve", str(path), "--no-nuts", "--out", str(tmp_path / "fit"),
                 "--columns", "time=MJD", "band=filter", "flux=fluxcal", "flux_err=fluxcalerr"])
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert code == 0 and summary["columns"]["band"] == "filter"
    out = capsys.readouterr().out
    # A[0] is g, A[1] is r: said in the table, not only in summary.json's band list
    assert "Bazin.A[0] (g)" in out and "Bazin.tau_fall[1] (r)" in out


def test_multistart_shows_the_warnings_of_the_kept_fit_only(monkeypatch):
    # random starts that wandered to the bounds printed three LogDensityWarnings per run of
    # skyfit lightcurve (--quiet too) about fits that were thrown away
    import warnings
    from types import SimpleNamespace

    import skyfit.lightcurve_fit as lf
    from skyfit.errors import LogDensityWarning

    post = SimpleNamespace(lower=torch.full((1,), -10.0, dtype=torch.float64),
                           upper=torch.full((1,), 10.0, dtype=torch.float64))
    monkeypatch.setattr(lf, "data_starts", lambda p: [torch.zeros(1, dtype=torch.float64)])

    def fit(p, x):
        log_density = -float(x.abs().sum())  # the data start (x = 0) is the best
        if log_density < 0:
            warnings.warn("a discarded start's trouble", LogDensityWarning, stacklevel=2)
        else:
            warnings.warn("the kept fit's trouble", LogDensityWarning, stacklevel=2)
        return SimpleNamespace(converged=True, log_density=log_density, x=x)

    monkeypatch.setattr(lf, "fit_map_continued", fit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best, _, fits = lf.multistart_map(post, n_starts=4)
    assert len(fits) == 4 and best.log_density == 0.0
    assert [str(w.message) for w in caught] == ["the kept fit's trouble"]


def test_errors_too_small_for_the_model_are_said_and_jitter_takes_them_up(tmp_path, capsys):
    # catalogue errors of SNLS 03D4ag are ~1% of the flux, a Bazin fit's chi2/dof 21: the
    # Laplace and NUTS uncertainties were printed 4-5x too small with no word of it, and the
    # command had no way to fit the extra scatter
    pytest.importorskip("matplotlib")
    t, band, flux = two_band_bazin()
    noisy = flux + 5.0 * torch.randn(30, generator=torch.Generator().manual_seed(2),
                                     dtype=torch.float64)  # errors quoted 5x too small
    path = tmp_path / "sn.csv"
    path.write_text("mjd,band,flux,flux_err\n" + "".join(
        f"{60000 + ti:.4f},{'gr'[b]},{f:.5f},1.0\n"
        for ti, b, f in zip(t.tolist(), band.tolist(), noisy.tolist())))
    main(["lightcurve", str(path), "--no-nuts", "--quiet", "--out", str(tmp_path / "a")])
    main(["lightcurve", str(path), "--no-nuts", "--out", str(tmp_path / "b")])
    assert "the uncertainties below are too small; --jitter" in capsys.readouterr().out
    main(["lightcurve", str(path), "--no-nuts", "--jitter", "--out", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert "too small" not in out and "PhotometryLikelihood.jitter[1] (r)" in out
    plain, jittered = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ac")
    assert plain["map"]["chi2_p_value"] < 1e-3 and jittered["jitter"]
    # the scatter added, sqrt(5^2 - 1) = 4.9 per band; a HalfNormal prior of the errors' scale
    # held it at 2.7 to 3.4, a HalfCauchy lets the data set it
    for k in (0, 1):
        assert jittered["map"]["values"][f"PhotometryLikelihood.jitter[{k}]"] == pytest.approx(
            4.9, rel=0.4)
    # the scatter is in the uncertainties: t0's Laplace sd grows by about the factor
    assert jittered["laplace_std"]["Bazin.t0"] > 2.5 * plain["laplace_std"]["Bazin.t0"]


def test_fewer_detections_than_parameters_are_said(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sn.csv"
    path.write_text("mjd,band,flux,flux_err\n60000,g,10,1\n60005,g,20,1\n")
    main(["lightcurve", str(path), "--no-nuts", "--out", str(tmp_path / "fit")])
    assert "2 detections for 4 parameters: the priors" in capsys.readouterr().out
    # one band well sampled, another with one point: that band's own amplitude and decline
    # were printed with prior-sized errors and no word
    lines = ["mjd,band,flux,flux_err"] + [f"{60000 + 3 * i},g,{f},1" for i, f in
                                          enumerate([2, 10, 30, 25, 18, 12, 8, 5, 3])]
    path.write_text("\n".join(lines + ["60010,u,9,1"]) + "\n")
    main(["lightcurve", str(path), "--no-nuts", "--out", str(tmp_path / "fit")])
    out = capsys.readouterr().out
    assert "band u: 1 detection(s) for its own A, tau_fall" in out and "band g:" not in out


def test_summary_values_that_are_not_finite_are_written_as_json_null():
    # json writes a NaN float as a bare NaN, which strict JSON readers refuse (the whole file)
    from skyfit.lightcurve_report import _json_ready

    summary = {"map": {"sd": [1.5, float("nan"), np.float64("inf")], "chi2": np.float32(2.0),
                       "converged": np.bool_(True), "n": np.int64(3)}}
    text = json.dumps(_json_ready(summary), allow_nan=False)
    assert json.loads(text) == {"map": {"sd": [1.5, None, None], "chi2": 2.0,
                                        "converged": True, "n": 3}}
