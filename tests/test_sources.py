"""Sources: normalisation, Sersic b_n and total flux, half-light radius, gradients, batching."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch

from skyfit import (
    Gaussian,
    Pixelated,
    PixelGrid,
    Sersic,
)
from skyfit.sources import gaussian_profile, profiles, sersic_b, sersic_total_flux
from skyfit.sources.profiles import sersic_b_exact

f64 = torch.float64


def t64(*values):
    """float64 tensors (Params made from Python floats are float32)."""
    return [torch.tensor(v, dtype=f64) for v in values]


# --------------------------------------------------------------------------- normalisation


def test_gaussian_profile_integrates_to_one():
    sigma, q, phi = 0.3, 0.5, 0.7
    h = sigma / 20  # midpoint rule on a smooth function: spectrally accurate
    ax = (torch.arange(-400, 400, dtype=f64) + 0.5) * h
    y, x = torch.meshgrid(ax + 0.1, ax - 0.2, indexing="ij")
    p = gaussian_profile(x, y, *t64(-0.2, 0.1, q, phi, sigma))
    assert (p.sum() * h**2).item() == pytest.approx(1.0, abs=1e-12)


IMAGES = {
    # the fields cover > 8 sigma of the Gaussian and > 10 Re of the Sersics (major axis):
    # the flux outside is < 1e-6 of the total
    "gaussian": (lambda: Gaussian(x0=0.07, y0=-0.04, q=0.6, phi=0.3, sigma=0.2, flux=5.0),
                 PixelGrid((64, 64), 0.05, supersample=3)),
    "sersic_n0.5": (lambda: Sersic(x0=0.07, y0=-0.04, q=0.7, phi=1.0, n=0.5, Re=0.3, flux=5.0),
                    PixelGrid((64, 64), 0.05, supersample=3)),
    "sersic_n1": (lambda: Sersic(x0=0.07, y0=-0.04, q=0.7, phi=1.0, n=1.0, Re=0.2, flux=5.0),
                  PixelGrid((100, 100), 0.05, supersample=3)),
}


@pytest.mark.parametrize("name", IMAGES)
def test_image_on_a_supersampled_grid_sums_to_flux(name):
    make, grid = IMAGES[name]
    x, y = grid.subpixel_coordinates()
    image = grid.integrate(make().brightness(x, y))
    assert image.shape == grid.shape
    assert image.sum().item() == pytest.approx(5.0, rel=1e-4)


# --------------------------------------------------------------------------- Sersic b_n, flux


def test_sersic_b_exact_matches_scipy_gammaincinv():
    n = torch.cat([torch.linspace(0.01, 0.2, 40, dtype=f64), torch.linspace(0.2, 20.0, 400,
                                                                             dtype=f64)])
    truth = scipy.special.gammaincinv(2 * n.numpy(), 0.5)
    b64 = sersic_b_exact(n)
    assert b64.dtype == f64
    np.testing.assert_allclose(b64.numpy(), truth, rtol=1e-13, atol=0)
    b32 = sersic_b_exact(n.float())
    assert b32.dtype == torch.float32
    np.testing.assert_allclose(b32.double().numpy(), truth, rtol=1e-5, atol=0)


def test_sersic_b_exact_derivative_matches_scipy_finite_difference():
    n = torch.tensor([0.5, 1.0, 2.5, 4.0, 8.0], dtype=f64, requires_grad=True)
    (db,) = torch.autograd.grad(sersic_b_exact(n).sum(), n)
    h = 1e-5
    nn = n.detach().numpy()
    fd = (scipy.special.gammaincinv(2 * (nn + h), 0.5)
          - scipy.special.gammaincinv(2 * (nn - h), 0.5)) / (2 * h)
    np.testing.assert_allclose(db.numpy(), fd, rtol=1e-7)


def test_sersic_b_exact_second_derivative_matches_high_precision_values():
    # Laplace fits differentiate b(n) twice: the Halley iterations must carry exact Hessians.
    # Truth: mpmath (a dependency of torch, via sympy) at 40 digits
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    n = torch.tensor([0.25, 1.0, 2.5, 8.0], dtype=f64, requires_grad=True)
    (db,) = torch.autograd.grad(sersic_b_exact(n).sum(), n, create_graph=True)
    (d2b,) = torch.autograd.grad(db.sum(), n)

    def b_of(v):
        return mp.findroot(lambda t: mp.gammainc(2 * v, 0, t, regularized=True) - 0.5,
                           2 * v - mp.mpf(1) / 3)

    truth = [float(mp.diff(b_of, mp.mpf(float(v)), 2)) for v in n.detach()]
    np.testing.assert_allclose(d2b.numpy(), truth, rtol=1e-7)


def test_sersic_b_fit_within_4e_9_of_the_exact_root_on_a_dense_grid():
    n = torch.linspace(0.2, 10.0, 200_001, dtype=f64)
    rel = (sersic_b(n) / sersic_b_exact(n) - 1).abs()
    assert rel.max().item() < 4e-9
    # past the valid range it keeps Ciotti & Bertin's asymptotics (the exact series stops at 20)
    big = torch.logspace(1, 4, 2001, dtype=f64)
    truth = scipy.special.gammaincinv(2 * big.numpy(), 0.5)
    np.testing.assert_allclose(sersic_b(big).numpy(), truth, rtol=4e-9)
    b32 = sersic_b(n[:2000].float())
    assert b32.dtype == torch.float32
    np.testing.assert_allclose(b32.double().numpy(), sersic_b_exact(n[:2000]).numpy(), rtol=2e-6)


def test_sersic_b_below_the_fit_range_is_the_series_first_term_within_10_percent():
    n = torch.linspace(0.01, 0.199, 200, dtype=f64, requires_grad=True)
    b = sersic_b(n)
    truth = torch.as_tensor(scipy.special.gammaincinv(2 * n.detach().numpy(), 0.5))
    rel = (b.detach() / truth - 1).abs()
    assert rel.max().item() < 0.1 and rel[-1].item() > 0.05  # the first term (9.6% at 0.199)
    (grad,) = torch.autograd.grad(b.sum(), n)
    assert torch.isfinite(grad).all()


def test_sersic_b_fit_derivatives_close_to_the_exact_ones():
    n = torch.linspace(0.2, 10.0, 2001, dtype=f64, requires_grad=True)
    grads = []
    for f in (sersic_b, sersic_b_exact):
        (db,) = torch.autograd.grad(f(n).sum(), n, create_graph=True)
        (d2b,) = torch.autograd.grad(db.sum(), n)
        grads.append((db.detach(), d2b))
    np.testing.assert_allclose(grads[0][0].numpy(), grads[1][0].numpy(), rtol=3e-7)
    # b'' (what Laplace fits see) to 1.2e-5 of its largest value (4.0 at n = 0.2); it falls to
    # ~2e-5 at n = 10, so the comparison is on the scale of its largest values
    np.testing.assert_allclose(grads[0][1].numpy(), grads[1][1].numpy(), rtol=0,
                               atol=2e-5 * grads[1][1].abs().max().item())


@pytest.mark.parametrize("n", [0.2, 0.5, 1.5, 4.0, 10.0])
def test_sersic_images_with_the_fitted_b_within_1e_6_of_the_exact_b(n, monkeypatch):
    grid = PixelGrid((48, 48), 0.04, supersample=3)
    src = Sersic(x0=0.05, y0=-0.03, q=0.6, phi=0.5, n=n, Re=0.3, flux=100.0)
    x, y = grid.coordinates()
    fitted = src.brightness(x, y)
    monkeypatch.setattr(profiles, "sersic_b", sersic_b_exact)
    exact = src.brightness(x, y)
    # per pixel wherever the profile is above 1e-12 of its peak; far out at n = 0.2 (1e-40 of
    # the peak) the exponent b (R / Re)^5 reaches ~700 and turns 4e-9 in b into 2.5e-6
    peak = exact.max()
    seen = exact > 1e-12 * peak
    assert ((fitted - exact)[seen].abs() / exact[seen]).max().item() < 1e-6
    assert ((fitted - exact).abs() / peak).max().item() < 1e-8


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_sersic_total_flux_matches_numerical_integration(n):
    Ie, Re = 1.3, 0.7
    b = scipy.special.gammaincinv(2 * n, 0.5)

    # 2 pi int I(r) r dr with r = Re e^s: a smooth bell in s whatever n
    def integrand(s):
        return 2 * math.pi * Ie * math.exp(-b * (math.exp(s / n) - 1)) * Re**2 * math.exp(2 * s)

    numeric, err = scipy.integrate.quad(integrand, -60, 30, limit=400, epsabs=0, epsrel=1e-12)
    formula = sersic_total_flux(*t64(Ie, Re, n)).item()
    assert formula == pytest.approx(numeric, rel=1e-9)
    # Python numbers work too (float32, like every tensor made from a Python float)
    assert sersic_total_flux(Ie, Re, n).item() == pytest.approx(numeric, rel=1e-5)


def elliptical_polar_nodes(x0, y0, q, phi, Re, n, u_max, n_u=96, n_theta=48):
    """Gauss-Legendre nodes in u = (R / Re)^(1/n) on [0, u_max] and uniform angles, mapped onto
    the ellipse q x'^2 + y'^2 / q = R^2 (area element R dR dtheta); returns x, y, weights."""
    u, wu = np.polynomial.legendre.leggauss(n_u)
    u = 0.5 * u_max * (u + 1)
    wu = 0.5 * u_max * wu
    theta = np.arange(n_theta) * 2 * np.pi / n_theta
    R = Re * u**n
    dR_du = n * Re * u ** (n - 1)
    xp = R[:, None] * np.cos(theta) / np.sqrt(q)
    yp = R[:, None] * np.sin(theta) * np.sqrt(q)
    x = x0 + xp * np.cos(phi) - yp * np.sin(phi)
    y = y0 + xp * np.sin(phi) + yp * np.cos(phi)
    w = (wu * R * dR_du)[:, None] * np.full(n_theta, 2 * np.pi / n_theta)
    return torch.tensor(x), torch.tensor(y), torch.tensor(w)


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0, 8.0])
def test_sersic_encloses_half_its_flux_within_Re_and_the_analytic_fraction_elsewhere(n):
    x0, y0, q, phi, Re, flux = 0.3, -0.2, 0.6, 1.1, 0.4, 2.0
    src = Sersic(**dict(zip(["x0", "y0", "q", "phi", "n", "Re", "flux"],
                            t64(x0, y0, q, phi, n, Re, flux))))
    b = scipy.special.gammaincinv(2 * n, 0.5)
    for ratio in (0.5, 1.0, 3.0):
        x, y, w = elliptical_polar_nodes(x0, y0, q, phi, Re, n, ratio ** (1 / n))
        enclosed = (src.brightness(x, y) * w).sum().item()
        expected = flux * scipy.special.gammainc(2 * n, b * ratio ** (1 / n))
        # the profile softens r by 1e-6 arcsec (finite gradient at the centre): for n = 8 that
        # removes ~4e-7 of the flux, negligible for n <= 4
        rel = 1e-8 if n <= 4 else 1e-6
        assert enclosed == pytest.approx(expected, rel=rel), ratio
        if ratio == 1.0:
            assert enclosed == pytest.approx(flux / 2, rel=rel)


# --------------------------------------------------------------------------- gradients, dtypes

SOURCES = {
    "gaussian": lambda: Gaussian(x0=0.05, y0=-0.03, q=0.6, phi=0.4, sigma=0.3, flux=2.0),
    "sersic": lambda: Sersic(x0=0.05, y0=-0.03, q=0.6, phi=0.4, n=2.5, Re=0.4, flux=2.0),
    "pixelated": lambda: Pixelated(
        values=torch.rand(6, 7, generator=torch.Generator().manual_seed(1), dtype=f64),
        pixel_scale=0.1, x0=0.013, y0=-0.021,
    ),
}


def sample_points(dtype=f64):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(3, 4, generator=g, dtype=dtype) - 0.5) * 0.5, \
        (torch.rand(3, 4, generator=g, dtype=dtype) - 0.5) * 0.5


@pytest.mark.parametrize("name", SOURCES)
def test_brightness_gradients_match_finite_differences(name):
    src = SOURCES[name]()
    src.to_dynamic()
    v = src.get_values().to(f64).requires_grad_(True)
    x, y = sample_points()
    assert torch.autograd.gradcheck(lambda p: src.brightness(x, y, p), (v,), eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


@pytest.mark.parametrize("name", SOURCES)
def test_brightness_keeps_the_coordinate_dtype(name):
    src = SOURCES[name]()
    x, y = sample_points()
    b64 = src.brightness(x, y)
    b32 = src.brightness(x.float(), y.float())
    assert b64.dtype == f64 and b32.dtype == torch.float32
    torch.testing.assert_close(b32.double(), b64, rtol=1e-4, atol=1e-5 * b64.abs().max().item())


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("name", ["gaussian", "sersic", "pixelated"])
def test_per_epoch_parameters_give_a_stack_of_images_equal_to_a_loop(name):
    grid = PixelGrid((16, 16), 0.05, supersample=2)
    x, y = grid.subpixel_coordinates()
    src = SOURCES[name]()
    x0s = torch.tensor([0.0, 0.013, -0.04], dtype=f64)
    batch_param = "x0" if name == "pixelated" else "flux"
    values = x0s if name == "pixelated" else torch.tensor([1.0, 2.5, 0.2], dtype=f64)
    getattr(src, batch_param).value = values
    stack = grid.integrate(src.brightness(x, y))
    assert stack.shape == (3, 16, 16)
    for i, v in enumerate(values):
        getattr(src, batch_param).value = v
        torch.testing.assert_close(stack[i], grid.integrate(src.brightness(x, y)))


def test_pixelated_with_per_epoch_stamps_and_positions_pairs_them():
    g = torch.Generator().manual_seed(2)
    stamps = torch.rand(3, 5, 5, generator=g, dtype=f64)
    x0s = torch.tensor([0.0, 0.013, -0.04], dtype=f64)
    x, y = sample_points()
    src = Pixelated(values=stamps[0], pixel_scale=0.1, x0=x0s)
    src.values.value = stamps  # the Param takes leading batch dimensions
    out = src.brightness(x, y)
    assert out.shape == (3, 3, 4)
    for i in range(3):
        one = Pixelated(values=stamps[i], pixel_scale=0.1, x0=x0s[i]).brightness(x, y)
        torch.testing.assert_close(out[i], one)


def test_vmap_of_sersic_brightness_over_parameter_vectors_equals_a_loop():
    src = SOURCES["sersic"]()
    src.to_dynamic()
    v = src.get_values().to(f64)
    V = v * (1 + 0.05 * torch.randn(6, v.numel(), generator=torch.Generator().manual_seed(3),
                                     dtype=f64))
    x, y = sample_points()
    batched = torch.vmap(lambda p: src.brightness(x, y, p))(V)
    loop = torch.stack([src.brightness(x, y, p) for p in V])
    assert batched.shape == (6, 3, 4)
    torch.testing.assert_close(batched, loop)


# --------------------------------------------------------------------------- Pixelated


def test_pixelated_reproduces_a_linear_function_exactly():
    ps, x0, y0 = 0.1, 0.03, -0.02
    ny, nx = 6, 9
    cols = x0 + (torch.arange(nx, dtype=f64) - (nx - 1) / 2) * ps
    rows = y0 + (torch.arange(ny, dtype=f64) - (ny - 1) / 2) * ps
    Y, X = torch.meshgrid(rows, cols, indexing="ij")

    def linear(x, y):
        return 1.5 + 2.0 * x - 3.0 * y

    src = Pixelated(values=linear(X, Y), pixel_scale=ps, x0=torch.tensor(x0, dtype=f64),
                    y0=torch.tensor(y0, dtype=f64))
    g = torch.Generator().manual_seed(4)
    # anywhere between the outer pixel centres
    x = cols[0] + (cols[-1] - cols[0]) * torch.rand(50, generator=g, dtype=f64)
    y = rows[0] + (rows[-1] - rows[0]) * torch.rand(50, generator=g, dtype=f64)
    torch.testing.assert_close(src.brightness(x, y), linear(x, y), rtol=1e-12, atol=1e-12)
    # at the pixel centres it returns the stamp itself
    torch.testing.assert_close(src.brightness(X, Y), linear(X, Y), rtol=1e-12, atol=1e-12)


def test_pixelated_equals_the_stamp_at_pixel_centres_and_zero_far_outside():
    g = torch.Generator().manual_seed(5)
    stamp = torch.rand(5, 8, generator=g, dtype=f64)
    src = Pixelated(values=stamp, pixel_scale=0.2, x0=torch.tensor(0.5, dtype=f64))
    grid = PixelGrid((5, 8), 0.2, center=(0.5, 0.0))
    x, y = grid.coordinates()
    torch.testing.assert_close(src.brightness(x, y), stamp, rtol=1e-13, atol=1e-13)
    far = torch.tensor([0.5 + 0.9, 0.5 - 0.9, 0.5], dtype=f64), torch.tensor([0.0, 0.0, 0.6],
                                                                          dtype=f64)
    assert torch.all(src.brightness(*far) == 0)


def test_pixelated_image_sums_to_stamp_sum_times_pixel_area():
    # the documented total flux: values.sum() * pixel_scale**2
    g = torch.Generator().manual_seed(6)
    stamp = torch.rand(5, 5, generator=g, dtype=f64)
    src = Pixelated(values=stamp, pixel_scale=0.1)
    grid = PixelGrid((40, 40), 0.025, supersample=4)  # covers the stamp with a margin
    x, y = grid.subpixel_coordinates()
    total = grid.integrate(src.brightness(x, y)).sum().item()
    assert total == pytest.approx(stamp.sum().item() * 0.1**2, rel=1e-10)


def test_pixelated_bad_stamp_raises():
    with pytest.raises(ValueError, match="2-D"):
        Pixelated(values=torch.ones(5))
    with pytest.raises(ValueError, match="values"):
        Pixelated()
