"""Batched NUTS: exactness of the tree bookkeeping, recovery of known posteriors, bad input."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from targets import assert_recovers, correlated_gaussian

from skyfit.errors import ConvergenceWarning, LogDensityError, ParameterRangeError
from skyfit.inference import (
    FunctionDensity,
    GaussianApproximation,
    fit_vi,
    init_to_feasible,
    sample_hmc,
    sample_nuts,
)
from skyfit.inference.adaptation import warmup_windows
from skyfit.inference.mcmc import NUTS, KernelParams, Metric, ValueAndGrad
from skyfit.inference.mcmc.termination import checkpoint_tables, subtree_turning


def test_checkpoint_tables_span_exactly_the_subtrees_ending_at_each_leaf():
    store, check, _ = checkpoint_tables(6)
    stored_at = {}  # level -> leaf index holding it
    for n in range(store.shape[0]):
        if n % 2 == 0:
            (level,) = torch.nonzero(store[n]).flatten().tolist()
            stored_at[level] = n
        starts = sorted(stored_at[k] for k in torch.nonzero(check[n]).flatten().tolist())
        # the subtrees of size 2, 4, ... that end at leaf n start at n + 1 - 2^j
        expected = sorted(n + 1 - 2**j for j in range(1, 7) if (n + 1) % 2**j == 0)
        assert starts == expected, (n, starts, expected)


def _u_turns_by_definition(p, v, n):
    """Stan's checks of every subtree of 2, 4, ... leaves ending at leaf ``n`` of the explicit
    trajectory ``p``, ``v`` ``(chain, leaf, dim)``: the whole subtree's momentum sum against
    its end velocities, and the two sums across its halves (left half plus the right half's
    first leaf, left half's last leaf plus the right half)."""
    turning = torch.zeros(p.shape[0], dtype=torch.bool)
    size = 2
    while (n + 1) % size == 0:
        a, m = n + 1 - size, n - size // 2
        for first, last, lo, hi in ((a, n, a, n), (a, m + 1, a, m + 1), (m, n, m, n)):
            rho = p[:, lo:hi + 1].sum(1)
            ok = ((v[:, first] * rho).sum(-1) > 0) & ((v[:, last] * rho).sum(-1) > 0)
            turning |= ~ok
        size *= 2
    return turning


def test_subtree_checks_are_stans_u_turn_criteria_on_an_explicit_trajectory():
    # 64 chains' trajectories of 16 leaves (a depth-5 tree's last subtree), momenta drifting by
    # a chain's own amount so that some subtrees turn and some do not; the checkpointed checks
    # at each leaf, only the (chain, level) pairs the tables name, against the definition
    depth, C, D = 5, 64, 3
    store, check, is_max = checkpoint_tables(depth)
    g = torch.Generator().manual_seed(4)
    kw = dict(generator=g, dtype=torch.float64)
    drift = torch.randn(C, 1, D, **kw) * torch.linspace(0, 3, C, dtype=torch.float64)[:, None,
                                                                                         None]
    p = torch.randn(C, store.shape[0], D, **kw) + drift
    v = p * (0.5 + torch.rand(C, 1, D, **kw))
    ck = torch.zeros(C, depth - 1, 5 * D, dtype=torch.float64)
    prev_p, prev_v = torch.zeros(C, D, dtype=torch.float64), torch.zeros(C, D, dtype=torch.float64)
    outcomes = set()
    for n in range(store.shape[0]):
        sub_rho = p[:, :n + 1].sum(1)
        here = torch.cat([p[:, n], sub_rho, prev_p, v[:, n], prev_v], 1)
        rows, levels = store[n].expand(C, -1).nonzero(as_tuple=True)
        ck[rows, levels] = here[rows]
        rows, levels = check[n].expand(C, -1).nonzero(as_tuple=True)
        if len(rows):
            got = subtree_turning(ck, here, sub_rho, v[:, n], rows, levels, is_max[n][levels])
            expected = _u_turns_by_definition(p, v, n)
            assert torch.equal(got, expected), n
            outcomes |= set(got.tolist())
        prev_p, prev_v = p[:, n], v[:, n]
    assert outcomes == {True, False}


def test_nuts_kernel_leaves_standard_normal_invariant():
    density = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 4)
    kernel = NUTS(ValueAndGrad(density), max_tree_depth=6)
    gen = torch.Generator().manual_seed(3)
    state = kernel.init(torch.randn(64, 4, generator=gen, dtype=torch.float64))
    metric = Metric(torch.ones(64, 4, dtype=torch.float64))
    eps = torch.full((64,), 0.7, dtype=torch.float64)
    draws = []
    for _ in range(150):
        state, info = kernel.step(gen, state, KernelParams(eps, metric))
        draws.append(state.position)
        assert (info.n_steps <= info.lockstep_steps).all()
        assert (info.n_steps <= 2**info.tree_depth.clamp(min=1) * 2).all()
    x = torch.stack(draws[20:]).reshape(-1, 4)
    # draws of NUTS on a standard normal are nearly independent: 8320 draws -> se 0.011
    assert x.mean(0).abs().max() < 0.05
    assert (x.var(0) - 1).abs().max() < 0.08


