"""Batched damped Newton over independent problems (fit_map_many's default for small dim):
checked against analytic optima, per-row termination, and the L-BFGS path."""

import warnings

import pytest
import torch

from skyfit.inference import BatchedDensity, fit_map_many, laplace_many
from skyfit.inference.optimizers import Status
from skyfit.inference.optimizers import newton as kernel
from skyfit.inference.optimizers.newton import minimize_newton

F64 = torch.float64


def autograd_objective(fn):
    """``fn(x, rows) -> f (k,)`` as a batched ``(f, grad, hessian)`` objective (exact Hessian)."""

    def objective(x, rows):
        def one(xi, r):
            return fn(xi[None], r[None])[0]

        f = fn(x, rows)
        g = torch.func.vmap(torch.func.grad(one))(x, rows)
        H = torch.func.vmap(torch.func.hessian(one))(x, rows)
        return f.detach(), g.detach(), H.detach()

    return objective


def random_quadratics(b, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, d, d, generator=gen, dtype=F64))
    eig = 10 ** (4 * torch.rand(b, d, generator=gen, dtype=F64))  # condition up to 1e4
    A = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
    centres = torch.randn(b, d, generator=gen, dtype=F64) * 5

    def f(x, rows):
        r = x - centres[rows]
        return 0.5 * (r[:, None, :] @ A[rows] @ r[:, :, None]).flatten()

    return f, centres


def test_a_quadratic_converges_in_one_newton_step():
    f, centres = random_quadratics(12, 6)
    state = minimize_newton(autograd_objective(f), torch.zeros(12, 6, dtype=F64), damping=0.0)
    assert (state.n_iter == 1).all()
    assert (state.status == Status.CONVERGED_GTOL).all()
    torch.testing.assert_close(state.x, centres, rtol=0, atol=1e-9)


def rosenbrock(x, rows=None):
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(-1)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_rosenbrock_from_random_starts_reaches_the_minimum(dim):
    # the curved valley defeats undamped Newton from far starts (indefinite Hessians, overshoot):
    # the damping has to do the work. Starts where x1 > 0 (a second local minimum near x1 = -1
    # exists for dim >= 4)
    gen = torch.Generator().manual_seed(dim)
    x0 = 2 * torch.rand(16, dim, generator=gen, dtype=F64)
    state = minimize_newton(autograd_objective(rosenbrock), x0)
    converged = (state.status == Status.CONVERGED_GTOL) | (state.status == Status.CONVERGED_FTOL)
    assert converged.all(), state.status
    # stopped on the decrement 1e-14 (f = 0 at the minimum): within ~1e-7 of it
    torch.testing.assert_close(state.x, torch.ones_like(state.x), rtol=0, atol=1e-6)
    assert int(state.n_iter.max()) < 100


def test_rows_stop_on_their_own_and_are_never_evaluated_again():
    # row 0 a quadratic (1 step), row 1 Rosenbrock (many): row 0's point is not evaluated after
    # it stopped, and its state does not change
    f, centres = random_quadratics(1, 2)
    evaluated = []

    def mixed(x, rows):
        evaluated.append(rows.clone())
        out = torch.where(rows == 0, f(x, torch.zeros_like(rows)), rosenbrock(x))
        return out

    objective = autograd_objective(mixed)
    calls = []

    def counting(x, rows):
        calls.append(rows.clone())
        return objective(x, rows)

    x0 = torch.tensor([[0.0, 0.0], [-1.2, 1.0]], dtype=F64)
    exact = kernel.NewtonOptions(damping=0.0)
    state = kernel.init(x0, counting, exact)
    state = kernel.step(state, counting, exact)
    assert state.status[0] == Status.CONVERGED_GTOL and state.status[1] == Status.RUNNING
    frozen = state.x[0].clone()
    while bool((state.status == Status.RUNNING).any()):
        state = kernel.step(state, counting, exact)
    assert all(c.tolist() == [1] for c in calls[2:])  # only row 1 after row 0 stopped
    assert torch.equal(state.x[0], frozen)
    assert state.n_iter[0] == 1 and state.n_iter[1] > 5


def test_max_iter_and_a_nonfinite_start_are_reported():
    x0 = torch.tensor([[-1.2, 1.0], [float("nan"), 0.0]], dtype=F64)
    state = minimize_newton(autograd_objective(rosenbrock), x0, max_iter=3)
    assert state.status.tolist() == [Status.MAX_ITER, Status.NONFINITE_START]
    assert state.n_iter.tolist() == [3, 0]


