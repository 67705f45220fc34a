"""Critical curves, caustics and the lens-model figures."""

import math

import matplotlib.pyplot as plt
import torch

import skyfit
from skyfit import plots


def test_sis_critical_curve_is_the_einstein_ring_and_its_caustic_a_point():
    critical, caustics = skyfit.critical_curves(skyfit.SIS(theta_E=1.3), n=300)
    assert len(critical) == 1
    x, y = critical[0]
    assert torch.allclose(torch.hypot(x, y), torch.full_like(x, 1.3), atol=2e-3)
    bx, by = caustics[0]
    assert torch.hypot(bx, by).max() < 2e-3


def test_sie_caustic_encloses_the_quad_sources_only():
    lens = skyfit.SIE(q=0.6, phi=0.2, theta_E=1.0)
    _, caustics = skyfit.critical_curves(lens, n=300)
    bx, by = caustics[0]
    extent = torch.hypot(bx, by).max().item()
    inside, outside = 0.3 * extent, 1.5 * extent  # along the caustic's longest direction
    k = int(torch.hypot(bx, by).argmax())
    ux, uy = bx[k].item() / extent, by[k].item() / extent
    assert skyfit.find_images(lens, inside * ux, inside * uy).n == 4
    assert skyfit.find_images(lens, outside * ux, outside * uy).n == 2


def test_lens_figures_draw():
    lens = skyfit.CompositeLens([skyfit.SIE(q=0.7, phi=0.4, theta_E=1.0),
                                 skyfit.ExternalShear(gamma1=0.03)])
    images = skyfit.find_images(lens, 0.05, 0.02)
    fig = plots.plot_critical_curves(lens, images=images, source_position=(0.05, 0.02), n=150)
    assert len(fig.axes) == 2
    grid = skyfit.PixelGrid((40, 40), 0.1)
    model = skyfit.LensedImage(grid, lens, [skyfit.Sersic(Re=0.2)])().detach()
    fig = plots.plot_lens_model(model + 0.01, model, lens, grid, sigma=0.01, n=150)
    assert math.isclose(fig.axes[2].images[0].get_array().mean(), 1.0)
    plt.close("all")
