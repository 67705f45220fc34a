"""Posterior, MAP and Laplace: analytic linear-Gaussian truths, gradients, priors, bad input."""

import math
import warnings

import pytest
import torch

import skyfit
from skyfit.errors import (
    HessianWarning,
    LogDensityError,
    ParameterRangeError,
    ParameterVectorError,
)
from skyfit.inference import FunctionDensity


def linear_flux_problem(seed=0):
    """Three Gaussians of known shape with free fluxes: the image is linear in the fluxes."""
    grid = skyfit.PixelGrid((20, 20), 0.1, supersample=2)
    sources = [
        skyfit.Gaussian("a", x0=-0.4, y0=0.1, sigma=0.2, flux=5.0),
        skyfit.Gaussian("b", x0=0.3, y0=-0.2, q=0.5, phi=1.0, sigma=0.3, flux=8.0),
        skyfit.Gaussian("c", x0=0.2, y0=0.5, sigma=0.15, flux=3.0),
    ]
    scene = skyfit.Scene(grid, sources, name="scene")
    g = torch.Generator().manual_seed(seed)
    truth = scene().detach()
    var = 0.02 + 0.02 * torch.rand(truth.shape, generator=g, dtype=torch.float64)
    data = truth + var.sqrt() * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    # design matrix: image of each source at unit flux
    x, y = grid.subpixel_coordinates()
    A = torch.stack([s.brightness(x, y) / s.flux.value for s in sources])
    A = grid.integrate(A).reshape(3, -1).T
    for s in sources:
        s.flux.to_dynamic()
    return skyfit.Posterior(skyfit.GaussianLikelihood(scene, data, variance=var)), A, data, var


def test_laplace_covariance_equals_linear_gaussian_covariance():
    post, A, data, var = linear_flux_problem()
    W = 1 / var.reshape(-1)
    fisher = A.T @ (W[:, None] * A)
    cov = torch.linalg.inv(fisher)
    mean = cov @ (A.T @ (W * data.reshape(-1)))
    res = skyfit.fit_map(post)
    assert res.converged
    assert torch.allclose(res.x, mean, rtol=1e-8, atol=1e-10)
    lap = skyfit.laplace(post, res.x)
    assert torch.allclose(lap.covariance, cov, rtol=1e-8, atol=0)
    assert not lap.repaired


def test_delta_method_is_exact_for_a_linear_function():
    post, A, _, _ = linear_flux_problem()
    lap = skyfit.laplace(post, skyfit.fit_map(post).x)
    w = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    value, cov = lap.propagate(lambda x: (w * x).sum())
    assert value.item() == pytest.approx((w * lap.mean).sum().item())
    assert cov.item() == pytest.approx((w @ lap.covariance @ w).item(), rel=1e-12)


def test_delta_method_for_a_nonlinear_vector_function():
    # J depends on the point: a Jacobian taken anywhere but the mean would fail here
    C = torch.tensor([[0.04, 0.01, 0.0], [0.01, 0.09, 0.02], [0.0, 0.02, 0.25]],
                     dtype=torch.float64)
    mu = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)
    P = torch.linalg.inv(C)
    d = FunctionDensity(lambda x: -0.5 * (((x - mu) @ P) * (x - mu)).sum(-1), 3)
    lap = skyfit.laplace(d, mu)
    value, cov = lap.propagate(lambda x: torch.stack([x[0] * x[1], torch.log(x[2])]))
    J = torch.tensor([[3.0, 2.0, 0.0], [0.0, 0.0, 1 / 5.0]], dtype=torch.float64)
    torch.testing.assert_close(value, torch.tensor([6.0, math.log(5.0)], dtype=torch.float64))
    torch.testing.assert_close(cov, J @ C @ J.T, rtol=1e-12, atol=0)
    draws = lap.sample(20000, seed=0).draws[0]
    # the Laplace draws' mean within 4 standard errors of the mean
    assert abs(draws.mean(0) - mu.numpy()).max() < 4 * (C.diagonal().sqrt().max().item()
                                                       / 20000**0.5)


def test_check_inside_names_the_bad_value_of_a_batch():
    post, *_ = linear_flux_problem()
    with pytest.raises(ParameterRangeError, match=r"point 1 of 2.*a.flux=-1"):
        post.check_inside(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64))


