"""(e1, e2) ellipticity: conversions both ways, and fit_map's default coordinates for ellipses."""

import math

import numpy as np
import pytest
import torch

import skyfit
from skyfit.inference import fit_map
from skyfit.inference.approximations import units_of
from skyfit.inference.ellipticity import e1e2_to_q_phi, ellipse_pairs, q_phi_to_e1e2


def test_round_trips_both_ways():
    g = torch.Generator().manual_seed(0)
    q = 0.05 + 0.95 * torch.rand(1000, generator=g, dtype=torch.float64)
    phi = math.pi * torch.rand(1000, generator=g, dtype=torch.float64)
    q2, phi2 = e1e2_to_q_phi(*q_phi_to_e1e2(q, phi))
    assert torch.allclose(q2, q, atol=1e-7)
    dphi = torch.remainder(phi2 - phi + math.pi / 2, math.pi) - math.pi / 2
    assert dphi.abs().max() < 1e-6
    e = 0.9 * (2 * torch.rand(1000, 2, generator=g, dtype=torch.float64) - 1) / math.sqrt(2)
    e1b, e2b = q_phi_to_e1e2(*e1e2_to_q_phi(e[:, 0], e[:, 1]))
    assert torch.allclose(torch.stack([e1b, e2b], -1), e, atol=1e-7)


def test_convention_is_lenstronomys():
    # lenstronomy.Util.param_util.phi_q2_ellipticity is the reference when installed; its
    # formula (stated in the docstring) otherwise
    q, phi = np.array([0.3, 0.8, 1.0]), np.array([0.2, 2.9, 1.0])
    ours = [t.numpy() for t in q_phi_to_e1e2(torch.tensor(q), torch.tensor(phi))]
    try:
        from lenstronomy.Util.param_util import phi_q2_ellipticity
        ref = phi_q2_ellipticity(phi, q)
    except ImportError:
        ref = ((1 - q) / (1 + q) * np.cos(2 * phi), (1 - q) / (1 + q) * np.sin(2 * phi))
    assert np.allclose(ours, ref, atol=1e-14)


def test_q_to_one_is_smooth():
    # through e = 0 the map to (q, phi) has finite derivatives and q approaches 1 continuously
    for e1, e2 in ((0.0, 0.0), (1e-9, 0.0), (0.0, -1e-9)):
        e = torch.tensor([e1, e2], dtype=torch.float64, requires_grad=True)
        q, phi = e1e2_to_q_phi(e[0], e[1])
        (gq,) = torch.autograd.grad(q, e)
        assert torch.isfinite(gq).all() and float(q.detach()) == pytest.approx(1.0, abs=1e-7)
        assert 0.0 <= float(phi.detach()) < math.pi


def _sersic_posterior(q_true=0.65, phi_true=0.02):
    grid = skyfit.PixelGrid((32, 32), pixel_scale=0.05)
    truth = dict(x0=0.0, y0=0.0, q=q_true, phi=phi_true, n=1.5, Re=0.35, flux=300.0)
    scene = skyfit.Scene(grid, [skyfit.Sersic(**truth)])
    noise = 0.2
    with torch.no_grad():
        image = scene() + noise * torch.randn(32, 32, generator=torch.Generator().manual_seed(1),
                                              dtype=torch.float64)
    host = skyfit.Sersic("host", **truth)
    fit_scene = skyfit.Scene(grid, [host])
    host.to_dynamic()
    return skyfit.Posterior(skyfit.GaussianLikelihood(fit_scene, image, variance=noise**2))


@pytest.mark.parametrize("phi0, q0", [(2.9, 0.9), (0.6, 1.0), (1.6, 0.4)])
def test_sersic_fits_from_any_angle_agree(phi0, q0):
    post = _sersic_posterior()
    assert ellipse_pairs(post) == [(post.names.index("host.q"), post.names.index("host.phi"))]
    x0 = post.initial().clone()
    x0[post.names.index("host.phi")] = phi0
    x0[post.names.index("host.q")] = q0
    res = fit_map(post, x0)
    assert res.converged, res.reason
    ref = fit_map(post, post.initial())
    phi = res.values["host.phi"]
    assert 0.0 <= phi < math.pi
    dphi = (phi - ref.values["host.phi"] + math.pi / 2) % math.pi - math.pi / 2
    assert abs(dphi) < 1e-5 and res.log_density == pytest.approx(ref.log_density, abs=1e-6)


