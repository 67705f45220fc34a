"""Light-curve models for real data: band subsets, redshift, baselines, starts and priors."""

import math

import pytest
import torch

from skyfit import (
    Bazin,
    GaussianLightCurve,
    PhotometryLikelihood,
    Posterior,
    Villar,
    fit_map,
    laplace,
)
from skyfit.data import Photometry
from skyfit.lightcurves import default_priors, from_photometry, light_curve_scales
from skyfit.lightcurves.observed import distance_dimming, subset_entries

T = torch.linspace(-20.0, 80.0, 26, dtype=torch.float64)


def test_a_parameter_shared_by_a_band_subset_has_one_value_for_those_bands():
    lc = Bazin(t0=0.0, A=[1.0, 2.0, 3.0, 4.0], tau_rise=[2.0, 5.0, 9.0], tau_fall=20.0,
               bands="ugri", shared=["t0", ("tau_rise", ("g", "r"))])
    assert subset_entries(("u", "g", "r", "i"), ("g", "r")).tolist() == [0, 1, 1, 2]
    assert lc.tau_rise.shape == (3,) and lc.t0.shape == ()
    for b, tau in zip("ugri", [2.0, 5.0, 5.0, 9.0]):
        alone = Bazin(t0=0.0, A=lc.A.value["ugri".index(b)].item(), tau_rise=tau, tau_fall=20.0)
        assert torch.allclose(lc.flux(T, band=b), alone.flux(T), rtol=1e-14)
    with pytest.raises(ValueError, match="unknown"):
        Bazin(bands="gr", shared=[("tau_rise", ("g", "y"))])


def test_redshift_stretches_observed_time_by_one_plus_z():
    z = 0.5
    rest = Villar(t0=3.0, A=2.0, beta=-0.01, gamma=10.0, tau_rise=4.0, tau_fall=20.0, redshift=z)
    # the same light curve written in observed-frame time scales (gamma, tau x (1+z), beta / (1+z);
    # the blend width is a time scale too)
    observed = Villar(t0=3.0, A=2.0, beta=-0.01 / (1 + z), gamma=15.0, tau_rise=6.0, tau_fall=30.0,
                      transition_width=4.5)
    assert torch.allclose(rest.flux(T), observed.flux(T), rtol=1e-12)
    bazin = Bazin(t0=1.0, A=5.0, tau_rise=2.0, tau_fall=10.0, B=0.3, redshift=1.0)
    assert torch.allclose(bazin.flux(T), Bazin(t0=1.0, A=5.0, tau_rise=4.0, tau_fall=20.0,
                                               B=0.3).flux(T), rtol=1e-12)


def test_dimming_is_the_distance_modulus_of_flat_lcdm():
    astropy_cosmo = pytest.importorskip("astropy.cosmology")
    cosmo = astropy_cosmo.FlatLambdaCDM(H0=70.0, Om0=0.3, Tcmb0=0.0)
    for z in (0.05, 0.25, 1.0):
        expected = (1 + z) * 10 ** (-0.4 * cosmo.distmod(z).value)
        got = distance_dimming(torch.tensor(z, dtype=torch.float64)).item()
        assert got == pytest.approx(expected, rel=1e-10)
    lc = GaussianLightCurve(t0=0.0, sigma=5.0, peak_flux=1e18, B=2.0, redshift=0.25,
                            dimming=True)
    peak = lc.flux(torch.zeros((), dtype=torch.float64)).item()
    assert peak == pytest.approx(1e18 * 1.25 * 10 ** (-0.4 * cosmo.distmod(0.25).value) + 2.0)


def test_gaussian_and_villar_take_a_per_band_baseline():
    lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0, B=[0.5, -0.2], bands="gr")
    far = torch.tensor([1e3, 1e3], dtype=torch.float64)
    assert lc.flux(far, band=torch.tensor([0, 1])).tolist() == pytest.approx([0.5, -0.2])
    assert "B" not in dict(Villar().children)  # no baseline Param unless asked


def _mock_photometry(seed=0):
    truth = Bazin(t0=2.0, A=[300.0, 200.0], tau_rise=3.0, tau_fall=25.0, B=0.0, bands="gr",
                  shared=["t0", "tau_rise", "tau_fall"])
    gen = torch.Generator().manual_seed(seed)
    t = 59000.0 + torch.linspace(-15.0, 90.0, 40, dtype=torch.float64)
    band = torch.arange(40) % 2
    model = truth.flux(t - 59000.0, band=band).detach()
    err = 3.0 + 0.02 * model
    flux = model + err * torch.randn(40, generator=gen, dtype=torch.float64)
    return Photometry(t, ["g" if b == 0 else "r" for b in band.tolist()], flux=flux, flux_err=err)