def test_periodic_marks_the_entries_of_cyclic_params():
    post, *_ = linear_flux_problem()
    assert post.periodic.tolist() == [False, False, False]
    post.likelihood.model.sources[1].phi.to_dynamic()  # valid (0, pi), declared cyclic
    post = skyfit.Posterior(post.likelihood)
    assert post.periodic.tolist() == [n.endswith(".phi") for n in post.names]
    assert post.periodic.sum() == 1


def test_autograd_gradient_matches_finite_differences():
    post, _, _, _ = linear_flux_problem()
    for s in post.likelihood.model.sources:
        s.to_dynamic()
    post = skyfit.Posterior(post.likelihood)
    x = post.initial()
    x = torch.where(x >= 1.0 - 1e-9, x - 0.1, x * 1.01)  # inside q <= 1, off the optimum
    x[[i for i, n in enumerate(post.names) if n.endswith(".phi")]] = 0.3  # away from the bounds
    post.check_inside(x)
    _, grad = post.value_and_grad(x)
    h = 1e-6
    fd = torch.stack([(post(x + h * e) - post(x - h * e)) / (2 * h)
                      for e in torch.eye(post.dim, dtype=torch.float64)])
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-4)


def test_names_bounds_and_uniform_default_prior():
    post, _, _, _ = linear_flux_problem()
    post.likelihood.model.sources[0].q.to_dynamic()
    post = skyfit.Posterior(post.likelihood)
    assert post.names == ["a.q", "a.flux", "b.flux", "c.flux"]
    assert post.lower.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert post.upper[0].item() == 1.0 and math.isinf(post.upper[1].item())
    x = post.initial()
    # q has valid (0, 1): uniform prior of density 1; fluxes: flat
    assert post.log_prior(x).item() == pytest.approx(0.0)
    outside = x.clone()
    outside[0] = 1.5
    assert post(outside).item() == -math.inf
    # phi has valid (0, pi): density 1/pi (a flat default would give 0 here, unlike for q)
    post.likelihood.model.sources[1].phi.to_dynamic()
    with_phi = skyfit.Posterior(post.likelihood)
    assert with_phi.log_prior(with_phi.initial()).item() == pytest.approx(-math.log(math.pi),
                                                                          rel=1e-12)


def test_user_prior_is_added():
    post, _, _, _ = linear_flux_problem()
    base = skyfit.Posterior(post.likelihood)
    prior = torch.distributions.Normal(torch.tensor(5.0, dtype=torch.float64), 0.5)
    with_prior = skyfit.Posterior(post.likelihood, priors={"a.flux": prior})
    x = base.initial()
    diff = with_prior(x) - base(x)
    assert diff.item() == pytest.approx(prior.log_prob(x[0]).item(), rel=1e-12)


def test_batched_log_density_equals_loop():
    post, _, _, _ = linear_flux_problem()
    g = torch.Generator().manual_seed(3)
    xs = post.initial() * (1 + 0.1 * torch.randn(6, 3, generator=g, dtype=torch.float64))
    batched = post(xs)
    loop = torch.stack([post(x) for x in xs])
    assert torch.allclose(batched, loop, rtol=1e-12)


def test_module_log_prior_term_joins_the_posterior():
    post, _, _, _ = linear_flux_problem()

    import caskade as ck

    class FluxPrior(ck.Module):
        def __init__(self, source):
            super().__init__("fluxprior")
            self.source = source

        @ck.forward
        def log_prior(self):
            return -0.5 * (self.source.flux.value - 5.0) ** 2

    scene = post.likelihood.model
    holder = FluxPrior(scene.sources[0])
    scene.prior_holder = holder  # link into the graph
    with_term = skyfit.Posterior(post.likelihood)
    x = with_term.initial() + 1.0
    base = skyfit.Posterior(post.likelihood)
    base.joint.prior_modules = []
    a_flux = with_term.unpack(x)["a.flux"].item()
    assert (with_term(x) - base(x)).item() == pytest.approx(-0.5 * (a_flux - 5.0) ** 2)


def test_bad_vectors_and_values_raise_clear_errors():
    post, _, _, _ = linear_flux_problem()
    with pytest.raises(ParameterVectorError, match="expected 3"):
        post(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ParameterRangeError, match=r"a.flux=-1"):
        post.set(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ParameterRangeError, match="b.flux"):
        skyfit.fit_map(post, torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64))
    with pytest.raises(ParameterVectorError, match="NaN"):
        skyfit.fit_map(post, torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64))


