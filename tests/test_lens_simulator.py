"""The lensed-image simulator: identity lens, flux conservation against inverse ray shooting,
batching, bad input."""

import warnings

import pytest
import torch
from caskade import InvalidValueWarning

import skyfit
from skyfit.errors import ParameterRangeError


def sersic(**kw):
    args = dict(x0=0.05, y0=0.02, q=0.8, phi=0.3, n=1.0, Re=0.15, flux=10.0)
    args.update(kw)
    return skyfit.Sersic(**args)


@pytest.mark.parametrize("identity", [lambda: skyfit.CompositeLens([]),
                                      lambda: skyfit.MassSheet(kappa=0.0)])
def test_identity_lens_gives_the_unlensed_image(identity):
    grid = skyfit.PixelGrid((100, 100), 0.05, supersample=3)
    psf = skyfit.GaussianPSF(sigma=0.06, size=13)
    source = sersic()
    lensed = skyfit.LensedImage(grid, identity(), [source], psf=psf)()
    plain = skyfit.Scene(grid, [source], psf)()
    assert torch.equal(lensed, plain)


def ray_shooting_magnification(lens, source, window=5.0, n_rays=1250, cell=0.01, half=1.2):
    """Mean magnification of ``source`` by inverse ray shooting: rays on a uniform image-plane
    grid are binned in source-plane cells; a cell's magnification is its ray count times the
    ray area over the cell area. Returns the brightness-weighted mean over the source, whose
    light must lie inside the +-``half`` source-plane box (here 8 Re: all but 1e-5 of it)."""
    step = window / n_rays
    s = (torch.arange(n_rays, dtype=torch.float64) - (n_rays - 1) / 2) * step
    ty, tx = torch.meshgrid(s, s, indexing="ij")
    bx, by = lens.raytrace(tx, ty)
    n_cells = int(round(2 * half / cell))
    i = torch.floor((by + half) / cell).long()
    j = torch.floor((bx + half) / cell).long()
    ok = (i >= 0) & (i < n_cells) & (j >= 0) & (j < n_cells)
    counts = torch.zeros(n_cells * n_cells, dtype=torch.float64)
    counts.index_add_(0, (i[ok] * n_cells + j[ok]), torch.ones(int(ok.sum()), dtype=torch.float64))
    mu = counts.reshape(n_cells, n_cells) * step**2 / cell**2
    c = (torch.arange(n_cells, dtype=torch.float64) + 0.5) * cell - half
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    sb = source.brightness(cx, cy)
    return float((sb * mu).sum() / sb.sum())


def test_lensed_flux_is_source_flux_times_mean_magnification_by_ray_counting():
    lens = skyfit.CompositeLens([skyfit.SIE(q=0.7, phi=0.4, theta_E=1.0),
                                 skyfit.ExternalShear(gamma1=0.03, gamma2=0.02)])
    source = sersic()
    grid = skyfit.PixelGrid((100, 100), 0.05, supersample=4)
    image = skyfit.LensedImage(grid, lens, [source], psf=skyfit.GaussianPSF(sigma=0.05, size=11))
    total = image().sum().item()
    mu = ray_shooting_magnification(lens, source)
    assert mu > 3  # strongly lensed: the test is not trivial
    assert abs(total / (10.0 * mu) - 1) < 0.01  # measured: 4e-5


def test_lens_light_is_added_unlensed():
    grid = skyfit.PixelGrid((60, 60), 0.05, supersample=2)
    lens, source, light = skyfit.SIS(theta_E=0.8), sersic(), skyfit.Sersic(name="light", Re=0.3)
    both = skyfit.LensedImage(grid, lens, [source], lens_light=[light])()
    arcs = skyfit.LensedImage(grid, lens, [source])()
    alone = skyfit.Scene(grid, [light])()
    assert torch.allclose(both, arcs + alone, rtol=1e-13, atol=1e-15)