def test_starts_from_the_data_and_default_priors_give_a_converged_fit():
    phot = _mock_photometry()
    scales = light_curve_scales(phot)
    offset = phot.reference - 59000.0  # times are days since the photometry's reference
    assert abs(scales["t_peak"] + offset - (2.0 + 3.0 * math.log(25 / 3 - 1))) < 5.0
    for model in ("gaussian", "bazin", "villar"):
        lc = from_photometry(model, phot, shared=["t0"])
        like = PhotometryLikelihood(lc, phot)
        priors = default_priors(like)
        assert lc.t0 in priors and lc.tau_rise in priors if model != "gaussian" else True
        post = Posterior(like, priors=priors)
        res = fit_map(post)
        assert res.converged, model
        post.set(res.x)
        if model != "gaussian":  # a symmetric bump cannot follow a fast rise and slow decline
            assert like.chi2().item() / (len(phot) - post.dim) < 2.0, model
    bazin = from_photometry("bazin", phot, shared=["t0", "tau_rise", "tau_fall"])
    post = Posterior(PhotometryLikelihood(bazin, phot), priors=default_priors(
        PhotometryLikelihood(bazin, phot)))
    fit = post.unpack(fit_map(post).x)
    assert fit["Bazin.tau_fall"].item() == pytest.approx(25.0, rel=0.2)
    assert fit["Bazin.t0"].item() + offset == pytest.approx(2.0, abs=1.5)


def test_non_centred_population_adds_the_standard_normal_offsets_to_the_posterior():
    import caskade as ck
    from scipy import stats

    from skyfit.lightcurves import NonCentredPopulation

    class Joint(ck.Module):
        def __init__(self, likes):
            super().__init__("joint")
            self.likes = likes

        @ck.forward
        def __call__(self):
            return sum(like() for like in self.likes)

    widths = [3.0, 5.0, 4.0]
    curves = [GaussianLightCurve(f"sn{i}", t0=0.0, sigma=w, peak_flux=10.0)
              for i, w in enumerate(widths)]
    data = [lc.flux(T).detach() for lc in curves]
    likes = [PhotometryLikelihood(lc, T, d, torch.ones(26), name=f"like{i}")
             for i, (lc, d) in enumerate(zip(curves, data))]
    pop = NonCentredPopulation("width", 3, mu=1.4, tau=0.3, log=True)
    pop.link([lc.sigma for lc in curves])
    pop.to_dynamic()
    post = Posterior(Joint(likes))
    assert post.names == ["width.mu", "width.tau", "width.eta[0]", "width.eta[1]", "width.eta[2]"]
    eta = torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64)
    x = torch.cat([torch.tensor([1.4, 0.3], dtype=torch.float64), eta])
    sigma = torch.exp(1.4 + 0.3 * eta)
    expected = sum(
        stats.norm.logpdf(d.numpy(), GaussianLightCurve(
            t0=0.0, sigma=s.item(), peak_flux=10.0).flux(T).numpy(), 1.0).sum()
        for d, s in zip(data, sigma)) + stats.norm.logpdf(eta.numpy()).sum()
    assert post(x).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("model", ["bazin", "villar"])
def test_joint_fits_of_the_sparse_rise_supernova_converge_from_the_default_start(model):
    # LSQ12dlf: only some bands cover the rise, so one rise time is shared by all bands
    from skyfit.data import load_example

    phot = load_example("LSQ12dlf")
    lc = from_photometry(model, phot, shared=["t0", "tau_rise"])
    like = PhotometryLikelihood(lc, phot, space="mag")
    post = Posterior(like, priors=default_priors(like))
    res = fit_map(post)
    assert res.converged
    post.set(res.x)
    assert like.chi2().item() / (like.n_detections - post.dim) < 2.5
    assert (res.x > post.lower + 1e-3).all()  # nothing pinned at a bound (tau_rise at 0 was)


def test_a_relative_plateau_slope_is_the_flux_slope_divided_by_the_amplitude():
    t = torch.linspace(-10.0, 90.0, 41, dtype=torch.float64)
    band = torch.arange(41) % 2
    relative = Villar(t0=2.0, A=[300.0, 100.0], beta=-0.01, gamma=25.0, tau_rise=3.0,
                      tau_fall=[20.0, 30.0], bands="gr", shared=["t0", "beta", "gamma"],
                      relative_slope=True)
    # one relative slope for both bands is a flux slope proportional to each band's amplitude
    absolute = Villar(t0=2.0, A=[300.0, 100.0], beta=[-3.0, -1.0], gamma=25.0, tau_rise=3.0,
                      tau_fall=[20.0, 30.0], bands="gr", shared=["t0", "gamma"])
    assert relative.beta.shape == () and relative.beta.units == "1/day"
    assert torch.allclose(relative.flux(t, band=band), absolute.flux(t, band=band), rtol=1e-13)
    # on the plateau, far from the rise and the plateau end: A (1 + beta (t - t0))
    single = Villar(t0=2.0, A=100.0, beta=-0.01, gamma=60.0, tau_rise=0.5, relative_slope=True)
    on_plateau = single.flux(torch.tensor(14.0, dtype=torch.float64)).item()
    assert on_plateau == pytest.approx(100.0 * (1 - 0.01 * 12.0), rel=1e-6)


