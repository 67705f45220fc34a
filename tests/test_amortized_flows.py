"""Pieces of the amortised posterior: the GLOW INN's change of variables and clamp, bounded
parameters, embeddings, and the plateau supernova simulator's degeneracy."""

import math
import warnings

import pytest
import torch

from skyfit.amortized import AmortizedPosterior, SoftClampAffineTransform, conditional_flow
from skyfit.amortized.embeddings import StampEmbedding, interpolate_to_grid
from skyfit.errors import ShapeError
from skyfit.lightcurves.plateau import PLATEAU_DAYS, plateau_light_curve


def test_glow_density_is_the_change_of_variables_of_its_base():
    torch.manual_seed(0)
    flow = conditional_flow("glow", 3, 2, transforms=3, hidden=(16, 16, 16)).double()
    context = torch.randn(2, dtype=torch.float64)
    z = torch.randn(3, dtype=torch.float64)
    transform = flow(context).transform
    eps = transform(z)
    jacobian = torch.autograd.functional.jacobian(transform, z)
    base = -0.5 * eps.pow(2).sum() - 1.5 * math.log(2 * math.pi)
    expected = float((base + torch.linalg.slogdet(jacobian)[1]).detach())
    assert float(flow(context).log_prob(z).detach()) == pytest.approx(expected, abs=1e-10)
    assert torch.allclose(transform.inv(eps), z, atol=1e-10)


def test_soft_clamp_bounds_each_coupling_scale():
    t = SoftClampAffineTransform(2.0)(torch.zeros(3), torch.tensor([-1e6, 0.1, 1e6]))
    assert t.log_scale.abs().max() <= 2.0
    assert float(t.log_scale[1]) == pytest.approx(2 * 2 / math.pi * math.atan(0.05))


@pytest.mark.parametrize("kind", ["nsf", "glow"])
def test_draws_of_bounded_parameters_stay_inside_their_bounds(kind):
    post = AmortizedPosterior(["a", "b"], [0.0, -1.0], [1.0, math.inf], (4,), kind=kind)
    post.w_scale.fill_(5.0)  # a wide, untrained flow: draws far out in unconstrained space
    theta, lq = post.draw(torch.randn(6, 4), 500)
    assert theta.shape == (500, 6, 2) and torch.isfinite(lq).all()
    assert (theta[..., 0] >= 0).all() and (theta[..., 0] <= 1).all() and (theta[..., 1] > -1).all()
    outside = post.log_prob(torch.tensor([2.0, 0.0]), torch.randn(4))
    assert outside == -math.inf


def test_stamp_embedding_reads_batches_and_refuses_other_shapes():
    net = StampEmbedding((16, 16), features=8)
    assert net(torch.randn(3, 2, 16, 16)).shape == (3, 2, 8)
    with pytest.raises(ShapeError, match="built for"):
        net(torch.randn(3, 15, 16))


def test_interpolation_to_the_grid_is_linear_per_band():
    t = torch.tensor([0.0, 10.0, 0.0, 10.0])
    band = torch.tensor([0, 0, 1, 1])
    flux = torch.tensor([0.0, 1.0, 5.0, 3.0])
    grid_t, grid_band = torch.tensor([2.5, 7.5, 20.0]), torch.tensor([0, 1, 1])
    out = interpolate_to_grid(t, band, flux, grid_t, grid_band)
    assert out.tolist() == pytest.approx([0.25, 3.5, 3.0])


def test_plateau_is_the_same_along_the_popov_degeneracy_but_not_its_cooling():
    days = torch.tensor([6.0, 80.0, 120.0, 200.0], dtype=torch.float64)
    band = torch.ones(4, dtype=torch.long)  # r
    k = 1.8

    def light_curve(E, M, R):
        return plateau_light_curve(days, band, torch.tensor(E), torch.tensor(M), torch.tensor(R))

    a = light_curve(1.0, 1.2, 0.8)
    b = light_curve(1.0 * k ** (-5 / 4), 1.2 * k ** (-3 / 4), 0.8 * k)
    plateau_and_tail = slice(1, 4)
    # the cooling term ~ exp(-t / 10 d) is all that differs after the first days
    assert torch.allclose(a[plateau_and_tail], b[plateau_and_tail], rtol=2e-3)
    assert float(b[0] / a[0]) > 1.1  # a larger star: brighter early cooling emission


