"""Mass models against lenstronomy (float64, 100x100 grid of 0.05" pixels), distances against
astropy, and the autograd lensing quantities against their analytic forms."""

import math

import numpy as np
import pytest
import torch

import skyfit

lenstronomy = pytest.importorskip("lenstronomy")
from astropy.cosmology import FlatLambdaCDM as AstropyFlatLambdaCDM  # noqa: E402
from lenstronomy.Cosmo.lens_cosmo import LensCosmo  # noqa: E402
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402

N, SCALE = 100, 0.05
_c = (np.arange(N) - (N - 1) / 2) * SCALE
Y, X = np.meshgrid(_c, _c, indexing="ij")
x, y = torch.tensor(X), torch.tensor(Y)


def e1e2(q, phi):
    e = (1 - q) / (1 + q)
    return e * math.cos(2 * phi), e * math.sin(2 * phi)


Q, PHI = 0.7, 0.4
E1, E2 = e1e2(Q, PHI)
CENTRE = dict(center_x=0.1, center_y=-0.05)

# (lenstronomy name, skyfit model, lenstronomy kwargs)
CASES = {
    "SIS": ("SIS", lambda: skyfit.SIS(x0=0.1, y0=-0.05, theta_E=1.2),
            dict(theta_E=1.2, **CENTRE)),
    "SIE": ("SIE", lambda: skyfit.SIE(x0=0.1, y0=-0.05, q=Q, phi=PHI, theta_E=1.2),
            dict(theta_E=1.2, e1=E1, e2=E2, **CENTRE)),
    "PointMass": ("POINT_MASS", lambda: skyfit.PointMass(x0=0.1, y0=-0.05, theta_E=1.2),
                  dict(theta_E=1.2, **CENTRE)),
    "ExternalShear": ("SHEAR", lambda: skyfit.ExternalShear(gamma1=0.05, gamma2=-0.03),
                      dict(gamma1=0.05, gamma2=-0.03)),
    "MassSheet": ("CONVERGENCE", lambda: skyfit.MassSheet(kappa=0.1), dict(kappa=0.1)),
    "NFW": ("NFW", lambda name=None: skyfit.NFW(name, x0=0.1, y0=-0.05, Rs=1.3, alpha_Rs=0.8),
            dict(Rs=1.3, alpha_Rs=0.8, **CENTRE)),
    "EPL_steep": ("EPL", lambda: skyfit.EPL(x0=0.1, y0=-0.05, q=Q, phi=PHI, theta_E=1.2, gamma=2.2),
                  dict(theta_E=1.2, gamma=2.2, e1=E1, e2=E2, **CENTRE)),
    "EPL_shallow_round": ("EPL", lambda: skyfit.EPL(x0=0.1, y0=-0.05, q=0.4, phi=2.0, theta_E=0.9,
                                                    gamma=1.6),
                          dict(theta_E=0.9, gamma=1.6, e1=e1e2(0.4, 2.0)[0], e2=e1e2(0.4, 2.0)[1],
                               **CENTRE)),
}
TOL = {"EPL_steep": 1e-5, "EPL_shallow_round": 1e-5}