def test_villar_from_photometry_shares_a_relative_slope_with_a_prior_in_units_of_a():
    phot = _mock_photometry()
    lc = from_photometry("villar", phot)  # default sharing: t0, rise, plateau length and slope
    assert lc.relative_slope and lc.beta.shape == () and lc.gamma.shape == ()
    assert lc.A.shape == (2,) and lc.tau_fall.shape == (2,)
    prior = default_priors(PhotometryLikelihood(lc, phot))[lc.beta]
    assert float(prior.loc) == 0.0 and float(prior.scale) == pytest.approx(0.01)
    assert not from_photometry("villar", phot, relative_slope=False).relative_slope


def _mock_csv(tmp_path):
    """The mock photometry written as a CSV table, as ``skyfit lightcurve`` reads it."""
    phot = _mock_photometry()
    lines = ["mjd,band,flux,flux_err"] + [
        f"{t:.4f},{b},{f:.5f},{e:.5f}" for t, b, f, e in zip(
            phot.mjd.tolist(), phot.band_names(), phot.flux.tolist(), phot.flux_err.tolist())]
    path = tmp_path / "sn.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_command_line_fit_starts_nuts_from_the_laplace_approximation(tmp_path,
                                                                         monkeypatch):
    # a dense metric from the Laplace covariance (not the MAP point and a unit metric): warm-up
    # then need not learn the correlations of t0, amplitudes and time scales
    import skyfit.lightcurve_fit as lf
    from skyfit.inference.laplace import LaplaceResult

    seen = {}

    class Stop(Exception):
        pass

    def fake_sample_nuts(post, init=None, mass="diag", **kwargs):
        seen.update(init=init, mass=mass, names=post.names)
        raise Stop

    monkeypatch.setattr(lf, "sample_nuts", fake_sample_nuts)
    path = _mock_csv(tmp_path)
    with pytest.raises(Stop):
        lf.fit_photometry(path, model="villar", n_starts=1, out=tmp_path / "fit",
                          progress=False)
    assert isinstance(seen["init"], LaplaceResult) and seen["mass"] == "dense"
    # the default sharing of Villar: one t0, rise, plateau length and relative slope
    assert {"Villar.t0", "Villar.tau_rise", "Villar.gamma", "Villar.beta"} <= set(seen["names"])


def test_villar_with_a_blend_width_from_tau_fall_recovers_a_sparse_rise_two_band_truth():
    # g: a faint rise of 3 points, then plateau and decline; r only after the peak; the truth
    # drawn from the model itself (blend width 0.2 tau_fall), 3% flux errors
    truth = dict(t0=0.0, A=[100.0, 80.0], beta=-0.01, gamma=15.0, tau_rise=4.0,
                 tau_fall=[20.0, 35.0])
    lc = Villar(**truth, bands="gr", relative_slope=True, transition_fraction=0.2,
                shared=["t0", "tau_rise", "gamma", "beta"])
    t_g = torch.cat([torch.tensor([-6.0, -2.0, 2.0]), torch.arange(8.0, 100.0, 4.0)])
    t_r = torch.arange(20.0, 100.0, 4.0) + 1.0
    time = torch.cat([t_g, t_r]).double()
    band = torch.tensor([0] * len(t_g) + [1] * len(t_r))
    flux = lc.flux(time, band=band).detach()
    err = 0.03 * flux + 0.3
    gen = torch.Generator().manual_seed(5)
    observed = flux + err * torch.randn(flux.shape, generator=gen, dtype=torch.float64)
    phot = Photometry(time.numpy() + 59000.0, ["g" if b == 0 else "r" for b in band.tolist()],
                      flux=observed.numpy(), flux_err=err.numpy())
    model = from_photometry("villar", phot, transition_fraction=0.2)
    assert model.transition_fraction == 0.2
    like = PhotometryLikelihood(model, phot)
    post = Posterior(like, priors=default_priors(like))
    fit = fit_map(post)
    assert fit.converged
    lap = laplace(post, fit.x)
    offset = phot.reference - 59000.0
    expected = dict(t0=truth["t0"] - offset, beta=-0.01, gamma=15.0, tau_rise=4.0)
    for name, value in expected.items():
        i = post.names.index(f"Villar.{name}")
        assert abs(fit.x[i].item() - value) < 3 * lap.std[i].item(), name
    for b, value in enumerate(truth["tau_fall"]):
        i = post.names.index(f"Villar.tau_fall[{b}]")
        assert abs(fit.x[i].item() - value) < 3 * lap.std[i].item(), b