class Banana(BatchedDensity):
    """Object n: a Rosenbrock-shaped log-density ``-(a_n - x)^2 - b (y - x^2)^2`` with the mode
    at ``(a_n, a_n^2)``; y positive (a bounded parameter: the optimisers move in log y)."""

    names = ["x", "y"]
    lower = torch.tensor([-torch.inf, 0.0], dtype=F64)
    upper = torch.tensor([torch.inf, torch.inf], dtype=F64)

    def __init__(self, a):
        self.data = {"a": a}

    def object_log_prob(self, x, data):
        return -((data["a"] - x[0]) ** 2) - 10.0 * (x[1] - x[0] ** 2) ** 2


def test_fit_map_many_newton_reaches_each_objects_mode_and_laplace_reuses_its_hessian():
    a = torch.linspace(0.5, 3.0, 12, dtype=F64)
    density = Banana(a)
    start = torch.tensor([[0.1, 4.0]], dtype=F64).expand(12, 2)
    result = fit_map_many(density, start, method="newton")
    assert result.converged.all(), result.messages
    torch.testing.assert_close(result.x, torch.stack([a, a**2], -1), rtol=1e-8, atol=0)
    assert (result.extra["n_evals"] < 60).all()
    # the Hessian kept at the modes is the exact one (what laplace_many would compute)
    torch.testing.assert_close(result.extra["hessian"],
                               density.hessian_rows(result.x, torch.arange(12)), rtol=1e-10,
                               atol=1e-12)
    lap = laplace_many(density, result)
    fresh = laplace_many(density, result.x)
    torch.testing.assert_close(lap.covariance, fresh.covariance, rtol=1e-10, atol=0)
    # and the L-BFGS path agrees
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = fit_map_many(density, start, method="lbfgs")
    torch.testing.assert_close(other.x, result.x, rtol=1e-7, atol=0)


def test_fit_map_many_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        fit_map_many(Banana(torch.ones(2, dtype=F64)), torch.ones(2, 2, dtype=F64),
                     method="bfgs")


def test_difference_hessian_matches_the_exact_one_in_the_unconstrained_coordinates():
    from skyfit.inference.batched import ObjectRows
    from skyfit.inference.many_newton import newton_objective
    from skyfit.inference.transforms import UnconstrainedDensity

    density = Banana(torch.linspace(0.5, 3.0, 6, dtype=F64))
    transform = UnconstrainedDensity(ObjectRows(density, torch.arange(6)))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 2, generator=gen, dtype=F64)
    rows = torch.arange(6)
    f1, g1, H1 = newton_objective(density, transform, hessian="exact")(z, rows)
    f2, g2, H2 = newton_objective(density, transform, hessian="differences")(z, rows)
    torch.testing.assert_close(f2, f1, rtol=1e-14, atol=0)
    torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-12)
    # forward differences with h ~ sqrt(eps): relative error ~1e-7 of the Hessian's scale
    scale = H1.abs().amax((-2, -1), keepdim=True)
    assert ((H2 - H1).abs() / scale).max() < 1e-6
    with pytest.raises(ValueError, match="hessian"):
        newton_objective(density, transform, hessian="bfgs")


def test_compiled_gradients_give_the_eager_fit():
    # torch.compile of the vmapped gradient (a C++ compiler for CPU; CompiledGradient falls back
    # to eager with a warning where there is none): the same modes to rounding
    density = Banana(torch.linspace(0.5, 3.0, 12, dtype=F64))
    start = torch.tensor([[0.1, 4.0]], dtype=F64).expand(12, 2)
    eager = fit_map_many(density, start, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback warning where no compiler is found
        compiled = fit_map_many(density, start, compile=True)
    assert compiled.converged.all()
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-10, atol=0)


