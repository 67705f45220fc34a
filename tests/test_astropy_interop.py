"""astropy in and out: Quantities for parameters and results, WCS pixel grids, cosmologies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import skyfit
from skyfit.errors import UnitsError

u = pytest.importorskip("astropy.units")
f64 = dict(dtype=torch.float64)


def test_quantities_are_converted_to_declared_units():
    s = skyfit.Sersic(Re=300 * u.mas, phi=90 * u.deg, flux=5.0)
    assert s.Re.value.item() == pytest.approx(0.3, rel=1e-15)
    assert s.phi.value.item() == pytest.approx(math.pi / 2, rel=1e-15)
    assert s.Re.value.dtype == torch.float64
    s.x0.value = 1 * u.arcmin
    assert s.x0.value.item() == pytest.approx(60.0)
    s.y0.to_dynamic(-2 * u.arcsec)
    assert s.y0.value.item() == -2.0
    with pytest.raises(UnitsError, match="Re is in 'arcsec'.*kg"):
        skyfit.Sersic(Re=3 * u.kg)
    with pytest.raises(UnitsError, match="q is in '(no units|dimensionless)'"):
        skyfit.Sersic(q=0.5 * u.arcsec)
    lc = skyfit.GaussianLightCurve(sigma=36 * u.hour)
    assert lc.sigma.value.item() == pytest.approx(1.5)
    assert lc.sigma.quantity().to(u.hour).value == pytest.approx(36.0)


def test_results_return_quantities():
    t = torch.linspace(-20, 20, 14, **f64)
    lc = skyfit.GaussianLightCurve("sn", t0=1.0, sigma=5.0, peak_flux=2.0)
    flux = lc.flux(t).detach()
    lc.to_dynamic()
    post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, torch.full_like(t, 0.1)))
    assert post.units == {"sn.t0": "day", "sn.sigma": "day", "sn.peak_flux": "flux"}
    fit = skyfit.fit_map(post)
    q = fit.quantity("sn.sigma")
    assert q.unit == u.day and q.to_value(u.hour) == pytest.approx(5.0 * 24, rel=1e-5)
    lap = skyfit.laplace(post, fit.x)
    assert lap.quantity("sn.t0").to_value(u.s) == pytest.approx(86400.0, rel=1e-5)
    with pytest.raises(KeyError, match="no parameter 'sn.Re'"):
        lap.quantity("sn.Re")


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_samples_carry_units_through_their_file(tmp_path):
    t = torch.linspace(-20, 20, 14, **f64)
    lc = skyfit.GaussianLightCurve("sn", t0=1.0, sigma=5.0, peak_flux=2.0)
    flux = lc.flux(t).detach()
    lc.to_dynamic()
    post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, torch.full_like(t, 0.1)))
    start = torch.tensor([1.0, 5.0, 2.0], **f64)
    nuts = skyfit.sample_nuts(post, init=start, n_chains=2, n_warmup=30, n_draws=20,
                              progress=False)
    emcee = skyfit.sample_emcee(post, init=start, n_steps=10, n_burn=0, progress=False)
    laplace = skyfit.laplace(post, start).sample(50)
    for samples in (nuts, emcee, laplace):
        assert samples.units == post.units
        t0 = samples.quantity("sn.t0")
        assert t0.unit == u.day and t0.shape == samples["sn.t0"].shape
        np.testing.assert_allclose(t0.to_value(u.hour), 24 * samples["sn.t0"], rtol=1e-14)
    path = tmp_path / "draws.h5"
    nuts.save(path)
    loaded = skyfit.Samples.load(path)
    assert loaded.units == post.units
    assert loaded.quantity("sn.peak_flux").unit == u.Unit(nuts.quantity("sn.peak_flux").unit)
    np.testing.assert_array_equal(loaded.quantity("sn.sigma").to_value(u.d), nuts["sn.sigma"])
    with pytest.raises(KeyError, match="no parameter 'sn.Re'"):
        loaded.quantity("sn.Re")


def _wcs(rotation_deg: float, scale: float, crpix=(20.5, 10.0), shape=(30, 40)):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = list(crpix)
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    # north-up east-left turned ccw: x (west) = -xi, so CD = diag(-1, 1) R scale
    w.wcs.cd = (np.array([[-1.0, 0.0], [0.0, 1.0]]) @ np.array([[c, -s], [s, c]])) * scale / 3600
    w.pixel_shape = shape[::-1]
    return w


@pytest.mark.parametrize("rotation", [0.0, 30.0, 90.0, 200.0])
def test_grid_from_wcs_matches_astropy(rotation):
    w = _wcs(rotation, 0.05)
    grid = skyfit.PixelGrid.from_wcs(w.to_header(), shape=(30, 40))
    assert grid.pixel_scale == pytest.approx(0.05, rel=1e-12)
    assert grid.rotation == pytest.approx(math.radians(rotation), abs=1e-12)
    x, y = grid.coordinates()
    from astropy.coordinates import SkyCoord

    rows, cols = np.mgrid[0:30, 0:40]
    sky = w.pixel_to_world(cols.ravel(), rows.ravel())
    reference = SkyCoord(*w.wcs.crval, unit="deg")
    # offsets east and north from CRVAL (great-circle, equal to the tangent plane's to ~1e-12
    # relative over this 2-arcsec field)
    east, north = reference.spherical_offsets_to(sky)
    assert np.allclose(x.numpy().ravel(), -east.to_value(u.arcsec), atol=1e-8)
    assert np.allclose(y.numpy().ravel(), north.to_value(u.arcsec), atol=1e-8)
    assert skyfit.PixelGrid.from_wcs(w).shape == (30, 40)


def test_rotated_grid_renders_the_turned_scene():
    """A scene on a grid turned by 90 degrees is the unturned scene with its sources turned."""
    psf = skyfit.GaussianPSF(sigma=0.08, size=11)

    def image(grid, x0, y0, phi, px, py):
        return skyfit.Scene(grid, [skyfit.Sersic(x0=x0, y0=y0, q=0.5, phi=phi, Re=0.3, flux=5.0)],
                            psf, [skyfit.PointSource(x0=px, y0=py, flux=2.0)])()

    turned = skyfit.PixelGrid((32, 32), 0.05, supersample=3, rotation=math.pi / 2)
    plain = skyfit.PixelGrid((32, 32), 0.05, supersample=3)
    # a sky offset (a, b) is (b, -a) in the turned grid's frame
    a = image(turned, 0.1, 0.2, 0.4 + math.pi / 2, -0.3, 0.15)
    b = image(plain, 0.2, -0.1, 0.4, 0.15, 0.3)
    assert torch.allclose(a, b, atol=1e-10 * b.abs().max())


def test_mirrored_wcs_is_refused():
    w = _wcs(0.0, 0.05)
    w.wcs.cd = np.diag([0.05, 0.05]) / 3600
    with pytest.raises(ValueError, match="mirrors the sky"):
        skyfit.PixelGrid.from_wcs(w, (30, 40))


def test_lens_geometry_takes_any_astropy_cosmology():
    from astropy.cosmology import FlatLambdaCDM, Planck18, w0waCDM

    for cosmo in (Planck18, w0waCDM(H0=68, Om0=0.3, Ode0=0.65, w0=-0.9, wa=0.1)):
        geometry = skyfit.LensGeometry(z_l=0.5, z_s=2.0, cosmology=cosmo)
        D_l, D_s, D_ls = geometry.distances()
        assert D_l.item() == pytest.approx(cosmo.angular_diameter_distance(0.5).value, rel=1e-12)
        assert D_ls.item() == pytest.approx(
            cosmo.angular_diameter_distance(0.5, 2.0).value, rel=1e-12)
        assert D_s.dtype == torch.float64
    # skyfit's own torch FlatLambdaCDM agrees with astropy's (no radiation in either)
    ours = skyfit.LensGeometry(z_l=0.5, z_s=2.0).distances()
    ref = FlatLambdaCDM(H0=70, Om0=0.3)
    assert ours[1].item() == pytest.approx(ref.angular_diameter_distance(2.0).value, rel=1e-6)
    assert ours[2].item() == pytest.approx(ref.angular_diameter_distance(0.5, 2.0).value,
                                           rel=1e-6)
    g = skyfit.LensGeometry(z_l=0.5, z_s=2.0, cosmology=ref)
    assert g.time_delay_distance().item() == pytest.approx(
        skyfit.LensGeometry(z_l=0.5, z_s=2.0).time_delay_distance().item(), rel=1e-6)
