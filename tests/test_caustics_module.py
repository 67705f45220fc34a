"""A stranger's caskade modules through skyfit: caustics' strong-lensing simulator, fitted as a
new user would, and its lenses and source compared with skyfit's own at the same parameters."""

import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch.distributions import LogNormal, Normal

import skyfit
from skyfit.errors import NoFreeParameterError
from skyfit.sources.profiles import sersic_b

caustics = pytest.importorskip(
    "caustics", reason="caustics (in the dev extra, Python 3.11+) is not installed")

f64 = dict(dtype=torch.float64)
TRUTH = {"sie.q": 0.7, "sie.phi": 0.6, "sie.Rein": 1.0, "shear.gamma_1": 0.03,
         "shear.gamma_2": -0.02, "src.x0": 0.1, "src.y0": 0.05}
SIGMA = 0.3  # Gaussian noise per pixel; the source peaks near 80 sigma


def _grid(n=41):
    g = torch.linspace(-2.0, 2.0, n, **f64)
    y, x = torch.meshgrid(g, g, indexing="ij")
    return x + 0.013, y + 0.007  # off every centre


def _f64(**values):
    return {k: torch.tensor(v, **f64) for k, v in values.items()}


def simulator(dtype=torch.float32):
    """caustics' own LensSource: SIE + external shear (one lens plane), a Sersic source, 32 x 32
    pixels of 0.1 arcsec, in caustics' default float32."""
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    sie = caustics.SIE(cosmology=cosmo, name="sie", x0=0.0, y0=0.0, q=TRUTH["sie.q"],
                       phi=TRUTH["sie.phi"], Rein=TRUTH["sie.Rein"])
    shear = caustics.ExternalShear(cosmology=cosmo, name="shear", x0=0.0, y0=0.0,
                                   gamma_1=TRUTH["shear.gamma_1"],
                                   gamma_2=TRUTH["shear.gamma_2"])
    with warnings.catch_warnings():  # SinglePlane announces that it sets the redshifts
        warnings.simplefilter("ignore", UserWarning)
        lens = caustics.SinglePlane(cosmology=cosmo, lenses=[sie, shear], name="lens",
                                    z_l=0.5, z_s=1.0)
    src = caustics.Sersic(name="src", x0=TRUTH["src.x0"], y0=TRUTH["src.y0"], q=0.8, phi=0.3,
                          n=1.0, Re=0.25, Ie=5.0)
    sim = caustics.LensSource(lens, src, pixelscale=0.1, pixels_x=32, name="sim")
    return sim.to(dtype=dtype), sie, shear, src


@pytest.fixture(scope="module")
def problem():
    """A noisy float32 image from the truth; the lens and source position free, priors on the
    shear, the source position and the Einstein radius (keyed by caustics' own names)."""
    sim, sie, shear, src = simulator()
    clean = sim().detach()
    data = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    for param in (sie.q, sie.phi, sie.Rein, shear.gamma_1, shear.gamma_2, src.x0, src.y0):
        param.to_dynamic()
    likelihood = skyfit.GaussianLikelihood(sim, data, variance=torch.full_like(data, SIGMA**2))
    priors = {"gamma_1": Normal(0.0, 0.1), "gamma_2": Normal(0.0, 0.1), "src.x0": Normal(0.0, 1.0),
              "src.y0": Normal(0.0, 1.0), sie.Rein: LogNormal(0.0, 0.5)}
    return skyfit.Posterior(likelihood, priors=priors), sim


def _pulls(posterior, x, std):
    truth = torch.tensor([TRUTH[n] for n in posterior.names], **f64)
    return ((x - truth) / std).abs()


# -- peer values ------------------------------------------------------------------------------

