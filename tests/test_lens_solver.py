"""Image positions, magnifications and time delays against lenstronomy's LensEquationSolver and
arrival times (float64); the image-count bookkeeping; differentiable lensed point sources."""

import math
import warnings

import numpy as np
import pytest
import torch

import skyfit

pytest.importorskip("lenstronomy")
from astropy.cosmology import FlatLambdaCDM  # noqa: E402
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver  # noqa: E402

Z_L, Z_S = 0.5, 2.0
GEOMETRY = skyfit.LensGeometry(z_l=Z_L, z_s=Z_S)  # H0 = 70, Om0 = 0.3, as below
ASTROPY = FlatLambdaCDM(H0=70.0, Om0=0.3)


def e1e2(q, phi):
    e = (1 - q) / (1 + q)
    return e * math.cos(2 * phi), e * math.sin(2 * phi)


def sie_shear():
    lens = skyfit.CompositeLens([
        skyfit.SIE(x0=0.02, y0=-0.01, q=0.7, phi=0.4, theta_E=1.2),
        skyfit.ExternalShear(gamma1=0.04, gamma2=-0.02),
    ])
    e1, e2 = e1e2(0.7, 0.4)
    sie = dict(theta_E=1.2, e1=e1, e2=e2, center_x=0.02, center_y=-0.01)
    return lens, ["SIE", "SHEAR"], [sie, dict(gamma1=0.04, gamma2=-0.02)]


def epl():
    e1, e2 = e1e2(0.6, 1.0)
    return (skyfit.EPL(q=0.6, phi=1.0, theta_E=1.0, gamma=2.15), ["EPL"],
            [dict(theta_E=1.0, gamma=2.15, e1=e1, e2=e2)])


def nfw_sis():
    lens = skyfit.CompositeLens([skyfit.NFW(Rs=2.0, alpha_Rs=1.5),
                                 skyfit.SIS(x0=0.5, y0=0.0, theta_E=0.3)])
    return lens, ["NFW", "SIS"], [dict(Rs=2.0, alpha_Rs=1.5), dict(theta_E=0.3, center_x=0.5)]