def test_nan_log_density_at_start_names_parameters():
    d = FunctionDensity(lambda x: torch.log(x[..., 0] - 1.0).sum(-1) * 0 + torch.log(
        x[..., 0] - 1.0), ["alpha", "beta"])
    with pytest.raises(LogDensityError, match="alpha=0.*beta=0"):
        skyfit.fit_map(d, torch.zeros(2, dtype=torch.float64))


def test_flat_direction_is_named_and_repaired():
    # two identical sources: only the sum of their fluxes is measured
    grid = skyfit.PixelGrid((16, 16), 0.1)
    a = skyfit.Gaussian("left", sigma=0.2, flux=2.0)
    b = skyfit.Gaussian("right", sigma=0.2, flux=3.0)
    scene = skyfit.Scene(grid, [a, b])
    data = scene().detach()
    a.flux.to_dynamic()
    b.flux.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(scene, data, variance=torch.full_like(data,
                                                                                          1e-3)))
    with pytest.warns(HessianWarning, match=r"flat.*left.flux.*right.flux|flat.*right.flux"):
        lap = skyfit.laplace(post, post.initial())
    assert lap.repaired
    assert torch.isfinite(lap.covariance).all()
    # the measured combination (the sum) keeps its right, finite error: 1 / its Fisher
    # information, the unit-flux image (data / 5) squared over the pixel variance
    w = torch.ones(2, dtype=torch.float64)
    truth = 1e-3 / ((data / 5.0) ** 2).sum()
    assert (w @ lap.covariance @ w).item() == pytest.approx(truth.item(), rel=1e-3)


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS", "trust-exact"])
def test_all_methods_reach_the_same_optimum(method):
    post, _, _, _ = linear_flux_problem()
    ref = skyfit.fit_map(post)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = skyfit.fit_map(post, method=method)
    assert res.converged
    assert res.log_density == pytest.approx(ref.log_density, abs=1e-8)
    assert torch.allclose(res.x, ref.x, rtol=1e-6)


def test_map_result_writes_values_back():
    post, _, _, _ = linear_flux_problem()
    res = skyfit.fit_map(post)
    res.apply()
    assert torch.allclose(post.initial(), res.x)
    assert set(res.values) == {"a.flux", "b.flux", "c.flux"}


def test_preconditioned_fit_reaches_the_analytic_optimum_of_a_badly_scaled_problem():
    # curvatures 1e-6 .. 1e6 (arcsec-sized and flux-sized parameters in one vector): the optimum
    # of this quadratic is known exactly, with and without preconditioning
    mean = torch.tensor([0.3, -2.0, 4.0e3], dtype=torch.float64)
    prec = torch.tensor([1e6, 1.0, 1e-6], dtype=torch.float64)
    batched = FunctionDensity(lambda x: -0.5 * (prec * (x - mean) ** 2).sum(-1), 3)

    def one_point_only(x):
        if x.ndim != 1:
            raise RuntimeError("this model takes one point at a time")
        return -0.5 * (prec * (x - mean) ** 2).sum(-1)

    unbatched = FunctionDensity(one_point_only, 3)
    x0 = torch.tensor([0.0, 0.0, 1.0e3], dtype=torch.float64)
    res = skyfit.fit_map(batched, x0)
    assert res.converged
    torch.testing.assert_close(res.x, mean, rtol=1e-9, atol=1e-9)
    # a model that fails on a batch: no preconditioning, a warning saying why, same optimum
    with pytest.warns(skyfit.errors.ConvergenceWarning, match="no preconditioning"):
        res = skyfit.fit_map(unbatched, x0)
    torch.testing.assert_close(res.x, mean, rtol=1e-9, atol=1e-9)
    # evaluation counts include the start and the dim points of the preconditioning call
    assert skyfit.fit_map(batched, x0).n_evals >= 1 + 3


def _gaussian_light_curve_likelihood():
    """A Gaussian light curve's likelihood of its own noiseless curve, every Param dynamic."""
    lc = skyfit.GaussianLightCurve(t0=0.5, sigma=2.0, peak_flux=1.0)
    t = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    flux = lc.flux(t).detach()
    lc.to_dynamic()
    return skyfit.PhotometryLikelihood(lc, t, flux, 0.05 * torch.ones_like(t))