def test_warmup_windows_follow_stan():
    assert warmup_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert warmup_windows(150) == [(75, 100)]
    assert warmup_windows(100) == [(15, 90)]  # Stan's 15% / 75% / 10% fallback
    assert warmup_windows(10) == []


@pytest.mark.slow
def test_nuts_recovers_correlated_gaussian_10d():
    density, mean, cov = correlated_gaussian()
    # start from the variances only: the warm-up must learn the correlations (dense mass)
    rough = GaussianApproximation(mean, torch.diag(cov.diagonal()), density.names)
    s = sample_nuts(density, init=rough, n_chains=16, n_warmup=200, n_draws=600, seed=1,
                    mass="dense", progress=False)
    assert s.info["n_divergent"] == 0
    assert_recovers(s, mean, cov)
    assert 0 <= s.info["lockstep_waste"] < 1


def test_bounded_uniform_prior_samples_uniform():
    """A flat likelihood on [2, 5]: NUTS in the unconstrained space samples U(2, 5) only because
    of the log |Jacobian|; cancelling that term makes the chains drift to the bounds."""
    flat = FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), ["a"], 2.0, 5.0)
    s = sample_nuts(flat, init=torch.tensor([3.5]), n_chains=64, n_warmup=150, n_draws=100,
                    seed=2, progress=False)
    x = s.draws[:, ::10, 0].ravel()  # thinned: nearly independent draws for the KS test
    assert stats.kstest((x - 2) / 3, "uniform").pvalue > 0.01

    def minus_log_jacobian(x):  # -log |dx/dz| of x = 2 + 3 sigmoid(z), written in x
        return -torch.log((x[..., 0] - 2) * (5 - x[..., 0]) / 3)

    no_jac = FunctionDensity(minus_log_jacobian, ["a"], 2.0, 5.0)
    bad = sample_nuts(no_jac, init=torch.tensor([3.5]), n_chains=64, n_warmup=150,
                      n_draws=100, seed=2, max_tree_depth=3, progress=False)
    y = bad.draws[:, ::10, 0].ravel()
    assert stats.kstest((y - 2) / 3, "uniform").pvalue < 1e-6


def test_funnel_is_reported_with_divergences():
    def funnel(x):  # Neal's funnel: v ~ N(0, 3), x_i ~ N(0, exp(v / 2))
        v, rest = x[..., 0], x[..., 1:]
        return -v**2 / 18 - 0.5 * (rest**2).sum(-1) * torch.exp(-v) - 0.5 * rest.shape[-1] * v

    s = sample_nuts(FunctionDensity(funnel, 3), init=torch.zeros(3), n_chains=4, n_warmup=100,
                    n_draws=100, seed=0, max_tree_depth=7, progress=False)
    assert s.info["n_divergent"] > 0
    assert s.sample_stats["diverging"].sum() == s.info["n_divergent"]
    assert np.isfinite(s.draws).all()