@pytest.mark.parametrize("module", ["sersic", "sie"])
def test_modules_accept_e1e2_with_the_same_output(module):
    x = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)

    def make():
        if module == "sersic":
            return skyfit.Sersic("host", x0=0.05, y0=-0.02, q=0.55, phi=2.8, n=2.0, Re=0.3,
                                 flux=50.0)
        return skyfit.SIE("lens", x0=0.0, y0=0.0, theta_E=1.0, q=0.7, phi=0.1)

    def out(m):
        if module == "sersic":
            return skyfit.Scene(skyfit.PixelGrid((24, 24), 0.05), [m])()
        return torch.stack(m.deflection(x, x.flip(0)))

    ref = out(make()).detach()
    m = make()
    e1, e2 = skyfit.use_ellipticity(m)
    assert torch.allclose(out(m).detach(), ref, atol=1e-10)
    m.to_dynamic()
    assert not m.q.dynamic and not m.phi.dynamic and e1.dynamic and e2.dynamic


def test_coordinates_keep_every_ellipse_inside_the_bounds():
    # EllipticityCoordinates has no bounds check of its own: to_x must put (q, phi) inside the
    # density's bounds for ANY (e1, e2), including the corners of the box beyond the disc and
    # points far outside it, and the capped map must agree with the uncapped one inside the disc
    from skyfit.inference.ellipticity import EllipticityCoordinates
    post = _sersic_posterior()
    coords = EllipticityCoordinates(post, ellipse_pairs(post))
    i, j = ellipse_pairs(post)[0]
    g = torch.Generator().manual_seed(4)
    y = coords.to_y(post.initial()).repeat(2000, 1)
    y[:, [i, j]] = 3.0 * (2 * torch.rand(2000, 2, generator=g, dtype=torch.float64) - 1)
    x = coords.to_x(y)
    assert ((x[:, [i, j]] >= post.lower[[i, j]]) & (x[:, [i, j]] <= post.upper[[i, j]])).all()
    inside = (y[:, i] ** 2 + y[:, j] ** 2) < 0.99 * float(coords._radius_squared[0])
    q, phi = e1e2_to_q_phi(y[inside, i], y[inside, j])
    assert torch.allclose(x[inside, i], q, rtol=0, atol=1e-14)
    assert torch.allclose(x[inside, j], phi, rtol=0, atol=1e-14)
    # beyond the disc: the same angle, q at (just above) the lower bound
    outside = ~inside & ((y[:, i] ** 2 + y[:, j] ** 2) > float(coords._radius_squared[0]))
    q_lo = float(post.lower[i])
    assert torch.allclose(x[outside, i], torch.full_like(x[outside, i], q_lo), atol=1e-5)
    assert torch.isfinite(coords.log_prob(y[:50])).all()


def test_hessian_matches_finite_differences_of_the_gradient():
    # log_density_hessian (one batched double backward) against central differences of the
    # exact gradient, on a Sersic image posterior in (e1, e2) coordinates
    from skyfit.inference import log_density_hessian
    from skyfit.inference.ellipticity import EllipticityCoordinates
    post = _sersic_posterior()
    coords = EllipticityCoordinates(post, ellipse_pairs(post))
    y = coords.to_y(post.initial()) + 0.01
    H = log_density_hessian(coords, y)
    h = 1e-5
    rows = [(coords.value_and_grad(y + h * e)[1] - coords.value_and_grad(y - h * e)[1]) / (2 * h)
            for e in torch.eye(y.shape[0], dtype=y.dtype)]
    fd = torch.stack(rows)
    assert torch.allclose(H, 0.5 * (fd + fd.T), rtol=1e-5, atol=1e-6 * float(H.abs().max()))
    assert torch.equal(H, H.T)


def test_a_float32_model_gets_e1e2_and_the_fit_keeps_its_units():
    # a phi bound declared in float32 is pi rounded to 3.14159274: its ellipse is still an
    # ellipse; the fit in (e1, e2) reports the density's own names and units
    host = skyfit.Sersic("host", q=0.7, phi=0.5, Re=0.3, flux=100.0).to(dtype=torch.float32)
    scene = skyfit.Scene(skyfit.PixelGrid((16, 16), pixel_scale=0.05), [host])
    with torch.no_grad():
        image = scene()
    host.q.to_dynamic()
    host.phi.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(scene, image, variance=1.0))
    i_q, i_phi = post.names.index("host.q"), post.names.index("host.phi")
    assert abs(float(post.upper[i_phi]) - math.pi) > 1e-12  # the rounded bound
    assert ellipse_pairs(post) == [(i_q, i_phi)]
    start = post.initial().clone()
    start[i_q], start[i_phi] = 0.9, 1.2
    res = fit_map(post, start)  # in (e1, e2): the float32 model, evaluated in float64
    assert res.names == post.names and "host.e1" not in res.units
    assert res.units["host.phi"] == units_of(post)["host.phi"] != ""  # lost in (e1, e2) before
    assert res.values["host.q"] == pytest.approx(0.7, abs=1e-4)
    assert res.values["host.phi"] == pytest.approx(0.5, abs=1e-4)