def test_caustics_sie_and_shear_deflect_as_skyfit_and_lenstronomy():
    """Same conventions: ``Rein`` is skyfit's intermediate-axis ``theta_E``, ``phi`` the major
    axis counter-clockwise from +x, ``gamma_1/2`` skyfit's ``gamma1/2``; lenstronomy (its SIE is
    a NIE with a tiny core) agrees to 1e-7."""
    lens_model = pytest.importorskip("lenstronomy.LensModel.lens_model")
    from lenstronomy.Util.param_util import phi_q2_ellipticity
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    x, y = _grid()
    for q, phi, rein, x0, y0 in [(0.7, 0.6, 1.0, 0.1, -0.05), (0.4, 2.5, 1.3, 0.0, 0.0),
                                 (0.95, 0.1, 0.8, -0.2, 0.3)]:
        # float64 tensors: caustics stores Python numbers in float32
        theirs = caustics.SIE(cosmology=cosmo, z_l=0.5, z_s=1.0, **_f64(x0=x0, y0=y0, q=q,
                                                                       phi=phi, Rein=rein))
        ours = skyfit.SIE(x0=x0, y0=y0, q=q, phi=phi, theta_E=rein)
        for a, b in zip(theirs.reduced_deflection_angle(x, y), ours.deflection(x, y)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        outside = torch.hypot(x - x0, y - y0) > 0.1
        torch.testing.assert_close(theirs.convergence(x, y)[outside],
                                   ours.convergence(x, y)[outside], rtol=1e-12, atol=0)
        e1, e2 = phi_q2_ellipticity(phi, q)
        kwargs = [dict(theta_E=rein, e1=e1, e2=e2, center_x=x0, center_y=y0)]
        third = lens_model.LensModel(["SIE"]).alpha(x.numpy(), y.numpy(), kwargs)
        for a, b in zip(ours.deflection(x, y), third):
            torch.testing.assert_close(a, torch.as_tensor(b), rtol=0, atol=1e-7)
    for g1, g2 in [(0.03, -0.02), (-0.1, 0.07)]:
        theirs = caustics.ExternalShear(cosmology=cosmo, z_l=0.5, z_s=1.0,
                                        **_f64(x0=0.1, y0=-0.2, gamma_1=g1, gamma_2=g2))
        ours = skyfit.ExternalShear(x0=0.1, y0=-0.2, gamma1=g1, gamma2=g2)
        for a, b in zip(theirs.reduced_deflection_angle(x, y), ours.deflection(x, y)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_caustics_epl_is_skyfit_epl_with_t_the_slope_minus_one():
    """caustics' EPL slope ``t`` (``kappa ~ R^-t``) is skyfit's ``gamma - 1``; both sum the
    Tessore & Metcalf series (deflections agree to 4e-12, convergences to rounding)."""
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    x, y = _grid()
    for q, phi, rein, gamma in [(0.7, 0.6, 1.0, 2.0), (0.6, 2.0, 1.2, 2.3), (0.9, 0.2, 0.8, 1.7)]:
        theirs = caustics.EPL(cosmology=cosmo, **_f64(z_l=0.5, z_s=1.0, x0=0.1, y0=-0.05, q=q,
                                                      phi=phi, Rein=rein, t=gamma - 1))
        ours = skyfit.EPL(x0=0.1, y0=-0.05, q=q, phi=phi, theta_E=rein, gamma=gamma)
        for a, b in zip(theirs.reduced_deflection_angle(x, y), ours.deflection(x, y)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
        torch.testing.assert_close(theirs.convergence(x, y), ours.convergence(x, y),
                                   rtol=1e-13, atol=0)


def test_caustics_sersic_is_skyfit_sersic_up_to_conventions_and_b_n():
    """caustics' Sersic ``Re`` is the semi-major axis (skyfit's is circularised:
    ``Re_skyfit = Re sqrt(q)``), ``Ie`` the brightness at ``Re`` (skyfit: total flux), and its
    ``k`` is Ciotti & Bertin's expansion where skyfit's ``b_n`` is exact to 4e-9: with those,
    the two profiles agree to rounding, and the only difference is ``k`` (3.6e-4 relative at
    n = 0.5, 2.5e-5 at n = 1)."""
    x, y = _grid()
    for n, re_major, q, phi in [(1.0, 0.3, 0.8, 0.3), (4.0, 0.5, 0.5, 2.0), (0.5, 0.2, 0.95, 1.0)]:
        theirs = caustics.Sersic(**_f64(x0=0.1, y0=0.05, q=q, phi=phi, n=n, Re=re_major, Ie=1.0))
        b = sersic_b(torch.tensor(n, **f64))
        k = caustics.light.func.k_sersic(torch.tensor(n, **f64))
        flux = 2 * math.pi * n * q * re_major**2 * torch.exp(b) * b ** (-2 * n) * math.gamma(2 * n)
        ours = skyfit.Sersic(x0=0.1, y0=0.05, q=q, phi=phi, n=n, Re=re_major * math.sqrt(q),
                             flux=float(flux))
        # both are Ie exp(-k ((R/Re)^(1/n) - 1)) of one R: their ratio is k's difference alone
        xr, yr = x - 0.1, y - 0.05
        u = xr * math.cos(phi) + yr * math.sin(phi)
        v = -xr * math.sin(phi) + yr * math.cos(phi)
        shape = (torch.hypot(u, v / q) / re_major) ** (1 / n) - 1
        expected_ratio = torch.exp(-(k - b) * shape)
        torch.testing.assert_close(theirs.brightness(x, y) / ours.brightness(x, y),
                                   expected_ratio, rtol=1e-9, atol=0)
        assert abs(float(k / b) - 1) < {0.5: 4e-4, 1.0: 3e-5, 4.0: 1e-6}[n]


def test_caustics_lens_image_is_skyfit_lensed_image_times_the_pixel_area():
    """End to end, same pixel centres (y up) and sub-pixel midpoints: caustics' ``LensSource``
    gives the mean surface brightness of a pixel, skyfit's ``LensedImage`` the flux in it; they
    agree to 4e-5 of the peak, the Sersic ``b_n`` difference above."""
    n, q, re_major, ie = 1.0, 0.8, 0.25, 5.0
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    sie = caustics.SIE(cosmology=cosmo, name="sie", **_f64(x0=0.02, y0=-0.01, q=0.7, phi=0.6,
                                                           Rein=1.0))
    shear = caustics.ExternalShear(cosmology=cosmo, name="shear",
                                   **_f64(x0=0.0, y0=0.0, gamma_1=0.03, gamma_2=-0.02))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lens = caustics.SinglePlane(cosmology=cosmo, lenses=[sie, shear], **_f64(z_l=0.5, z_s=1.0))
    src = caustics.Sersic(**_f64(x0=0.1, y0=0.05, q=q, phi=0.3, n=n, Re=re_major, Ie=ie))
    theirs = caustics.LensSource(lens, src, pixelscale=0.1, pixels_x=32, upsample_factor=2,
                                 psf=torch.ones(1, 1, **f64))()
    b = float(sersic_b(torch.tensor(n, **f64)))
    flux = ie * 2 * math.pi * n * q * re_major**2 * math.exp(b) * b ** (-2 * n) * math.gamma(2 * n)
    ours = skyfit.LensedImage(
        skyfit.PixelGrid((32, 32), 0.1, supersample=2),
        skyfit.CompositeLens([skyfit.SIE(x0=0.02, y0=-0.01, q=0.7, phi=0.6, theta_E=1.0),
                              skyfit.ExternalShear(gamma1=0.03, gamma2=-0.02)]),
        [skyfit.Sersic(x0=0.1, y0=0.05, q=q, phi=0.3, n=n, Re=re_major * math.sqrt(q),
                       flux=flux)])()
    assert theirs.dtype == torch.float64 and theirs.shape == ours.shape
    assert ((theirs * 0.1**2 - ours).abs().max() / ours.max()) < 6e-5


# -- the posterior over caustics' Params -----------------------------------------------------

def test_posterior_reads_caustics_params_bounds_units_and_batches(problem):
    posterior, sim = problem
    assert posterior.names == ["sie.q", "sie.phi", "sie.Rein", "shear.gamma_1",
                               "shear.gamma_2", "src.x0", "src.y0"]
    assert posterior.units["sie.Rein"] == "arcsec" and posterior.units["sie.phi"] == "radians"
    # caustics' valid ranges: q in (0, 1), phi in (0, pi) cyclic (declared in float32), Rein > 0
    assert posterior.lower[:3].tolist() == [0.0, 0.0, 0.0]
    assert posterior.upper[0] == 1.0 and posterior.upper[2] == math.inf
    assert abs(float(posterior.upper[1]) - math.pi) < 1e-6
    assert posterior.periodic.tolist() == [False, True] + [False] * 5
    rows = {line.split()[0]: line for line in repr(posterior).splitlines()[2:]}
    assert rows["sie.q"].endswith("uniform on [0, 1]")
    assert rows["sie.Rein"].endswith("LogNormal")
    x = posterior.initial()
    assert torch.allclose(x, torch.tensor([TRUTH[n] for n in posterior.names], **f64), atol=1e-6)
    # many parameter sets at once: torch.vmap over caustics' simulator equals one by one
    points = x + 0.01 * torch.randn(6, x.numel(), generator=torch.Generator().manual_seed(0),
                                    **f64)
    batched = posterior.log_prob(points)
    one_by_one = torch.stack([posterior.log_prob(p) for p in points])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-6, atol=1e-6)
    # the prior adds what the distributions say: LogNormal on Rein, Normals by suffix
    prior = posterior.log_prior(x)
    expected = (LogNormal(0.0, 0.5).log_prob(torch.tensor(1.0))  # Rein = 1
                - math.log(float(posterior.upper[1]))  # phi: the default, uniform within valid
                + Normal(0.0, 0.1).log_prob(torch.tensor([0.03, -0.02])).sum()
                + Normal(0.0, 1.0).log_prob(torch.tensor([0.1, 0.05])).sum())  # q: log 1 = 0
    assert abs(float(prior) - float(expected)) < 1e-5


def test_default_prior_with_one_open_bound_is_shown_as_flat():
    """Before: caustics' ``Rein`` (valid ``(0, None)``) was shown as ``uniform on [0, inf]``,
    a distribution that does not exist; the prior is flat on ``[0, inf]``."""
    sim, sie, _, _ = simulator()
    data = sim().detach()
    sie.Rein.to_dynamic()
    posterior = skyfit.Posterior(
        skyfit.GaussianLikelihood(sim, data, variance=torch.ones_like(data)))
    assert repr(posterior).splitlines()[-1].endswith("arcsec  flat on [0, inf]")
    assert "uniform on [0, inf]" not in repr(posterior)
    assert float(posterior.log_prior(posterior.initial())) == 0.0  # flat indeed


def test_start_from_an_angle_outside_its_cyclic_range():
    """Before: caustics' ``phi`` (valid ``(0, pi)``, cyclic) set to ``0.6 + pi`` or ``-0.3``
    made ``fit_map(posterior)`` fail with ParameterRangeError; the start is now wrapped."""
    sim, sie, _, _ = simulator()
    data = sim().detach()
    sie.phi.to_dynamic(0.6 + math.pi)  # the same ellipse as phi = 0.6
    sie.q.to_dynamic()
    posterior = skyfit.Posterior(
        skyfit.GaussianLikelihood(sim, data, variance=torch.full_like(data, SIGMA**2)))
    assert abs(float(posterior.initial()[1]) - 0.6) < 1e-6
    sie.phi.value = -0.3
    assert abs(float(posterior.initial()[1]) - (math.pi - 0.3)) < 1e-6
    fit = skyfit.fit_map(posterior)
    assert fit.converged and abs(float(fit.x[1]) - 0.6) < 1e-3  # noiseless data: the truth


# -- fits --------------------------------------------------------------------------------------

def test_fit_map_and_laplace_recover_the_truth(problem):
    posterior, _ = problem
    start = {"sie.q": 0.8, "sie.phi": 0.8, "sie.Rein": 1.15, "shear.gamma_1": 0.0,
             "shear.gamma_2": 0.0, "src.x0": 0.0, "src.y0": 0.0}
    fit = skyfit.fit_map(posterior, start)
    assert fit.converged
    errors = skyfit.laplace(posterior, fit.x)
    assert (errors.std > 0).all() and (errors.std < 0.01).all()
    assert (_pulls(posterior, fit.x, errors.std) < 4).all(), errors.table(truth=TRUTH)
    # in float32 throughout (a float64 Posterior promotes caustics' float32 model to float64)
    posterior32 = skyfit.Posterior(posterior.likelihood, priors=posterior.priors,
                                   dtype=torch.float32)
    fit32 = skyfit.fit_map(posterior32, start)
    assert fit32.converged and fit32.x.dtype == torch.float32
    assert posterior32(fit32.x).dtype == torch.float32
    assert ((fit32.x.double() - fit.x) / errors.std).abs().max() < 0.02


@pytest.mark.slow
def test_broad_start_needs_and_finds_the_optimum_with_several_starts(problem):
    """From a start in the wrong basin (a rounder lens turned by 80 degrees), one fit ends in a
    local optimum; eight batched starts find the truth."""
    posterior, _ = problem
    start = {"sie.q": 0.95, "sie.phi": 2.0, "sie.Rein": 1.5, "shear.gamma_1": 0.0,
             "shear.gamma_2": 0.0, "src.x0": -0.2, "src.y0": 0.2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the single start's local optimum is warned about
        single = skyfit.fit_map(posterior, start)
    several = skyfit.fit_map(posterior, start, starts=8)
    errors = skyfit.laplace(posterior, several.x)
    assert (_pulls(posterior, several.x, errors.std) < 4).all(), errors.table(truth=TRUTH)
    assert float(posterior(several.x)) > float(posterior(single.x)) + 100  # one was stuck


@pytest.mark.slow
def test_nuts_through_caustics_agrees_with_laplace(problem):
    posterior, _ = problem
    fit = skyfit.fit_map(posterior, posterior.initial())
    errors = skyfit.laplace(posterior, fit.x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: ESS warnings
        samples = skyfit.sample_nuts(posterior, errors, n_chains=2, n_warmup=50, n_draws=100,
                                     mass="dense", progress=False)
    draws = torch.as_tensor(samples.draws).reshape(-1, posterior.dim)
    assert int(samples.sample_stats["diverging"].sum()) == 0
    mean, std = draws.mean(0), draws.std(0)
    assert (_pulls(posterior, mean, std) < 4).all()
    ratio = std / errors.std  # a near-Gaussian posterior: the Laplace widths
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio


def test_linked_velocity_dispersion_param_is_fitted(problem):
    """caustics' SIE in its velocity-dispersion parametrization: ``Rein`` is a pointer Param
    computed from ``sigma_v``, the redshifts and the cosmology; skyfit fits ``sigma_v``."""
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    sie = caustics.SIE(cosmology=cosmo, name="sie", q=0.7, phi=0.6, x0=0.0, y0=0.0,
                       parametrization="velocity_dispersion", sigma_v=250.0, z_l=0.5, z_s=1.0)
    src = caustics.Sersic(name="src", x0=0.1, y0=0.05, q=0.8, phi=0.3, n=1.0, Re=0.25, Ie=5.0)
    sim = caustics.LensSource(sie, src, pixelscale=0.1, pixels_x=32, name="sim")
    clean = sim().detach()
    data = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    posterior = skyfit.Posterior(
        skyfit.GaussianLikelihood(sim, data, variance=torch.full_like(data, SIGMA**2)))
    assert posterior.names == ["sie.sigma_v"] and posterior.units["sie.sigma_v"] == "km/s"
    fit = skyfit.fit_map(posterior, {"sie.sigma_v": 200.0})
    errors = skyfit.laplace(posterior, fit.x)
    assert abs(float(fit.x[0]) - 250.0) < 4 * float(errors.std[0]) and errors.std[0] < 1.0


def test_results_in_caustics_units_as_astropy_quantities(problem):
    """Before: ``samples.quantity("sie.phi")`` raised UnitsError, caustics' unit strings
    ``"radians"`` and ``"unitless"`` having no astropy equivalent in skyfit's table."""
    u = pytest.importorskip("astropy.units")
    posterior, _ = problem
    x = posterior.initial()
    samples = skyfit.laplace(posterior, x).sample(50, seed=0)
    assert samples.quantity("sie.phi").unit == u.rad
    assert samples.quantity("sie.q").unit == u.dimensionless_unscaled
    assert samples.quantity("sie.Rein").unit == u.arcsec
    for spelling, unit in [("arcsec/pixel", u.arcsec / u.pix), ("Msol", u.solMass),
                           ("Msun/Mpc^3", u.solMass / u.Mpc**3), ("km/s", u.km / u.s)]:
        assert skyfit.units.astropy_unit(spelling) == unit
    # a Quantity in degrees goes into caustics' radians Param
    sim, sie, _, _ = simulator()
    sie.phi.to_dynamic()
    data = sim().detach()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(sim, data, variance=1.0))
    assert abs(float(post.unpack(skyfit.units.from_quantity(
        [30.0] * u.deg, "radians"))["sie.phi"]) - math.pi / 6) < 1e-12


def test_pixelated_source_image_param_is_a_vector_of_the_posterior():
    """caustics' ``Pixelated`` source: its ``image`` Param (8 x 8) becomes 64 entries
    ``src.image[i]``, fitted from a flat start and recovered pixel by pixel."""
    cosmo = caustics.FlatLambdaCDM(name="cosmo")
    sie = caustics.SIE(cosmology=cosmo, name="sie", x0=0.0, y0=0.0, q=0.7, phi=0.6, Rein=1.0,
                       z_l=0.5, z_s=1.0)
    g = torch.linspace(-1, 1, 8)
    y, x = torch.meshgrid(g, g, indexing="ij")
    truth = torch.exp(-(x**2 + y**2) / 0.3)
    src = caustics.Pixelated(name="src", image=truth, x0=0.0, y0=0.0, pixelscale=0.1)
    sim = caustics.LensSource(sie, src, pixelscale=0.1, pixels_x=32, name="sim")
    clean = sim().detach()
    data = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    src.image.to_dynamic()
    posterior = skyfit.Posterior(
        skyfit.GaussianLikelihood(sim, data, variance=torch.full_like(data, 0.05**2)))
    assert posterior.dim == 64 and posterior.names[9] == "src.image[9]"
    assert posterior.unpack(posterior.initial())["src.image"].shape == (8, 8)
    fit = skyfit.fit_map(posterior, torch.full((64,), 0.5, **f64))
    errors = skyfit.laplace(posterior, fit.x)
    assert fit.converged and (errors.std < 0.5).all()  # every source pixel is seen
    pulls = (fit.x - truth.reshape(-1).double()) / errors.std
    assert pulls.abs().max() < 4.5 and abs(float(pulls.mean())) < 0.5


# -- errors a new user meets ------------------------------------------------------------------

def test_errors_name_what_is_wrong(problem):
    posterior, sim = problem
    data = sim().detach()
    with pytest.raises(TypeError, match="LensedImage, got LensSource"):
        skyfit.fit_map(posterior, candidates=[skyfit.init_to_lensed_image(sim, data, SIGMA**2)])
    static_sim, _, _, _ = simulator()
    with pytest.raises(NoFreeParameterError, match="to_dynamic"):
        skyfit.Posterior(skyfit.GaussianLikelihood(static_sim, data, variance=1.0))
    with pytest.raises(KeyError, match="not a dynamic parameter"):
        skyfit.Posterior(posterior.likelihood, priors={"src.n": Normal(1.0, 0.1)})
    # an odd number of pixels puts one on caustics' SIE centre, where its deflection is NaN
    sie = caustics.SIE(cosmology=caustics.FlatLambdaCDM(), x0=0.0, y0=0.0, q=0.7, phi=0.6,
                       Rein=1.0, z_l=0.5, z_s=1.0)
    odd = caustics.LensSource(sie, caustics.Sersic(x0=0.1, y0=0.05, q=0.8, phi=0.3, n=1.0,
                                                   Re=0.25, Ie=5.0), pixelscale=0.1, pixels_x=33)
    image = odd().detach()
    with pytest.raises(skyfit.errors.DataError, match=r"1 NaN .* indices \[\[16, 16\]\]"):
        skyfit.GaussianLikelihood(odd, image, variance=1.0)


def test_how_to_page_example_recovers_the_truth():
    """docs/how-to/bring-your-own-module.md runs as written and its fit finds the truth."""
    page = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "bring-your-own-module.md"
    block = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(block, str(page), "exec"), namespace)
    posterior, fit, errors = namespace["posterior"], namespace["fit"], namespace["errors"]
    assert posterior.names == list(TRUTH) and fit.converged
    assert (_pulls(posterior, fit.x, errors.std) < 4).all(), errors.table(truth=TRUTH)