def test_plateau_scales_as_popov():
    day = torch.tensor([60.0], dtype=torch.float64)
    r = torch.ones(1, dtype=torch.long)
    one = plateau_light_curve(day, r, torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))
    two = plateau_light_curve(day, r, torch.tensor(2.0), torch.tensor(1.0), torch.tensor(1.0))
    cooling = 0.6 * math.exp(-6.0)  # the shock-cooling term at day 60 for R = 1
    ratio = (float(two) - cooling * 2 ** (5 / 6)) / (float(one) - cooling)
    assert ratio == pytest.approx(2 ** (5 / 6), rel=1e-3)
    assert PLATEAU_DAYS * 2 ** (-1 / 6) < PLATEAU_DAYS


def test_cosine_schedule_anneals_to_a_hundredth_and_finds_the_maximum_likelihood():
    """A Gaussian's mean and log-sd fitted by maximise_likelihood: the rate ends at lr / 100
    after the epoch budget and the fit finds the generating mean and sd."""
    from skyfit.amortized import maximise_likelihood

    data = 3.0 + 0.5 * torch.randn(2000, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Module()
    model.mean = torch.nn.Parameter(torch.zeros(()))
    model.log_sd = torch.nn.Parameter(torch.zeros(()))

    def log_prob(idx):
        return torch.distributions.Normal(model.mean, model.log_sd.exp()).log_prob(data[idx])

    history = maximise_likelihood(model, log_prob, len(data), epochs=40, batch_size=100,
                                  lr=0.1, patience=100, progress=False)
    assert history["lr"][-1] == pytest.approx(0.1 / 100, rel=1e-6)
    # within ~4 standard errors of the mean: the kept weights are the best validation epoch's
    assert float(model.mean.detach()) == pytest.approx(3.0, abs=0.05)
    assert float(model.log_sd.detach().exp()) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="schedule"):
        maximise_likelihood(model, log_prob, len(data), epochs=1, schedule="linear",
                            progress=False)


def test_amortized_samples_carry_the_posteriors_units(tmp_path):
    from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
    from skyfit.amortized import fit, refine

    lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
    lc.t0.valid, lc.sigma.valid, lc.peak_flux.valid = (-1, 1), (1, 3), (0.5, 2)
    lc.to_dynamic()
    t = torch.linspace(-5, 5, 11, dtype=torch.float64)
    posterior = Posterior(PhotometryLikelihood(lc, t, torch.exp(-0.5 * (t / 2) ** 2),
                                               0.1 * torch.ones(11)))
    expected = {"GaussianLightCurve.t0": "day", "GaussianLightCurve.sigma": "day",
                "GaussianLightCurve.peak_flux": "flux"}
    assert posterior.units == expected
    post = fit(posterior, n_train=200, epochs=1, transforms=1, hidden=(8,), features=4,
               embedding_hidden=(8,), progress=False)
    one = post.sample(torch.zeros(11), 50)
    many = post.sample(torch.zeros(4, 11), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a barely trained network: a large Pareto k is expected
        refined = refine(post, posterior, n=200)
    for samples in (one, *many, refined):
        assert samples.units == expected
    sigma = one.quantity("GaussianLightCurve.sigma")
    assert str(sigma.unit) == "d"
    assert sigma.value.tolist() == one["GaussianLightCurve.sigma"].tolist()
    post.save(tmp_path / "npe.pt")  # the units travel in the saved JSON config
    assert AmortizedPosterior.load(tmp_path / "npe.pt").sample(torch.zeros(11), 5).units == expected
    # a network built without a Posterior declares none: quantities are dimensionless
    bare = AmortizedPosterior(["a"], [0.0], [1.0], (4,), transforms=1, hidden=(8,), features=4)
    assert bare.sample(torch.zeros(4), 5).units == {}