def test_a_prior_outside_its_support_gives_minus_infinity():
    # with argument validation off, Exponential gives a finite (even positive) log_prob below 0
    like = _gaussian_light_curve_likelihood()
    x = torch.tensor([-0.5, 2.0, 1.0], dtype=torch.float64)  # t0 = -0.5
    f64 = dict(dtype=torch.float64)
    for prior in (torch.distributions.Exponential(torch.tensor(1.0, **f64)),
                  torch.distributions.Uniform(torch.tensor(0.0, **f64), torch.tensor(2.0, **f64))):
        post = skyfit.Posterior(like, priors={"GaussianLightCurve.t0": prior})
        assert post(x).item() == -math.inf
        assert (post(x.repeat(2, 1)) == -math.inf).all()
        with pytest.raises(LogDensityError):
            skyfit.fit_map(post, x)


def test_laplace_does_not_repair_a_definite_hessian_of_mixed_units():
    # curvatures 1e7 .. 1e-7 (arcsec-sized and flux-sized parameters): exactly invertible
    prec = torch.tensor([1e7, 1.0, 1e-7], dtype=torch.float64)
    d = FunctionDensity(lambda x: -0.5 * (prec * x**2).sum(-1), ["pos", "b", "flux"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", HessianWarning)
        lap = skyfit.laplace(d, torch.zeros(3, dtype=torch.float64))
    assert not lap.repaired
    torch.testing.assert_close(lap.covariance.diagonal() * prec,
                               torch.ones(3, dtype=torch.float64), rtol=1e-10, atol=0)


def test_laplace_warns_for_a_parameter_pinned_at_its_bound():
    # the density rises towards flux < 0, so the fit stops at the bound: not a mode
    d = FunctionDensity(
        lambda x: -0.5 * ((x - torch.tensor([-1.0, 2.0], dtype=x.dtype)) ** 2).sum(-1),
        ["flux", "b"], lower=torch.tensor([0.0, -10.0], dtype=torch.float64))
    with pytest.warns(HessianWarning, match="flux=0 at the bound"):
        skyfit.laplace(d, torch.tensor([0.0, 2.0], dtype=torch.float64))
    inward = FunctionDensity(
        lambda x: -0.5 * ((x - torch.tensor([1.0, 2.0], dtype=x.dtype)) ** 2).sum(-1),
        ["flux", "b"], lower=torch.tensor([0.0, -10.0], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", HessianWarning)  # at the bound, rising inward: quiet
        skyfit.laplace(inward, torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_normal_and_lognormal_priors_in_closed_form_equal_the_distributions():
    # the Posterior sums Normal and LogNormal priors in one vectorised term per family; its
    # value and gradient must be the distributions' own (others, here HalfNormal, go through
    # them), and a LogNormal prior below 0 gives -inf (its inner Normal used to raise instead)
    like = _gaussian_light_curve_likelihood()
    priors = {"GaussianLightCurve.t0": torch.distributions.Normal(0.3, 2.0),  # float32 inside
              "GaussianLightCurve.sigma": torch.distributions.LogNormal(0.5, 0.7),
              "GaussianLightCurve.peak_flux": torch.distributions.HalfNormal(3.0)}
    post = skyfit.Posterior(like, priors=priors)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 3, generator=g, dtype=torch.float64) * 4.0).requires_grad_(True)
    expected = sum(d.log_prob(x[:, k]) for k, d in enumerate(priors.values()))
    got = post.log_prior(x)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    grad_expected, = torch.autograd.grad(expected.sum(), x)
    grad_got, = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-14, atol=1e-14)
    below = torch.tensor([[0.0, -1.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert (post.log_prior(below) == -math.inf).all()


def test_a_prior_replaced_after_construction_is_the_one_evaluated():
    # the closed-form constants are cached per Posterior: a replaced prior (same label, a new
    # distribution, possibly at the freed one's address) must be read again
    like = _gaussian_light_curve_likelihood()
    post = skyfit.Posterior(like, priors={"GaussianLightCurve.t0": torch.distributions.Normal(
        0.0, 1.0)})
    x = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    before = post.log_prior(x)
    for loc in (1.0, 3.0):
        post.priors["GaussianLightCurve.t0"] = torch.distributions.Normal(loc, 1.0)
        expected = torch.distributions.Normal(loc, 1.0).log_prob(torch.tensor(1.0)).double()
        torch.testing.assert_close(post.log_prior(x) - before,
                                   expected - torch.distributions.Normal(0.0, 1.0).log_prob(
                                       torch.tensor(1.0)).double())
