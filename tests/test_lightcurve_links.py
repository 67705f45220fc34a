"""Light curves linked to sources: a source's flux follows its light curve at each epoch."""

import caskade as ck
import pytest
import torch

from skyfit import (
    Bazin,
    Gaussian,
    GaussianLightCurve,
    GaussianPSF,
    PixelGrid,
    PointSource,
    Villar,
    link_flux_to_light_curve,
)
from skyfit.errors import ShapeError

f64 = torch.float64


def test_linked_point_source_flux_follows_the_light_curve_at_each_epoch():
    lc = Bazin(t0=0.0, A=3.0, tau_rise=2.0, tau_fall=20.0, B=0.0)
    sn = PointSource(x0=0.03, y0=-0.02)
    times = link_flux_to_light_curve(sn, lc, [-5.0, 0.0, 5.0, 30.0])
    assert isinstance(times, ck.Param) and times.value.dtype == f64
    expected = lc.flux(torch.tensor([-5.0, 0.0, 5.0, 30.0], dtype=f64))
    x0, y0, flux = sn.position_flux()
    torch.testing.assert_close(flux, expected)
    grid = PixelGrid((32, 32), 0.1)
    img = GaussianPSF(sigma=0.15).point_image(grid, x0, y0, flux)
    assert img.shape == (4, 32, 32)
    torch.testing.assert_close(img.sum((-2, -1)), expected, rtol=1e-9, atol=1e-12)


def test_linked_gaussian_source_in_a_forward_with_a_parameter_vector_and_vmap():
    lc = Villar(t0=[0.0, 1.0], A=[2.0, 1.0], gamma=20.0, tau_rise=2.0, tau_fall=10.0,
                bands="gr", shared=("gamma", "tau_rise", "tau_fall"))
    lc.to_dynamic()
    src = Gaussian(x0=0.05, y0=-0.05, sigma=0.2)
    src.x0.to_dynamic()
    epochs = torch.tensor([-2.0, 3.0, 10.0, 25.0, 40.0], dtype=f64)
    bands = ["g", "r", "g", "r", "g"]
    link_flux_to_light_curve(src, lc, epochs, band=bands)
    assert [p.name for p in src.dynamic_params][0] == "x0"
    grid = PixelGrid((48, 48), 0.05, supersample=2)
    x, y = grid.subpixel_coordinates()

    def image(params):
        return grid.integrate(src.brightness(x, y, params))

    v = src.get_values().to(f64)
    img = image(v)
    assert img.shape == (5, 48, 48)
    lc_flux = lc.flux(epochs, bands, v[1:])
    # the Gaussian's image sums to its flux (field covers > 6 sigma)
    torch.testing.assert_close(img.sum((-2, -1)), lc_flux, rtol=1e-6, atol=0)
    V = torch.stack([v, v * 1.05, v * 0.95])
    batched = torch.vmap(image)(V)
    loop = torch.stack([image(vi) for vi in V])
    torch.testing.assert_close(batched, loop)
    # the gradient reaches the light-curve parameters through the pointer
    vg = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(image(vg).sum(), vg)
    assert torch.all(g[1:] != 0)


def test_relinking_replaces_the_previous_light_curve():
    sn = PointSource()
    link_flux_to_light_curve(sn, GaussianLightCurve(peak_flux=1.0), [0.0])
    link_flux_to_light_curve(sn, GaussianLightCurve(peak_flux=2.0), [0.0, 1e3])
    torch.testing.assert_close(sn.flux.value, torch.tensor([2.0, 0.0], dtype=f64))
    with pytest.raises(ShapeError, match="vector"):
        link_flux_to_light_curve(sn, GaussianLightCurve(), [[0.0]])
    with pytest.raises(ShapeError, match="epochs"):
        link_flux_to_light_curve(sn, GaussianLightCurve(bands="gr"), [0.0, 1.0, 2.0], band=[0, 1])
    with pytest.raises(TypeError, match="flux"):
        link_flux_to_light_curve(sn, PointSource(), [0.0])