def test_hessian_refreshed_every_third_iteration_with_bfgs_updates_between():
    objective = autograd_objective(rosenbrock)
    asked = []

    def with_mask(x, rows, need=None):  # the start: every Hessian (need None)
        if need is not None:
            asked.append(need.clone())
        return objective(x, rows)

    gen = torch.Generator().manual_seed(3)
    x0 = 2 * torch.rand(16, 3, generator=gen, dtype=F64)
    state = minimize_newton(with_mask, x0, refresh=3)
    converged = (state.status == Status.CONVERGED_GTOL) | (state.status == Status.CONVERGED_FTOL)
    assert converged.all(), state.status
    torch.testing.assert_close(state.x, torch.ones_like(state.x), rtol=0, atol=1e-6)
    assert [bool(m.all()) for m in asked[:3]] == [False, False, True]
    # from iteration 4 of a row on, its Hessian is asked for at every iteration
    asked.clear()
    late = minimize_newton(with_mask, x0, refresh=3, refresh_each_after=4)
    assert [bool(m.all()) for m in asked[:6]] == [False, False, True, False, True, True]
    assert all(bool(m.all()) for m in asked[4:])
    torch.testing.assert_close(late.x, torch.ones_like(late.x), rtol=0, atol=1e-6)
    # the BFGS update meets the secant condition B+ s = y and stays symmetric
    B = torch.eye(3, dtype=F64).expand(2, 3, 3) * 2.0
    s = torch.randn(2, 3, generator=gen, dtype=F64)
    y = 3.0 * s + 0.1 * torch.randn(2, 3, generator=gen, dtype=F64)
    updated = kernel._bfgs_update(B, s, y)
    torch.testing.assert_close((updated @ s[..., None])[..., 0], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(updated, updated.transpose(-1, -2), rtol=0, atol=1e-14)


def test_fit_map_many_honours_max_iter_and_refuses_a_non_positive_one():
    # the Newton path capped a user's max_iter at 100 silently; now None picks the default
    from skyfit.inference import BatchedDensity
    from skyfit.inference.many import fit_map_many

    class Rosenbrocks(BatchedDensity):
        names = ["a", "b"]
        lower = torch.full((2,), -torch.inf, dtype=torch.float64)
        upper = torch.full((2,), torch.inf, dtype=torch.float64)

        def __init__(self, n):
            self.data = {"k": torch.ones(n, 1, dtype=torch.float64)}

        def object_log_prob(self, x, data):
            return -(data["k"][0] * (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)

    start = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)
    one = fit_map_many(Rosenbrocks(1), start, max_iter=1)
    assert not bool(one.converged[0]) and "max_iter" in one.messages[0]
    full = fit_map_many(Rosenbrocks(1), start)
    assert bool(full.converged[0])
    torch.testing.assert_close(full.x[0], torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="max_iter"):
        fit_map_many(Rosenbrocks(1), start, max_iter=0)


class Banana32(Banana):
    """:class:`Banana` with float32 bounds (its points are float32)."""

    lower = Banana.lower.float()
    upper = Banana.upper.float()


def test_bounds_and_data_of_different_dtypes_are_refused_with_both_named():
    # float32 bounds make the points float32; float64 data make log p float64: the solve mixed
    # the two and failed deep inside ("Expected b and A to have the same dtype")
    density = Banana32(torch.linspace(0.5, 3.0, 4, dtype=F64))
    start = torch.tensor([[0.1, 4.0]], dtype=F64).expand(4, 2)
    for call in (lambda: fit_map_many(density, start), lambda: laplace_many(density, start)):
        with pytest.raises(TypeError, match="float32.*float64"):
            call()
    # one dtype throughout works, float64 starts cast to the bounds' float32
    single = Banana32(torch.linspace(0.5, 3.0, 4, dtype=torch.float32))
    result = fit_map_many(single, start)
    assert result.x.dtype == torch.float32 and result.converged.all(), result.messages
    a = single.data["a"]  # float32 resolves a mode to ~sqrt(eps) ~ 3e-4
    torch.testing.assert_close(result.x, torch.stack([a, a**2], -1), rtol=1e-3, atol=0)


def test_gradients_and_hessians_in_chunks_equal_one_call(monkeypatch):
    # the points go through the vmapped derivatives in chunks (cache-sized); rows of different
    # objects across chunk boundaries must come back in order
    from skyfit.inference import many_newton

    density = Banana(torch.linspace(0.5, 3.0, 7, dtype=F64))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(23, 2, generator=gen, dtype=F64).abs() + 0.1
    rows = torch.randint(0, 7, (23,), generator=gen)
    whole = (many_newton.value_and_grad_rows(density, x, rows),
             many_newton.value_grad_hessian_rows(density, x, rows))
    monkeypatch.setattr(many_newton, "GRADIENT_CHUNK", 5)
    monkeypatch.setattr(many_newton, "HESSIAN_CHUNK", 4)
    chunked = (many_newton.value_and_grad_rows(density, x, rows),
               many_newton.value_grad_hessian_rows(density, x, rows))
    for one, parts in zip(whole, chunked):
        for a, b in zip(one, parts):
            torch.testing.assert_close(b, a, rtol=1e-14, atol=0)
    # and each row is its own object's log p
    a = density.data["a"][rows]
    expected = -(a - x[:, 0]) ** 2 - 10.0 * (x[:, 1] - x[:, 0] ** 2) ** 2
    torch.testing.assert_close(chunked[0][0], expected, rtol=1e-14, atol=0)


def test_grouped_difference_points_equal_the_same_points_one_by_one():
    # the eager difference Hessian evaluates each object's dim + 1 points as one group (data
    # gathered once per object); a gradient function given (e.g. compiled) takes them one by
    # one: same values, gradients and Hessians, for every mix of rows with and without one
    from skyfit.inference.batched import ObjectRows
    from skyfit.inference.many_newton import newton_objective, value_and_grad_rows
    from skyfit.inference.transforms import UnconstrainedDensity

    density = Banana(torch.linspace(0.5, 3.0, 5, dtype=F64))
    transform = UnconstrainedDensity(ObjectRows(density, torch.arange(5)))
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    rows = torch.tensor([3, 0, 4, 1, 2])
    grouped = newton_objective(density, transform)
    single = newton_objective(density, transform,
                              gradient=lambda x, r: value_and_grad_rows(density, x, r))
    for need in ([True, False, True, True, False], [False] * 5, [True] * 5):
        need = torch.tensor(need)
        for a, b in zip(grouped(z, rows, need), single(z, rows, need)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        # rows without a Hessian get zeros, the others a non-zero one
        H = grouped(z, rows, need)[2]
        assert (H[~need] == 0).all() and (H[need].flatten(1).abs().amax(1) > 0).all()


def test_in_threads_shards_rows_in_order_and_falls_back_for_an_uncopyable_density(monkeypatch):
    # rows split into one contiguous shard per torch thread (each on its own copy of the
    # density); a density that cannot be deep-copied (here: it holds a lock) is not split
    import threading

    from skyfit.inference import many_newton

    monkeypatch.setattr(many_newton, "MIN_ROWS_PER_THREAD", 3)
    density = Banana(torch.linspace(0.5, 3.0, 8, dtype=F64))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=F64)

    def work(copy_, rows):
        return copy_, rows, copy_.log_prob_rows(x[rows], rows)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split = many_newton.in_threads(work, density, 8)
        density.lock = threading.Lock()
        whole = many_newton.in_threads(work, density, 8)
    finally:
        torch.set_num_threads(threads)
    assert [r.tolist() for _, r, _ in split] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split[0][0] is density and split[1][0] is not density
    assert split[1][0].data["a"] is density.data["a"]  # the data are shared, not copied
    expected = density.log_prob_rows(x, torch.arange(8))
    torch.testing.assert_close(torch.cat([v for _, _, v in split]), expected, rtol=0, atol=0)
    assert len(whole) == 1 and whole[0][0] is density and whole[0][1].tolist() == list(range(8))


def test_in_threads_keeps_torchs_threads_for_large_unsplit_batches(monkeypatch):
    # an unsplit batch runs on one intra-op thread only when its data are small (a few hundred
    # light curves); large per-object data (images) and an uncopyable density keep torch's
    # threads; the count is restored after
    import threading

    from skyfit.inference import many_newton

    density = Banana(torch.linspace(0.5, 3.0, 8, dtype=F64))

    def work(copy_, rows):
        return torch.get_num_threads()

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = many_newton.in_threads(work, density, 8)  # 8 rows: below the split
        monkeypatch.setattr(many_newton, "SMALL_BATCH_ELEMENTS", 8)  # "images": 8 elements
        large = many_newton.in_threads(work, density, 8)
        monkeypatch.setattr(many_newton, "MIN_ROWS_PER_THREAD", 3)
        density.lock = threading.Lock()
        uncopyable = many_newton.in_threads(work, density, 8)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert (small, large, uncopyable, after) == ([1], [2], [2], 2)