def test_sample_stats_and_info_are_recorded_per_draw():
    density = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), ["a", "b", "c"])
    s = sample_nuts(density, init=torch.zeros(3), n_chains=3, n_warmup=60, n_draws=40,
                    seed=0, pool_mass=True, progress=False)
    for key in ("diverging", "tree_depth", "energy", "step_size", "accept_prob", "n_steps"):
        assert s.sample_stats[key].shape == (3, 40), key
    assert s.sample_stats["diverging"].dtype == bool
    assert np.all((s.sample_stats["accept_prob"] >= 0) & (s.sample_stats["accept_prob"] <= 1))
    assert np.all(s.sample_stats["n_steps"] <= 2 ** s.sample_stats["tree_depth"] * 2)
    info = s.info
    assert info["wall_time"] > 0 and info["n_gradient_evals"] >= s.sample_stats["n_steps"].sum()
    assert 0 <= info["lockstep_waste"] < 1
    # pooled mass matrix: one estimate shared by every chain
    assert np.allclose(info["inv_mass_matrix"], info["inv_mass_matrix"][0])
    # the log-density is that of the constrained draws, without the Jacobian
    assert np.allclose(s.log_density, -0.5 * (s.draws**2).sum(-1))


def test_nan_during_sampling_is_rejected_not_propagated():
    def holed(x):  # NaN beyond x0 = 1
        lp = -0.5 * (x**2).sum(-1)
        return torch.where(x[..., 0] > 1.0, torch.nan, lp)

    for sampler in (sample_nuts, sample_hmc):
        s = sampler(FunctionDensity(holed, 2), init=torch.zeros(2), n_chains=4, n_warmup=100,
                    n_draws=100, seed=1, progress=False)
        assert np.isfinite(s.draws).all() and (s.draws[..., 0] <= 1.0).all()
        assert s.info["n_divergent"] + s.info["n_divergent_warmup"] > 0


@pytest.mark.parametrize("bad", [torch.nan, torch.inf])
def test_non_finite_log_density_at_start_names_the_parameters(bad):
    d = FunctionDensity(lambda x: torch.full(x.shape[:-1], bad, dtype=x.dtype), ["flux", "x0"])
    with pytest.raises(LogDensityError, match=r"flux=1.*x0=2"):
        sample_nuts(d, init=torch.tensor([1.0, 2.0]), init_scale=0.0, progress=False)


def test_init_outside_the_valid_range_is_rejected():
    d = FunctionDensity(lambda x: -(x**2).sum(-1), ["flux", "sigma"], lower=[0.0, 0.0],
                        upper=[10.0, 1.0])
    with pytest.raises(ParameterRangeError, match=r"sigma=2 not in \[0, 1\]"):
        sample_nuts(d, init=torch.tensor([1.0, 2.0]), progress=False)
    with pytest.raises(NotImplementedError, match="no initial.*init_to_feasible"):
        sample_nuts(d, init=None, progress=False)


def test_laplace_init_sets_starts_inside_bounds_and_the_mass_matrix():
    d = FunctionDensity(lambda x: -0.5 * ((x - 1) ** 2 / 0.04).sum(-1), ["a", "b"],
                        lower=[0.0, -torch.inf], upper=[2.0, torch.inf])
    lap = GaussianApproximation(torch.tensor([1.0, 1.0], dtype=torch.float64),
                                torch.diag(torch.tensor([0.04, 0.09], dtype=torch.float64)),
                                d.names)
    s = sample_nuts(d, init=lap, n_chains=6, n_warmup=0, n_draws=5, seed=0, progress=False)
    # z = logit(x / 2) has dz/dx = 2 at x = 1: var_z(a) = 4 * 0.04; b is unbounded
    assert np.allclose(s.info["inv_mass_matrix"], [0.16, 0.09])
    assert (s.draws[..., 0] > 0).all() and (s.draws[..., 0] < 2).all()


def test_interrupt_returns_the_finished_draws():
    calls = {"n": 0}

    def stops(x):
        calls["n"] += 1
        if calls["n"] > 400:
            raise KeyboardInterrupt
        return -0.5 * (x**2).sum(-1)

    # a bare KeyboardInterrupt has no message: none is quoted (it read 'by KeyboardInterrupt: ;')
    with pytest.warns(Warning, match="by KeyboardInterrupt; returning the"):
        s = sample_nuts(FunctionDensity(stops, 2), init=torch.zeros(2), n_chains=2, n_warmup=20,
                        n_draws=10_000, seed=0, progress=False)
    assert s.info["interrupted"] and 0 < s.n_draws < 10_000
    assert s.sample_stats["energy"].shape == (2, s.n_draws)
    assert np.isfinite(s.draws).all()


