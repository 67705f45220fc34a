"""Synthetic galaxies, the galaxy VAE and its training: shapes, bad input, learning, weights."""

import pytest
import torch

from skyfit.errors import DataError, ShapeError
from skyfit.generative import (
    GalaxyVAE,
    VAEConfig,
    check_stamps,
    make_galaxies,
    train_vae,
    vae_loss,
)


@pytest.fixture(scope="module")
def tiny_set():
    return make_galaxies(320, size=16, seed=3)


def test_synthetic_galaxies_have_unit_flux_and_requested_snr():
    gals = make_galaxies(64, size=32, snr=(20.0, 30.0), seed=1)
    assert gals.images.shape == (64, 32, 32)
    torch.testing.assert_close(gals.truth.sum((-2, -1)), torch.ones(64), atol=1e-5, rtol=0)
    snr = gals.truth.pow(2).sum((-2, -1)).sqrt() / gals.sigma
    assert snr.min() >= 20.0 - 1e-3 and snr.max() <= 30.0 + 1e-3
    torch.testing.assert_close(snr, gals.params["snr"], rtol=1e-4, atol=0)
    # the noise is white with the stated level: residuals / sigma have unit variance
    pulls = (gals.images - gals.truth) / gals.sigma[:, None, None]
    assert abs(pulls.std().item() - 1.0) < 0.02


def test_synthetic_galaxies_span_the_sersic_ranges_and_are_seeded():
    a = make_galaxies(200, seed=5)
    b = make_galaxies(200, seed=5)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
    n = a.params["n"]
    assert 0.5 <= n.min() < 0.8 and 3.7 < n.max() <= 4.0
    assert (a.params["n_clumps"] > 0).float().mean() > 0.6  # most galaxies have clumps
    # a galaxy's light centroid follows its centre jitter (pixels from the stamp centre)
    coords = torch.arange(32.0) - 15.5
    xc = (a.truth.sum(-2) * coords).sum(-1)
    assert (xc - a.params["x0"]).abs().median() < 0.5


def test_stamps_of_wrong_shape_or_with_nans_are_refused(tiny_set):
    vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64)
    train, val = tiny_set.split(256)
    with pytest.raises(ShapeError, match="16x16"):
        check_stamps(torch.zeros(4, 32, 32), size=16)
    with pytest.raises(ShapeError, match="square"):
        check_stamps(torch.zeros(4, 16, 12))
    bad = train[:8]
    bad.images = bad.images.clone()
    bad.images[3, 2, 2] = float("nan")
    with pytest.raises(DataError, match=r"1 stamp\(s\) contain NaN.*\[3\]"):
        train_vae(vae, bad, val, epochs=1)
    big = make_galaxies(8, size=32, seed=0)
    with pytest.raises(ShapeError, match="train set: stamps are 32x32"):
        train_vae(vae, big, val, epochs=1)
    with pytest.raises(ShapeError, match="stamps have shape"):
        vae.encode(torch.zeros(2, 32, 32))


def test_kl_term_is_the_gaussian_kl_to_the_standard_normal():
    torch.manual_seed(0)
    vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=16)
    x = torch.rand(3, 16, 16) / 256
    _, kl = vae.loss_terms(x, torch.full((3,), 1e-3))
    mu, logvar = vae.encode(x)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1))


def test_bad_configurations_are_refused():
    with pytest.raises(TypeError, match="not both"):
        GalaxyVAE(VAEConfig(size=32), size=16, latent_dim=4)
    with pytest.raises(TypeError, match="must be a VAEConfig"):
        GalaxyVAE({"size": 16})
    with pytest.raises(ValueError, match="channels"):
        GalaxyVAE(channels=())
    with pytest.raises(ValueError, match="hidden"):
        GalaxyVAE(size=16, channels=(8,), hidden=0)


def test_latent_of_wrong_size_is_refused():
    vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64)
    with pytest.raises(ShapeError, match="latent_dim=4"):
        vae.decode(torch.zeros(3, 5))


def test_ci_scale_training_learns(tiny_set):
    """Four epochs on 256 16x16 stamps (seconds): the validation loss (negative ELBO per stamp)
    falls below half its value before training, and reconstructions approach the noise."""
    train, val = tiny_set.split(256)
    torch.manual_seed(0)
    vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64)
    before = vae_loss(vae, val)
    hist = train_vae(vae, train, val, epochs=4, batch_size=32, seed=0)
    assert len(hist.val_loss) == 4 and hist.best_epoch == 3
    assert hist.best_val_loss < before / 2
    assert hist.val_loss[-1] < hist.val_loss[0]
    assert vae.reduced_chi2(val.images, val.sigma).mean() < 3.0


def test_weights_round_trip_gives_identical_outputs(tmp_path, tiny_set):
    torch.manual_seed(1)
    vae = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64)
    vae.save(tmp_path / "vae.pt")
    loaded = GalaxyVAE.load(tmp_path / "vae.pt")
    z = torch.randn(5, 4)
    x = tiny_set.images[:5]
    assert torch.equal(vae.decode(z), loaded.decode(z))
    assert all(torch.equal(a, b) for a, b in zip(vae.encode(x), loaded.encode(x)))
    fresh = GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64).load_weights(
        tmp_path / "vae.pt")
    assert torch.equal(vae.decode(z), fresh.decode(z))
    # the file holds only tensors and plain values: it loads with weights_only=True
    blob = torch.load(tmp_path / "vae.pt", weights_only=True)
    assert blob["config"]["latent_dim"] == 4


def test_loading_weights_of_another_architecture_names_the_mismatch(tmp_path):
    GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=64).save(tmp_path / "vae.pt")
    other = GalaxyVAE(size=16, latent_dim=6, channels=(8, 16), hidden=64)
    with pytest.raises(ShapeError, match="latent_dim=4 in file vs 6 here"):
        other.load_weights(tmp_path / "vae.pt")
    from skyfit.generative.vae import load_checked_state

    state = torch.load(tmp_path / "vae.pt", weights_only=True)["state_dict"]
    with pytest.raises(ShapeError, match=r"decoder.0.weight: file \(64, 4\) vs network \(64, 6\)"):
        load_checked_state(other, state, "GalaxyVAE")