def test_vmap_over_parameter_sets_equals_one_at_a_time():
    grid = skyfit.PixelGrid((40, 40), 0.05, supersample=2)
    lens, source = skyfit.SIE(q=0.7, theta_E=0.7), sersic()
    lens.to_dynamic()
    source.flux.to_dynamic()
    sim = skyfit.LensedImage(grid, lens, [source], psf=skyfit.GaussianPSF(sigma=0.05, size=9))
    x0 = sim.get_values()
    batch = x0 * (1 + 0.05 * torch.randn(5, x0.numel(), dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(0)))
    batched = torch.vmap(sim)(batch)
    assert batched.shape == (5, 40, 40)
    for k in range(5):
        assert torch.allclose(batched[k], sim(batch[k]), rtol=1e-12, atol=1e-15)


def test_simulator_with_a_fixed_psf_traces_as_one_graph():
    # torch.compile can only fuse the ray tracing and the light profile if dynamo sees the whole
    # simulator; the fixed-PSF kernel cache once broke the graph. backend="eager" checks the
    # tracing alone (no C++ compiler needed) and fullgraph=True raises at any graph break.
    grid = skyfit.PixelGrid((24, 24), 0.05, supersample=2)
    lens, source = skyfit.SIE(q=0.7, theta_E=0.5), sersic()
    lens.to_dynamic()
    sim = skyfit.LensedImage(grid, lens, [source], psf=skyfit.GaussianPSF(sigma=0.05, size=7))
    x0 = sim.get_values()
    batch = x0 * (1 + 0.05 * torch.randn(3, x0.numel(), dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(1)))
    torch._dynamo.reset()
    traced = torch.compile(torch.vmap(sim), backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(traced(batch), torch.vmap(sim)(batch), rtol=1e-12, atol=1e-15)


def test_gradients_flow_to_lens_and_source_parameters():
    grid = skyfit.PixelGrid((40, 40), 0.05, supersample=2)
    lens, source = skyfit.SIE(q=0.7, theta_E=0.7), sersic()
    lens.to_dynamic()
    source.to_dynamic()
    sim = skyfit.LensedImage(grid, lens, [source])
    x = sim.get_values().requires_grad_(True)
    (grad,) = torch.autograd.grad(sim(x).square().sum(), x)
    assert torch.isfinite(grad).all() and (grad != 0).all()


def test_parameters_outside_valid_range_are_refused():
    grid = skyfit.PixelGrid((20, 20), 0.05)
    with pytest.warns(InvalidValueWarning):  # caskade's warning at construction
        bad_lens = skyfit.SIE(q=1.5)
    with pytest.raises(ParameterRangeError, match=r"SIE\.q = 1\.5"):
        skyfit.LensedImage(grid, bad_lens, [sersic()])
    with pytest.warns(InvalidValueWarning):
        bad_source = sersic(n=12.0)
    with pytest.raises(ParameterRangeError, match=r"Sersic\.n"):
        skyfit.LensedImage(grid, skyfit.SIS(), [bad_source])


def test_a_grid_too_coarse_for_the_source_warns():
    grid = skyfit.PixelGrid((20, 20), 0.05, supersample=2)
    with pytest.warns(skyfit.scenes.ResolutionWarning, match="supersample >= 10"):
        skyfit.LensedImage(grid, skyfit.SIS(), [sersic(Re=0.005)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skyfit.LensedImage(skyfit.PixelGrid((20, 20), 0.05, supersample=10), skyfit.SIS(),
                           [sersic(Re=0.005)])


def test_point_sources_need_a_psf_and_the_same_lens():
    grid = skyfit.PixelGrid((20, 20), 0.05)
    lens = skyfit.SIS()
    with pytest.raises(ValueError, match="psf"):
        skyfit.LensedImage(grid, lens, point_sources=[skyfit.LensedPointSource(lens, x0=0.1)])
    with pytest.raises(ValueError, match="same lens"):
        skyfit.LensedImage(grid, lens, psf=skyfit.GaussianPSF(sigma=0.05, size=5),
                           point_sources=[skyfit.LensedPointSource(skyfit.SIS(), x0=0.1)])
