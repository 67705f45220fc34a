"""Scenes: flux bookkeeping, stack vs batched epochs, dtypes, vmap."""

import pytest
import torch
from problems import HOST, epoch_stack, supernova_data, supernova_problem

import skyfit


def test_scene_image_sums_to_total_flux_of_what_it_shows():
    grid = skyfit.PixelGrid((60, 60), 0.05, supersample=4)
    scene = skyfit.Scene(
        grid,
        [skyfit.Gaussian(x0=0.1, y0=-0.2, q=0.7, phi=0.4, sigma=0.2, flux=7.0),
         skyfit.Sersic(x0=-0.3, y0=0.2, q=0.8, phi=1.0, n=0.8, Re=0.2, flux=3.0)],
        skyfit.GaussianPSF(sigma=0.08, size=17),
        [skyfit.PointSource(x0=0.4, y0=0.3, flux=torch.tensor([1.0, 2.0], dtype=torch.float64))],
    )
    image = scene()
    assert image.shape == (2, 60, 60)
    assert torch.allclose(image.sum((-2, -1)), torch.tensor([11.0, 12.0], dtype=torch.float64),
                          rtol=1e-4)


def test_point_sources_need_a_psf():
    with pytest.raises(ValueError, match="psf"):
        skyfit.Scene(skyfit.PixelGrid((8, 8), 0.1), point_sources=[skyfit.PointSource()])


def build_stack_and_batched(data):
    host = skyfit.Sersic("host", **HOST)
    host.to_dynamic()
    stack = epoch_stack(data, host)
    host_b = skyfit.Sersic("host", **HOST)
    sn_b = skyfit.PointSource("sn", x0=-0.35, y0=-0.2, flux=data.true_fluxes)
    batched = skyfit.Scene(data.grid, [host_b], skyfit.GaussianPSF(sigma=data.psf_sigma, size=15),
                           [sn_b])
    return stack, batched


def test_stack_and_batched_epochs_give_identical_images():
    data = supernova_data(0)
    stack, batched = build_stack_and_batched(data)
    assert torch.allclose(stack(stack.get_values()), batched(), rtol=1e-12, atol=1e-14)


def test_linked_position_is_one_parameter():
    data = supernova_data(0)
    stack, _ = build_stack_and_batched(data)
    post = skyfit.Posterior(skyfit.GaussianLikelihood(stack, data.images, noise=data.noise))
    assert sum(n.endswith(".x0") and n.startswith("sn") for n in post.names) == 1
    assert post.dim == 7 + 2 + 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scene_works_in_float32_and_float64(dtype):
    grid = skyfit.PixelGrid((24, 24), 0.05, supersample=2, dtype=dtype)
    source = skyfit.Sersic(x0=torch.tensor(0.05, dtype=dtype), n=torch.tensor(2.0, dtype=dtype),
                           Re=torch.tensor(0.2, dtype=dtype), flux=torch.tensor(4.0, dtype=dtype))
    sn = skyfit.PointSource(x0=torch.tensor(0.1, dtype=dtype), flux=torch.tensor(2.0, dtype=dtype))
    psf = skyfit.GaussianPSF(sigma=torch.tensor(0.06, dtype=dtype), size=9)
    image = skyfit.Scene(grid, [source], psf, [sn])()
    assert image.dtype == dtype
    ref = skyfit.Scene(skyfit.PixelGrid((24, 24), 0.05, supersample=2),
                       [skyfit.Sersic(x0=0.05, n=2.0, Re=0.2, flux=4.0)],
                       skyfit.GaussianPSF(sigma=0.06, size=9), [skyfit.PointSource(x0=0.1,
                                                                                    flux=2.0)])()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(image.double(), ref, rtol=tol, atol=tol * ref.max().item())


def test_vmap_over_parameter_vectors_equals_loop():
    post, _ = supernova_problem(0)
    x = post.initial()
    xs = x * (1 + 0.01 * torch.randn(4, x.shape[0], generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64))
    scene = post.likelihood.model
    images = torch.vmap(scene)(xs)
    loop = torch.stack([scene(v) for v in xs])
    assert torch.allclose(images, loop, rtol=1e-12, atol=1e-14)
