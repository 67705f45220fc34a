"""VAESource: a decoded galaxy as a skyfit source, its latent prior, and its use in a Posterior."""

import math

import pytest
import torch

import skyfit
from skyfit import VAESource
from skyfit.errors import ShapeError
from skyfit.generative import load_pretrained, make_galaxies


@pytest.fixture(scope="module")
def model():
    return load_pretrained("galaxy32")


def test_vae_source_image_sums_to_its_flux(model):
    src = VAESource(model, latent_value=torch.full((model.latent_dim,), 0.3), x0=0.1, y0=-0.05,
                    scale=0.04, flux=7.0)
    grid = skyfit.PixelGrid((80, 80), 0.02, supersample=2)
    x, y = grid.subpixel_coordinates()
    total = grid.integrate(src.brightness(x, y)).sum().item()
    assert abs(total - 7.0) < 7.0 * 2e-3
    # the light sits where the stamp is: centroid near (x0, y0) within a stamp pixel or two
    img = grid.integrate(src.brightness(x, y))
    gx, gy = grid.coordinates()
    assert abs((img * gx).sum().item() / total - 0.1) < 0.08
    assert abs((img * gy).sum().item() / total + 0.05) < 0.08


def test_eps_and_z_parametrisations_describe_the_same_galaxy(model):
    d = model.latent_dim
    eps = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = VAESource(model, latent="eps", latent_value=eps)
    z = a.to_z(eps)
    b = VAESource(model, latent="z", prior="maf", latent_value=z)
    torch.testing.assert_close(a.stamp(), b.stamp(), atol=1e-12, rtol=0)
    # log priors: N(0, I) on eps; the MAF's log p(z) on z
    expected = -0.5 * eps.pow(2).sum() - d / 2 * math.log(2 * math.pi)
    torch.testing.assert_close(a.log_prior(), expected)
    torch.testing.assert_close(b.log_prior(), b.flow.log_prob(z))
    torch.testing.assert_close(a.from_z(z), eps, atol=1e-10, rtol=0)


def test_z_prior_is_the_eps_prior_through_the_change_of_variables(model):
    # an independent check of the flow's density: log p(z) = log N(eps) - log |det dz/deps|
    eps = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64)
    a = VAESource(model, prior="maf", latent="eps", latent_value=eps)
    z = a.to_z(eps)
    b = VAESource(model, prior="maf", latent="z", latent_value=z)
    J = torch.autograd.functional.jacobian(a.to_z, eps)
    torch.testing.assert_close(b.log_prior(), a.log_prior() - torch.linalg.slogdet(J)[1])


def test_posterior_adds_the_latent_prior_and_batches(model):
    src = VAESource(model, scale=0.04, flux=5.0)
    grid = skyfit.PixelGrid((32, 32), 0.05)
    scene = skyfit.Scene(grid, [src], skyfit.GaussianPSF(sigma=0.05, size=9))
    data = scene().detach()
    src.latent.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(scene, data, variance=torch.full_like(
        data, 1e-3)))
    d = model.latent_dim
    assert post.names == [f"VAESource.latent[{i}]" for i in range(d)]
    x = torch.zeros(d, dtype=torch.float64)
    x[0] = 1.0  # the likelihood is 0 at the truth x = 0, so only the prior term differs
    lp = post(torch.stack([torch.zeros(d, dtype=torch.float64), x]))
    assert lp[0] > lp[1]
    like0 = post.joint.likelihood(torch.zeros(d, dtype=torch.float64))
    torch.testing.assert_close(lp[0] - like0, torch.tensor(-d / 2 * math.log(2 * math.pi),
                                                           dtype=torch.float64))
    value, grad = post.value_and_grad(x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_latent_of_wrong_size_is_refused(model):
    with pytest.raises(ShapeError, match=f"latent_dim={model.latent_dim}"):
        VAESource(model, latent_value=torch.zeros(5))
    src = VAESource(model)
    with pytest.raises(ShapeError, match=f"latent_dim={model.latent_dim}"):
        src.to_z(torch.zeros(3))


def test_encoded_galaxy_is_decoded_back_to_the_noise(model):
    gal = make_galaxies(1, seed=2024)
    src = VAESource(model, scale=1.0, flux=1.0)
    eps = src.latent_of_stamp(gal.images[0].double())
    stamp = src.stamp(eps)
    chi2 = ((stamp - gal.images[0].double()) / gal.sigma[0]).pow(2).mean()
    assert chi2 < 1.5
