"""Batched L-BFGS over independent problems, checked against analytic optima, scipy and skyfit's
single-object fits."""

import math

import pytest
import torch

import skyfit
from skyfit.inference import FunctionDensity, fit_map
from skyfit.inference.optimizers import (
    LBFGSOptions,
    Status,
    minimize_batched,
    multistart,
    strong_wolfe,
)
from skyfit.inference.optimizers import lbfgs as kernel

F64 = torch.float64


def autograd_objective(fn):
    """``fn(x) -> f (k,)`` as a batched ``(f, grad)`` objective."""

    def objective(x, *rows):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            f = fn(x, *rows)
            (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g

    return objective


def random_quadratics(b, d, condition_numbers, dtype=F64, device="cpu", seed=0):
    """``f_b(x) = (x - c_b)^T A_b (x - c_b) / 2`` with random rotations and eigenvalues spread
    log-uniformly over ``[1, condition_number_b]``; the optimum is ``c_b``."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, d, d, generator=gen, dtype=F64))
    frac = torch.linspace(0, 1, d, dtype=F64)
    eig = torch.as_tensor(condition_numbers, dtype=F64)[:, None] ** frac
    a = ((q * eig[:, None, :]) @ q.transpose(1, 2)).to(dtype=dtype, device=device)
    c = (3 * torch.randn(b, d, generator=gen, dtype=F64)).to(dtype=dtype, device=device)

    def objective(x, rows):
        r = x - c[rows]
        ar = (a[rows] @ r[..., None])[..., 0]
        return 0.5 * (r * ar).sum(-1), ar

    return objective, c


def test_independent_quadratics_reach_their_analytic_optima():
    kappa = [1.0, 10.0, 1e2, 1e3, 1e4] * 4
    objective, centres = random_quadratics(len(kappa), 6, kappa)
    x0 = torch.zeros(len(kappa), 6, dtype=F64)
    # ftol=0: stop on the gradient alone (the optimum value 0 makes any f change look relative)
    res = minimize_batched(objective, x0, takes_rows=True, gtol=1e-10, ftol=0.0)
    assert (res.status == Status.CONVERGED_GTOL).all(), res.messages
    assert torch.allclose(res.x, centres, atol=1e-8, rtol=0)
    # a worse-conditioned problem takes more iterations, and no row pays for another's
    assert res.n_iter[0] < res.n_iter[4]


def rosenbrock(x):
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(-1)


@pytest.mark.parametrize("dim", [2, 3, 5, 10])
def test_rosenbrock_from_random_starts_reaches_the_minimum(dim):
    # the chained Rosenbrock function has a second local minimum near x1 = -1 for 4 <= D <= 30
    # (Shang & Qiu 2006, Evol. Comput. 14, 119): starts are drawn where x1 > 0
    gen = torch.Generator().manual_seed(dim)
    x0 = 2 * torch.rand(32, dim, generator=gen, dtype=F64)
    res = minimize_batched(autograd_objective(rosenbrock), x0, gtol=1e-10)
    assert res.converged.all(), res.messages
    assert torch.allclose(res.x, torch.ones_like(res.x), atol=1e-6, rtol=0)


def simulate_gaussian_light_curves(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=gen, dtype=F64)
    truth = torch.stack([20 * u[:, 0] - 10, 3 + 7 * u[:, 1], 50 + 150 * u[:, 2]], -1)
    t = torch.linspace(-30, 30, 30, dtype=F64).expand(n, 30)
    err = torch.full_like(t, 5.0)
    clean = skyfit.lightcurves.functions.gaussian_light_curve(t, *truth.T[:, :, None])
    flux = clean + err * torch.randn(t.shape, generator=gen, dtype=F64)
    return truth, t, flux, err


def test_batched_light_curve_fits_equal_skyfit_fit_map_per_object():
    truth, t, flux, err = simulate_gaussian_light_curves(50)
    gen = torch.Generator().manual_seed(1)
    starts = truth * (1 + 0.1 * torch.randn(truth.shape, generator=gen, dtype=F64))

    def neg_log_like(z, rows):  # z = (t0, log sigma, log peak_flux): bounded entries to R
        model = skyfit.lightcurves.functions.gaussian_light_curve(
            t[rows], z[:, :1], z[:, 1:2].exp(), z[:, 2:].exp())
        var = err[rows] ** 2
        return 0.5 * ((flux[rows] - model) ** 2 / var + torch.log(2 * math.pi * var)).sum(-1)

    z0 = torch.cat([starts[:, :1], starts[:, 1:].log()], -1)
    batched = minimize_batched(autograd_objective(neg_log_like), z0, takes_rows=True,
                               scale="curvature", gtol=1e-9)
    x_batched = torch.cat([batched.x[:, :1], batched.x[:, 1:].exp()], -1)
    agree = 0
    for i in range(50):
        lc = skyfit.GaussianLightCurve(t0=starts[i, 0].item(), sigma=starts[i, 1].item(),
                                       peak_flux=starts[i, 2].item())
        lc.to_dynamic()
        post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t[i], flux[i], err[i]))
        # the same problem: skyfit's log-density (flat priors) is the batched objective's negative
        assert torch.allclose(post(x_batched[i]), -batched.value[i], rtol=1e-12)
        single = fit_map(post, starts[i])
        if single.converged and bool(batched.converged[i]):
            agree += 1
            assert torch.allclose(x_batched[i], single.x, rtol=1e-6, atol=0), i
    assert agree >= 48


def test_nan_and_infinite_regions_are_rejected_and_reported():
    # sqrt(1 + (x - target)^2) is linear far from its minimum: the secant model overshoots, so
    # the line search steps into the bad regions. Rows: 0 NaN beyond x = 0.6, minimum at 0.5;
    # 1 f = inf (log p = -inf) beyond x = 1, minimum at 2 outside (a wall); 2 NaN at the start;
    # 3 a gradient of the wrong sign
    target = torch.tensor([0.5, 2.0, 0.5, 0.5], dtype=F64)
    huber = autograd_objective(lambda v, rows: (1 + (v[:, 0] - target[rows]) ** 2).sqrt())

    def objective(x, rows):
        f, g = huber(x, rows)
        f = torch.where((rows == 0) & (x[:, 0] > 0.6), torch.nan, f)
        f = torch.where((rows == 1) & (x[:, 0] > 1.0), torch.inf, f)
        return f, torch.where((rows == 3)[:, None], -g, g)

    x0 = torch.tensor([[-10.0], [-10.0], [torch.nan], [-10.0]], dtype=F64)
    res = minimize_batched(objective, x0, takes_rows=True, gtol=1e-8)
    # the wrong gradient: only steps too small to change f are accepted (approximate Wolfe)
    assert res.status.tolist() == [Status.CONVERGED_GTOL, Status.STALLED,
                                   Status.NONFINITE_START, Status.STALLED]
    assert res.converged.tolist() == [True, False, False, False]
    assert res.n_nan[0] > 0 and "NaN" in res.message(0)
    assert abs(res.x[0, 0] - 0.5) < 1e-7
    assert res.n_inf[1] > 0 and 0.99 < res.x[1, 0] <= 1.0 and "wall" in res.message(1)
    assert torch.isnan(res.x[2, 0]) and res.n_iter[2] == 0
    assert res.x[3, 0] < -9.99
    # with exact Wolfe tests only (ftol=0) no step is accepted at all
    exact = minimize_batched(objective, x0, takes_rows=True, gtol=1e-8, ftol=0.0)
    assert exact.status[3] == Status.LINE_SEARCH_FAILED and "no step" in exact.message(3)
    capped = minimize_batched(lambda x: objective(x, torch.zeros(len(x), dtype=torch.long)),
                              x0[:1], max_iter=3)
    assert capped.status.tolist() == [Status.MAX_ITER] and not capped.converged.any()
    assert "3 iterations" in capped.message(0)


def test_multistart_finds_both_modes_of_a_bimodal_target_and_keeps_the_better():
    means = torch.tensor([[4.0, 4.0], [-4.0, -2.0]], dtype=F64)
    weights = torch.tensor([0.7, 0.3], dtype=F64)

    def log_p(x):  # two unit Gaussians 10 sigma apart: the modes are the means to ~e^-50
        sq = ((x[..., None, :] - means) ** 2).sum(-1)
        return torch.logsumexp(weights.log() - 0.5 * sq - math.log(2 * math.pi), -1)

    density = FunctionDensity(log_p, ["a", "b"], lower=-10.0, upper=10.0)
    gen = torch.Generator().manual_seed(3)
    starts = 19.8 * torch.rand(32, 2, generator=gen, dtype=F64) - 9.9
    res = multistart(density, starts, gtol=1e-9)
    assert res.converged.all()
    assert len(res.optima) == 2
    near = [int(((res.x - m).norm(dim=-1) < 1e-3).sum()) for m in means]
    assert [o.count for o in res.optima] == near and sum(near) == 32 and min(near) > 0
    assert torch.allclose(res.best_x, means[0], atol=1e-7, rtol=0)
    assert res.best_log_density == pytest.approx(math.log(0.7 / (2 * math.pi)), abs=1e-12)
    assert res.optima[1].log_density == pytest.approx(math.log(0.3 / (2 * math.pi)), abs=1e-12)
    assert torch.allclose(res.optima[1].x, means[1], atol=1e-7, rtol=0)
    with pytest.raises(skyfit.errors.ParameterRangeError, match="on a bound for \\['b'\\]"):
        multistart(density, torch.tensor([[0.0, 10.0]], dtype=F64))


def test_optima_of_equal_height_are_told_apart_by_position():
    centres = torch.tensor([[-3.0], [3.0]], dtype=F64)

    def log_p(x):  # two equal unit Gaussians 6 sigma apart: equal log-densities at both modes
        return torch.logsumexp(-0.5 * (x[..., None, 0] - centres[:, 0]) ** 2, -1)

    starts = torch.linspace(-6, 6, 10, dtype=F64)[:, None]
    res = multistart(FunctionDensity(log_p, 1), starts, gtol=1e-9)
    assert [o.count for o in res.optima] == [5, 5]
    assert res.optima[0].log_density == pytest.approx(res.optima[1].log_density, abs=1e-12)
    assert sorted(o.starts[0] < 5 for o in res.optima) == [False, True]


def test_multistart_on_a_skyfit_posterior_agrees_with_fit_map():
    truth, t, flux, err = simulate_gaussian_light_curves(1, seed=4)
    lc = skyfit.GaussianLightCurve(t0=0.0, sigma=5.0, peak_flux=100.0)
    lc.to_dynamic()
    post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t[0], flux[0], err[0]))
    gen = torch.Generator().manual_seed(2)
    starts = torch.stack([torch.linspace(-12, 12, 12, dtype=F64),
                          torch.full((12,), 5.0, dtype=F64),
                          80 + 40 * torch.rand(12, generator=gen, dtype=F64)], -1)
    res = multistart(post, starts, gtol=1e-9)
    single = fit_map(post, truth[0])
    assert single.converged and res.best_converged
    assert torch.allclose(res.best_x, single.x, rtol=1e-6, atol=0)
    assert res.best_log_density == pytest.approx(single.log_density, abs=1e-9)
    assert len(res.optima) == 1 and res.optima[0].count == 12  # one optimum in this window


def test_float32_input_gives_float32_results_at_float32_precision():
    kappa = [1.0, 10.0, 100.0, 1000.0]
    objective, centres = random_quadratics(4, 3, kappa, dtype=torch.float32)
    res = minimize_batched(objective, torch.zeros(4, 3), takes_rows=True, gtol=1e-4)
    assert res.x.dtype == torch.float32 and res.value.dtype == torch.float32
    assert res.converged.all(), res.messages
    assert torch.allclose(res.x, centres, atol=1e-3, rtol=0)
    x0 = torch.tensor([[-1.2, 1.0], [0.5, 0.5]])
    rosen = minimize_batched(autograd_objective(rosenbrock), x0, gtol=1e-3)
    assert rosen.converged.all(), rosen.messages
    assert torch.allclose(rosen.x, torch.ones_like(x0), atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_tensors():
    objective, centres = random_quadratics(8, 4, [10.0] * 8, device="cuda")
    res = minimize_batched(objective, torch.zeros(8, 4, dtype=F64, device="cuda"),
                           takes_rows=True, scale="curvature", gtol=1e-10, ftol=0.0)
    assert res.x.device.type == "cuda" and res.converged.all()
    assert torch.allclose(res.x, centres, atol=1e-8, rtol=0)


def test_a_row_that_stopped_is_frozen_and_never_evaluated_again():
    seen = []
    objective = autograd_objective(rosenbrock)

    def recording(x, rows):
        seen.append(rows.tolist())
        return objective(x)

    x0 = torch.tensor([[1.0 + 1e-4, 1.0], [-1.2, 1.0]], dtype=F64)
    options = LBFGSOptions(gtol=1e-10)
    state = kernel.init(x0, recording, options)
    frozen_at = None
    while bool((state.status == Status.RUNNING).any()):
        state, _ = kernel.step(state, recording, options)
        if frozen_at is None and state.status[0] != Status.RUNNING:
            frozen_at, x_frozen, evals_frozen, calls = (int(state.n_iter[1]), state.x[0].clone(),
                                                         int(state.n_evals[0]), len(seen))
        if frozen_at is not None:
            assert torch.equal(state.x[0], x_frozen)
            assert int(state.n_evals[0]) == evals_frozen
    assert frozen_at is not None and int(state.n_iter[1]) > frozen_at + 5
    assert all(0 not in rows for rows in seen[calls:])
    assert torch.allclose(state.x, torch.ones_like(x0), atol=1e-8)


def test_line_search_steps_satisfy_the_strong_wolfe_conditions():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 4, generator=gen, dtype=F64)
    objective = autograd_objective(lambda v, rows: rosenbrock(v))
    f0, g0 = objective(x, None)
    d = -g0 / g0.norm(dim=-1, keepdim=True)
    c1, c2 = 1e-4, 0.9
    res = strong_wolfe(objective, torch.arange(64), x, f0, g0, d, torch.ones(64, dtype=F64),
                       c1=c1, c2=c2)
    assert res.wolfe.all()
    f, g = objective(x + res.step[:, None] * d, None)
    slope0 = (g0 * d).sum(-1)
    assert (f <= f0 + c1 * res.step * slope0).all()
    assert ((g * d).sum(-1).abs() <= c2 * slope0.abs()).all()
    assert torch.equal(f, res.f)