@pytest.mark.parametrize("depth, step, dense", [(10, 0.25, False), (5, 0.1, False),
                                                (10, 0.15, True)])
def test_nuts_kernel_leaves_a_banana_invariant(depth, step, dense):
    # 20000 chains started from exact draws stay exact draws after 5 transitions: any error in
    # the tree building, U-turn checks or multinomial/biased progressive sampling shows here
    def banana(x):
        return -0.5 * (x[..., 0] ** 2 / 4 + (x[..., 1] - 0.5 * x[..., 0] ** 2) ** 2)

    def exact(n, g):
        x0 = 2 * torch.randn(n, generator=g, dtype=torch.float64)
        return torch.stack([x0, 0.5 * x0**2 + torch.randn(n, generator=g, dtype=torch.float64)],
                           1)

    C, g = 20000, torch.Generator().manual_seed(0)
    kernel = NUTS(ValueAndGrad(FunctionDensity(banana, 2)), max_tree_depth=depth)
    state = kernel.init(exact(C, g))
    inv_mass = (torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64).expand(C, 2, 2)
                if dense else torch.tensor([1.0, 0.5], dtype=torch.float64).expand(C, 2))
    metric = Metric(inv_mass.clone())
    eps = torch.full((C,), step, dtype=torch.float64)
    for _ in range(5):
        state, info = kernel.step(g, state, KernelParams(eps, metric))
    assert info.tree_depth.double().mean() > 1.5  # real trajectories, not single steps
    reference = exact(200000, g)
    for i in range(2):
        p = stats.ks_2samp(state.position[:, i].numpy(), reference[:, i].numpy()).pvalue
        assert p > 1e-3, f"coordinate {i}: KS p = {p:.2g}"


def test_a_vi_result_starts_nuts_in_the_unconstrained_space():
    # x > 0, posterior N(100, 5^2): the VI fit lives in log x
    d = FunctionDensity(lambda x: -0.5 * ((x - 100.0) / 5.0).pow(2).sum(-1), ["x"], lower=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vi = fit_vi(d, n_steps=300, progress=False, init=torch.tensor([90.0]))
    s = sample_nuts(d, init=vi, n_chains=4, n_warmup=0, n_draws=1, seed=0, progress=False)
    assert np.all(np.abs(s.draws[:, 0, 0] - 100.0) < 25.0)
    bounded = FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), ["u"], 2.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vi2 = fit_vi(bounded, n_steps=200, progress=False, init=init_to_feasible())
        s2 = sample_nuts(bounded, init=vi2, n_warmup=10, n_draws=5, progress=False)
    assert np.all((s2.draws > 2.0) & (s2.draws < 5.0))


def test_nan_region_is_rejected_and_counted():
    # log p is NaN beyond x = 1.5: the sampler must reject those points, never keep them
    d = FunctionDensity(lambda x: torch.where(x[..., 0] < 1.5, -0.5 * (x**2).sum(-1),
                                              torch.nan), ["x", "y"])
    s = sample_nuts(d, init=torch.zeros(2), n_chains=2, n_warmup=100, n_draws=100, seed=1,
                    progress=False)
    assert (s.draws[..., 0] < 1.5).all()
    assert s.info["n_nonfinite"] > 0 and s.info["n_divergent"] + s.info["n_divergent_warmup"] > 0


def test_divergent_draws_are_said_when_sampling_ends():
    # a wall at 0.5 that the step size cannot follow: 72 of 100 draws diverged and sample_nuts
    # returned without a word (only summary() or check() said it)
    wall = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1)
                           - 1e8 * torch.relu(x - 0.5).pow(3).sum(-1), ["a", "b"])
    with pytest.warns(ConvergenceWarning, match=r"of 100 draws .* divergent transition"):
        s = sample_nuts(wall, init=torch.zeros(2, dtype=torch.float64), n_chains=2,
                        n_warmup=50, n_draws=50, seed=0, progress=False)
    assert s.n_divergent > 0
    smooth = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert sample_nuts(smooth, init=torch.zeros(2, dtype=torch.float64), n_chains=2,
                           n_warmup=50, n_draws=50, seed=0, progress=False).n_divergent == 0