CASES = {
    "SIE+shear quad": (sie_shear, (0.05, 0.03), 4),
    "SIE+shear double": (sie_shear, (0.3, 0.2), 2),
    "EPL quad": (epl, (0.04, -0.03), 4),
    "NFW+SIS with central image": (nfw_sis, (0.1, 0.05), 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_images_magnifications_and_delays_match_lenstronomy(case):
    build, (bx, by), n_images = CASES[case]
    lens, names, kwargs = build()
    model = LensModel(names, z_lens=Z_L, z_source=Z_S, cosmo=ASTROPY)
    xs, ys = LensEquationSolver(model).image_position_from_source(
        bx, by, kwargs, min_distance=0.02, search_window=6, precision_limit=1e-12,
        num_iter_max=100)
    images = skyfit.find_images(lens, bx, by)
    assert images.n == len(xs) == n_images
    # lenstronomy's SIE Hessian is a finite difference: take magnifications from its EPL(2)
    exact = LensModel(["EPL" if n == "SIE" else n for n in names])
    exact_kwargs = [dict(k, gamma=2.0) if n == "SIE" else k for n, k in zip(names, kwargs)]
    arrival = model.arrival_time(xs, ys, kwargs, x_source=bx, y_source=by)
    delays = skyfit.LensedPointSource(lens, GEOMETRY, x0=bx, y0=by).time_delays().detach()
    for i in range(images.n):
        d = np.hypot(xs - images.x[i].item(), ys - images.y[i].item())
        j = int(np.argmin(d))
        assert d[j] < 1e-6  # arcsec
        mu = exact.magnification(xs[j], ys[j], exact_kwargs)
        assert abs(images.magnification[i].item() / mu - 1) < 1e-4
        assert abs(delays[i].item() - (arrival[j] - arrival.min())) < 1e-3  # days
    assert torch.all(delays[1:] > 0)  # sorted by arrival


def test_isothermal_central_image_is_absorbed_by_the_singularity():
    lens, _, _ = sie_shear()
    images = skyfit.find_images(lens, 0.05, 0.03)
    assert images.n == 4 and int(images.parity.sum()) == 0  # two minima, two saddles
    assert images.unresolved_centres == [(0.02, -0.01)]  # the would-be maximum


def test_shallow_power_law_has_a_demagnified_central_image():
    lens = skyfit.EPL(q=0.8, phi=0.3, theta_E=1.0, gamma=1.6)
    images = skyfit.find_images(lens, 0.05, 0.02)
    assert images.n == 5 and int(images.parity.sum()) == 1
    central = torch.hypot(images.x, images.y).argmin()
    assert images.magnification[central] > 0 and images.magnification[central] < 0.1
    assert images.fermat[central] == images.fermat.max()  # a maximum arrives last


def test_point_mass_images_follow_the_analytic_solution():
    beta = 0.3
    images = skyfit.find_images(skyfit.PointMass(theta_E=1.0), beta, 0.0)
    root = math.sqrt(beta**2 + 4)
    expected = sorted([(beta + root) / 2, (beta - root) / 2], reverse=True)
    assert torch.allclose(images.x, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    u = beta
    mu_total = (u**2 + 2) / (u * math.sqrt(u**2 + 4))
    assert math.isclose(images.magnification.abs().sum().item(), mu_total, rel_tol=1e-10)


def test_missing_images_raise_a_warning_that_says_so():
    lens, _, _ = sie_shear()
    # a window that cuts through the Einstein ring loses images: the count must not add up
    with pytest.warns(skyfit.lenses.ImageCountWarning, match="missing"):
        images = skyfit.find_images(lens, 0.05, 0.03, window=2.0, centre=(0.8, 0.8))
    assert images.n < 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert skyfit.find_images(lens, 0.05, 0.03).n == 4


def test_lensed_point_source_positions_are_differentiable():
    theta_E = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    lens = skyfit.SIS(theta_E=theta_E)
    ps = skyfit.LensedPointSource(lens, x0=0.2, y0=0.0)
    images = ps.images()
    (dx,) = torch.autograd.grad(images.x[0], theta_E)  # x = beta + theta_E for the outer image
    assert math.isclose(dx.item(), 1.0, rel_tol=1e-10)
    x, y, flux = ps.position_flux()
    assert torch.allclose(flux, images.magnification.abs())


def test_lensed_supernova_images_follow_the_delayed_light_curve():
    lens, _, _ = sie_shear()
    lc = skyfit.GaussianLightCurve(t0=0.0, sigma=8.0, peak_flux=2.0)
    times = torch.linspace(-20, 60, 9, dtype=torch.float64)
    sn = skyfit.LensedSupernova(lens, GEOMETRY, lc, times, x0=0.05, y0=0.03)
    curves = sn.light_curves().detach()
    images = sn.images()
    delays = sn.time_delays(images).detach()
    assert curves.shape == (9, 4)
    for i in range(4):
        expected = images.magnification[i].abs() * lc.flux(times - delays[i])
        assert torch.allclose(curves[:, i], expected.detach(), rtol=1e-12)
    grid = skyfit.PixelGrid((64, 64), 0.06)
    sim = skyfit.LensedImage(grid, lens, psf=skyfit.GaussianPSF(sigma=0.05, size=11),
                             point_sources=[sn])
    stack = sim().detach()
    assert stack.shape == (9, 64, 64)
    assert torch.allclose(stack.sum((-2, -1)), curves.sum(-1), rtol=1e-3)  # all light on chip


def test_lensed_point_source_under_vmap_says_why_it_cannot():
    ps = skyfit.LensedPointSource(skyfit.SIS(theta_E=1.0), x0=0.2)
    ps.x0.to_dynamic()
    with pytest.raises(RuntimeError, match="cannot run under torch.vmap"):
        torch.vmap(ps.position_flux)(torch.tensor([[0.2], [0.1]], dtype=torch.float64))