def test_the_half_peak_villar_start_passes_through_the_peak_and_half_the_peak():
    # the second data start of a Villar fit (villar_half_peak_plateau): its light curve goes
    # through the best band's peak flux at t_peak and half of it at t_half, rest frame z 0.3
    from skyfit.lightcurves import villar_half_peak_plateau

    z, tau_rise = 0.3, 3.0
    scales = dict(t_peak=40.0, rise=12.0, t_half=110.0)
    start = villar_half_peak_plateau(scales, tau_rise, z)
    lc = Villar(t0=start["t0"], A=200.0 * start["amplitude_factor"], beta=start["beta"],
                gamma=start["gamma"], tau_rise=tau_rise, tau_fall=500.0, redshift=z,
                relative_slope=True)
    flux = lc.flux(torch.tensor([40.0, 110.0], dtype=torch.float64))
    assert flux.tolist() == pytest.approx([200.0, 100.0], rel=1e-6)
    assert villar_half_peak_plateau(dict(t_peak=40.0, rise=12.0, t_half=math.nan), 3.0, z) is None


def test_the_command_line_passes_the_villar_blend_anchored_coordinates_and_target(tmp_path,
                                                                                monkeypatch):
    # `skyfit lightcurve --model villar --transition-fraction 0.2 --anchored --target-accept
    # 0.9`: the settings of the benchmark row lightcurve_real_slsn_villar reach the model and
    # NUTS
    import skyfit.lightcurve_fit as lf
    from skyfit.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_nuts(post, fit, lap, **kwargs):
        seen.update(kwargs, fraction=post.likelihood.lightcurve.transition_fraction)
        raise Stop

    monkeypatch.setattr(lf, "sample_light_curve_nuts", fake_nuts)
    path = _mock_csv(tmp_path)
    with pytest.raises(Stop):
        main(["lightcurve", str(path), "--model", "villar", "--transition-fraction", "0.2",
              "--anchored", "--target-accept", "0.9", "--quiet", "--out", str(tmp_path / "f")])
    assert seen["fraction"] == 0.2 and seen["anchored"] and seen["target_accept"] == 0.9
    with pytest.raises(ValueError, match="villar"):
        lf.fit_photometry(path, model="bazin", transition_fraction=0.2, out=tmp_path / "g",
                          progress=False)


def test_a_second_data_start_the_model_cannot_evaluate_leaves_the_first_fit(monkeypatch):
    # fit_map_continued without a start fits from each data start; an extra start with a
    # non-finite log-density is skipped, an unusable first start is still an error
    import skyfit.lightcurve_fit as lf
    from skyfit.errors import ParameterVectorError

    phot = _mock_photometry()
    like = PhotometryLikelihood(from_photometry("bazin", phot), phot)
    post = Posterior(like, priors=default_priors(like))
    x0 = post.initial()
    broken = torch.full_like(x0, math.nan)
    expected = lf.fit_map_continued(post, x0)
    monkeypatch.setattr(lf, "data_starts", lambda post: [x0, broken])
    got = lf.fit_map_continued(post)
    assert got.converged and torch.equal(got.x, expected.x)
    monkeypatch.setattr(lf, "data_starts", lambda post: [broken, x0])
    with pytest.raises(ParameterVectorError, match="NaN or inf entries"):
        lf.fit_map_continued(post)


def test_a_villar_with_one_shared_amplitude_gets_only_the_default_start():
    # the half-peak start scales one amplitude per band from its peak flux
    from skyfit.lightcurve_fit import data_starts

    phot = _mock_photometry()
    model = Villar(t0=0.0, A=200.0, beta=-0.01, gamma=10.0, tau_rise=3.0, tau_fall=25.0,
                   bands="gr", relative_slope=True,
                   shared=["t0", "tau_rise", "gamma", "beta", "A"])
    model.to_dynamic()
    post = Posterior(PhotometryLikelihood(model, phot))
    assert post.names.count("Villar.A") == 1
    assert len(data_starts(post)) == 1
    villar = from_photometry("villar", phot)
    assert len(data_starts(Posterior(PhotometryLikelihood(villar, phot)))) in (1, 2)