def relative_error(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    scale = np.abs(theirs).max()
    return np.abs(ours - theirs).max() / scale if scale > 0 else np.abs(ours).max()


@pytest.mark.parametrize("case", list(CASES))
def test_deflection_convergence_potential_match_lenstronomy(case):
    name, build, kwargs = CASES[case]
    lens, model = build(), LensModel([name])
    tol = TOL.get(case, 1e-6)
    ax, ay = model.alpha(X, Y, [kwargs])
    with torch.no_grad():
        tx, ty = lens.deflection(x, y)
        kappa = lens.convergence(x, y)
        psi = lens.potential(x, y)
    assert relative_error(tx, ax) < tol and relative_error(ty, ay) < tol
    # lenstronomy's SIE Hessian is a finite difference (step 1e-10): compare our analytic kappa
    # with its analytic formula, lenstronomy's EPL at gamma = 2 (same profile, exact Hessian)
    ref = (LensModel(["EPL"]), [dict(kwargs, gamma=2.0)]) if name == "SIE" else (model, [kwargs])
    assert relative_error(kappa, ref[0].kappa(X, Y, ref[1])) < tol
    dpsi = psi.numpy() - model.potential(X, Y, [kwargs])  # potentials agree up to a constant
    assert np.abs(dpsi - dpsi.mean()).max() / np.abs(psi.numpy()).max() < tol


@pytest.mark.parametrize("case", ["SIE", "NFW", "EPL_steep", "ExternalShear", "PointMass"])
def test_autograd_hessian_matches_lenstronomy_hessian(case):
    name, build, kwargs = CASES[case]
    model = LensModel(["EPL"]) if name == "SIE" else LensModel([name])
    kwargs = dict(kwargs, gamma=2.0) if name == "SIE" else kwargs
    fxx, fxy, _, fyy = model.hessian(X, Y, [kwargs])
    psi_xx, psi_xy, psi_yy = build().hessian(x, y)
    for ours, theirs in ((psi_xx, fxx), (psi_xy, fxy), (psi_yy, fyy)):
        assert relative_error(ours.detach(), theirs) < 1e-6


def test_convergence_is_half_the_laplacian_of_the_potential():
    lens = skyfit.CompositeLens([CASES["EPL_steep"][1](), CASES["NFW"][1](name="halo")])
    psi_xx, _, psi_yy = lens.hessian(x, y)
    kappa = lens.convergence(x, y)
    assert relative_error((0.5 * (psi_xx + psi_yy)).detach(), kappa.detach()) < 1e-10


def test_sie_with_q_one_is_the_sis():
    sie = skyfit.SIE(x0=0.1, y0=-0.05, q=1.0, phi=0.3, theta_E=1.2)
    sis = CASES["SIS"][1]()
    for a, b in zip(sie.deflection(x, y), sis.deflection(x, y)):
        assert relative_error(a, b) < 1e-14


@pytest.mark.parametrize("q0", [1.0, 1.0 - 1e-9, 0.7])
def test_sie_and_epl_gradient_in_q_is_right_at_and_below_one(q0):
    # q = 1 is inside `valid` (a natural start): the q-derivative runs through e = sqrt(1 - q^2)
    xs = torch.tensor([0.7, 0.3, -1.1], dtype=torch.float64)
    ys = torch.tensor([0.4, -1.2, 0.5], dtype=torch.float64)
    for cls, kw in ((skyfit.SIE, {}), (skyfit.EPL, {"gamma": 2.2})):
        def f(q, cls=cls, kw=kw):
            return torch.stack(cls(q=q, phi=0.3, theta_E=1.2, **kw).deflection(xs, ys))
        q = torch.tensor(q0, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(f, q)
        h = 1e-6  # second-order one-sided difference from below (q <= 1)
        fd = (3 * f(q) - 4 * f(q - h) + f(q - 2 * h)) / (2 * h)
        torch.testing.assert_close(J, fd, atol=1e-6, rtol=0)


def test_epl_with_gamma_two_is_the_sie():
    epl = skyfit.EPL(x0=0.1, y0=-0.05, q=Q, phi=PHI, theta_E=1.2, gamma=2.0)
    sie = CASES["SIE"][1]()
    for a, b in zip(epl.deflection(x, y), sie.deflection(x, y)):
        assert relative_error(a, b) < 1e-12


def test_shear_and_magnification_from_autograd_match_lenstronomy():
    lens = skyfit.CompositeLens([CASES["SIE"][1](), CASES["ExternalShear"][1]()])
    model = LensModel(["EPL", "SHEAR"])
    kw = [dict(CASES["SIE"][2], gamma=2.0), CASES["ExternalShear"][2]]
    g1, g2 = lens.shear(x, y)
    t1, t2 = model.gamma(X, Y, kw)
    assert relative_error(g1.detach(), t1) < 1e-6 and relative_error(g2.detach(), t2) < 1e-6
    mu = lens.magnification(x, y).detach().numpy()
    mu_ref = model.magnification(X, Y, kw)
    assert np.max(np.abs(mu - mu_ref) / np.abs(mu_ref)) < 1e-6


def test_composite_sums_its_components_and_empty_is_identity():
    a, b = CASES["SIE"][1](), CASES["NFW"][1](name="halo")
    both = skyfit.CompositeLens([a, b])
    for s, u, v in zip(both.deflection(x, y), a.deflection(x, y), b.deflection(x, y)):
        assert torch.allclose(s, u + v, rtol=0, atol=1e-15)
    ex, ey = skyfit.CompositeLens([]).deflection(x, y)
    assert ex.abs().max() == 0 and ey.abs().max() == 0
    # unnamed components of one class are told apart by position
    twin = skyfit.CompositeLens([skyfit.SIE(theta_E=1.0), skyfit.SIE(x0=0.3, theta_E=0.5)])
    sim = skyfit.LensedImage(skyfit.PixelGrid((8, 8), 0.2), twin, [skyfit.Sersic(Re=0.3)])
    twin.to_dynamic(children_only=False)
    like = skyfit.GaussianLikelihood(sim, torch.zeros(8, 8), variance=torch.ones(8, 8))
    names = skyfit.Posterior(like).names
    assert names[:2] == ["lenses.0.x0", "lenses.0.y0"] and "lenses.1.theta_E" in names


def test_batched_lens_parameters_broadcast_in_front_of_coordinates():
    theta_E = torch.tensor([0.8, 1.0, 1.3], dtype=torch.float64)
    ax, _ = skyfit.SIE(q=Q, phi=PHI, theta_E=theta_E).deflection(x, y)
    assert ax.shape == (3, N, N)
    single = skyfit.SIE(q=Q, phi=PHI, theta_E=1.3).deflection(x, y)[0]
    assert torch.allclose(ax[2], single, rtol=1e-14)
    mu = skyfit.SIE(q=Q, phi=PHI, theta_E=theta_E).magnification(x, y)
    assert mu.shape == (3, N, N)


# --- distances and physical parametrisations ---------------------------------------------------

ASTROPY = AstropyFlatLambdaCDM(H0=70.0, Om0=0.3)


def test_distances_match_astropy():
    cosmo = skyfit.FlatLambdaCDM(H0=70.0, Om0=0.3)
    z = torch.tensor([0.1, 0.5, 1.0, 2.5, 6.0], dtype=torch.float64)
    ours = cosmo.angular_diameter_distance(z).numpy()
    assert np.allclose(ours, ASTROPY.angular_diameter_distance(z.numpy()).value, rtol=1e-10)
    ours12 = cosmo.angular_diameter_distance_z1z2(0.5, 2.0).item()
    assert math.isclose(ours12, ASTROPY.angular_diameter_distance(0.5, 2.0).value,
                        rel_tol=1e-10)
    # Python-number redshifts not exact in float32 (0.3 is 0.30000001 there) keep 1e-12
    D_dt = cosmo.time_delay_distance(0.3, 1.7).item()
    Dl, Ds = ASTROPY.angular_diameter_distance([0.3, 1.7]).value
    Dls = ASTROPY.angular_diameter_distance(0.3, 1.7).value
    assert math.isclose(D_dt, 1.3 * Dl * Ds / Dls, rel_tol=1e-12)
    assert math.isclose(cosmo.angular_diameter_distance(0.3).item(), Dl, rel_tol=1e-12)


def test_distances_are_differentiable_in_H0():
    H0 = torch.tensor(70.0, dtype=torch.float64, requires_grad=True)
    cosmology = skyfit.FlatLambdaCDM(H0=H0)
    D = skyfit.LensGeometry(z_l=0.5, z_s=2.0, cosmology=cosmology).time_delay_distance()
    (grad,) = torch.autograd.grad(D, H0)
    assert math.isclose(grad.item(), -D.item() / 70.0, rel_tol=1e-12)  # D ~ 1 / H0


def test_physical_parametrisations_match_lenstronomy():
    geometry = skyfit.LensGeometry(z_l=0.5, z_s=2.0)
    lens_cosmo = LensCosmo(z_lens=0.5, z_source=2.0, cosmo=ASTROPY)
    sis = skyfit.SIS.from_velocity_dispersion(250.0, geometry)
    assert math.isclose(sis.theta_E.value.item(), lens_cosmo.sis_sigma_v2theta_E(250.0),
                        rel_tol=1e-8)
    # lenstronomy's own constants (G = 6.67384e-11, M_sun = 1.9891e30, rho_crit 2.775e11 h^2)
    # differ from CODATA 2018 / IAU 2015 by up to 3.5e-4, hence the looser tolerance for masses
    point = skyfit.PointMass.from_mass(1e11, geometry)
    ref = math.sqrt(lens_cosmo.mass_in_theta_E(1.0) ** -1 * 1e11)  # M(<theta) = pi theta^2 S_c
    assert math.isclose(point.theta_E.value.item(), ref, rel_tol=1e-3)
    halo = skyfit.NFW.from_m200c(1e13, 6.0, geometry)
    Rs, alpha_Rs = lens_cosmo.nfw_physical2angle(1e13, 6.0)
    assert math.isclose(halo.Rs.value.item(), Rs, rel_tol=1e-3)
    assert math.isclose(halo.alpha_Rs.value.item(), alpha_Rs, rel_tol=1e-3)


def test_point_mass_einstein_radius_from_first_principles():
    import astropy.constants as const
    import astropy.units as u

    geometry = skyfit.LensGeometry(z_l=0.3, z_s=1.0)
    D_l, D_s = ASTROPY.angular_diameter_distance([0.3, 1.0])
    D_ls = ASTROPY.angular_diameter_distance(0.3, 1.0)
    theta = np.sqrt(4 * const.G * 1e12 * const.M_sun / const.c**2 * D_ls / (D_l * D_s))
    expected = (theta.decompose().value * u.rad).to(u.arcsec).value
    ours = skyfit.PointMass.from_mass(1e12, geometry).theta_E.value.item()
    assert math.isclose(ours, expected, rel_tol=1e-9)


def test_geometry_rejects_a_source_in_front_of_the_lens():
    with pytest.raises(ValueError, match="behind the lens"):
        skyfit.LensGeometry(z_l=1.0, z_s=0.5)
