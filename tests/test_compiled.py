"""skyfit.compile: the torch.compile'd log-density equals the eager one (values and gradients,
points and batches), compiles once per shape, and falls back to eager with a warning where no
C++ compiler exists; the samplers take it (compile=True/None/False)."""

import math

import pytest
import torch

import skyfit
from skyfit.errors import CompileFallbackWarning
from skyfit.inference import FunctionDensity, compiled


def _light_curve_posterior():
    # a tiny Posterior (3 parameters, 13 points) through the caskade graph: quick to compile
    lc = skyfit.GaussianLightCurve(t0=0.5, sigma=2.0, peak_flux=3.0)
    t = torch.linspace(-6, 6, 13, dtype=torch.float64)
    flux = lc.flux(t).detach() + 0.05 * torch.randn(13, generator=torch.Generator().manual_seed(1),
                                                     dtype=torch.float64)
    lc.to_dynamic()
    prior = torch.distributions.Normal(torch.tensor(3.0, dtype=torch.float64), 0.5)
    return skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, torch.full((13,), 0.1)),
                            priors={"peak_flux": prior})


def _without_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)


def _points(post):
    x = post.initial() * torch.tensor([1.1, 0.95, 1.05], dtype=torch.float64)
    batch = x * (1 + 0.05 * torch.randn(3, 3, generator=torch.Generator().manual_seed(2),
                                        dtype=torch.float64))
    return x, batch


@pytest.mark.slow
def test_compiled_equals_eager_and_compiles_once_per_shape():
    counters = pytest.importorskip("torch._dynamo.utils").counters
    torch._dynamo.reset()
    post = _light_curve_posterior()
    fast = skyfit.compile(post)
    assert fast.info["fallback"] is None, "this test needs a C++ compiler"
    x, batch = _points(post)
    outside = batch.clone()
    outside[1, 1] = -1.0  # sigma < 0: -inf, gradient zero
    for point in (x, batch, outside):
        value, grad = fast.value_and_grad(point)
        want, want_grad = post.value_and_grad(point)
        torch.testing.assert_close(value, want, rtol=1e-10, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-10)
    assert fast(outside)[1].item() == -math.inf
    # value and gradient: shapes (1, 3) and (4, 3) (a batch of 3 is padded to 4); the
    # value-only call compiles its own (no-grad) graph
    assert fast.info["n_compiles"] == 3 and fast.info["compile_s"] > 0
    graphs = counters["stats"]["unique_graphs"]
    four = torch.cat([batch, x[None]])
    for _ in range(3):
        fast.value_and_grad(x)
        fast.value_and_grad(batch)
        torch.testing.assert_close(fast.value_and_grad(four)[1], post.value_and_grad(four)[1],
                                   rtol=1e-10, atol=1e-10)
        fast(outside)
    assert counters["stats"]["unique_graphs"] == graphs
    assert fast.info["n_compiles"] == 3
    torch._dynamo.reset()


def test_no_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    _without_compiler(monkeypatch)
    post = _light_curve_posterior()
    with pytest.warns(CompileFallbackWarning, match="no C..\\+\\+ compiler|C\\+\\+ compiler"):
        fast = skyfit.compile(post)
    assert "C++ compiler" in fast.info["fallback"] and fast.info["n_compiles"] == 0
    x, batch = _points(post)
    for point in (x, batch):
        value, grad = fast.value_and_grad(point)
        want, want_grad = post.value_and_grad(point)
        assert torch.equal(value, want) and torch.equal(grad, want_grad)
    # the density's names, bounds and errors
    assert fast.names == post.names and fast.eager_density is post
    assert torch.equal(fast.lower, post.lower) and torch.equal(fast.initial(), post.initial())
    with pytest.raises(skyfit.errors.ParameterVectorError):
        fast(torch.zeros(2, dtype=torch.float64))
    assert skyfit.compile(fast) is fast


def test_samplers_compile_when_asked_or_when_the_run_is_long(monkeypatch):
    _without_compiler(monkeypatch)  # the plumbing, without paying for a compile here
    gauss = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), ["a", "b"])
    # compile=None: a toy's run is far too short to pay for a compile
    quick = skyfit.sample_nuts(gauss, init=torch.zeros(2), n_warmup=20, n_draws=10,
                               progress=False)
    assert quick.info["compile_fallback"] is None and quick.info["compile_s"] == 0.0
    with pytest.warns(CompileFallbackWarning):
        asked = skyfit.sample_nuts(gauss, init=torch.zeros(2), n_warmup=20, n_draws=10,
                                   progress=False, compile=True)
    assert not asked.info["compiled"] and "C++" in asked.info["compile_fallback"]
    assert abs(asked.draws - quick.draws).max() < 1e-12  # same kernel, same numbers
    monkeypatch.setattr(compiled, "WORTH_COMPILING_S", 0.0)  # every run "long"
    with pytest.warns(CompileFallbackWarning):
        long_run = skyfit.sample_hmc(gauss, init=torch.zeros(2), n_warmup=20, n_draws=10,
                                     progress=False)
    assert "C++" in long_run.info["compile_fallback"]
    assert skyfit.sample_hmc(gauss, init=torch.zeros(2), n_warmup=20, n_draws=10,
                             progress=False, compile=False).info["compile_fallback"] is None


def test_a_static_value_set_after_compiling_is_read_and_guards_stay_cheap():
    # the guards keep only tensor checks: a new static Param value (a tensor) is still read on
    # every call; a traced backend needs no C++ compiler
    torch._dynamo.reset()
    lc = skyfit.GaussianLightCurve(t0=0.5, sigma=2.0, peak_flux=3.0)
    t = torch.linspace(-6, 6, 13, dtype=torch.float64)
    like = skyfit.PhotometryLikelihood(lc, t, lc.flux(t).detach(), torch.full((13,), 0.1))
    lc.t0.to_dynamic()
    lc.peak_flux.to_dynamic()
    post = skyfit.Posterior(like)
    fast = skyfit.compile(post, backend="eager")
    x = torch.tensor([0.4, 2.9], dtype=torch.float64)
    before = fast.value_and_grad(x)
    torch.testing.assert_close(before, post.value_and_grad(x), rtol=1e-12, atol=0)
    lc.sigma.value = torch.tensor(2.5, dtype=torch.float64)
    after = fast.value_and_grad(x)
    torch.testing.assert_close(after, post.value_and_grad(x), rtol=1e-12, atol=0)
    assert after[0].item() < before[0].item()  # the data were made with sigma = 2
    assert fast.info["n_compiles"] == 1
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")  # 30 VI steps: unconverged
def test_fit_map_and_fit_vi_take_compile(monkeypatch):
    _without_compiler(monkeypatch)  # the plumbing: compile=True warns and evaluates eagerly
    post = _light_curve_posterior()
    eager = skyfit.fit_map(post)
    with pytest.warns(CompileFallbackWarning):
        asked = skyfit.fit_map(post, compile=True)
    assert isinstance(asked.density, compiled.CompiledDensity)
    assert torch.equal(asked.x, eager.x) and asked.converged
    vi = skyfit.fit_vi(post, n_steps=30, init=eager, progress=False)
    with pytest.warns(CompileFallbackWarning):
        vi_asked = skyfit.fit_vi(post, n_steps=30, init=eager, progress=False, compile=True)
    assert isinstance(vi_asked.density.density, compiled.CompiledDensity)
    torch.testing.assert_close(vi_asked.mean, vi.mean, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_fit_map_compiled_reaches_the_eager_optimum():
    torch._dynamo.reset()
    post = _light_curve_posterior()
    eager = skyfit.fit_map(post)
    fast = skyfit.fit_map(post, compile=True)
    assert fast.density.info["fallback"] is None and fast.density.info["n_compiles"] >= 1
    torch.testing.assert_close(fast.x, eager.x, rtol=1e-7, atol=1e-9)
    assert fast.converged
    torch._dynamo.reset()


def test_the_compile_probe_times_the_second_call_on_this_threads_cpu_clock(monkeypatch):
    # the probe reads the thread's CPU clock around the second call only (the first pays
    # one-off costs); a fake clock makes the contract exact, with no timing in the test
    ticks = iter([10.0, 10.25])
    monkeypatch.setattr(compiled.time, "thread_time", lambda: next(ticks))
    monkeypatch.setattr(compiled.time, "perf_counter", lambda: pytest.fail("the wall clock"))
    calls = []
    assert compiled.eager_seconds(lambda: calls.append(1)) == 0.25 and calls == [1, 1]
    # a CPU device keeps the CPU clock
    ticks = iter([3.0, 3.5])
    monkeypatch.setattr(compiled.time, "thread_time", lambda: next(ticks))
    assert compiled.eager_seconds(lambda: None, torch.device("cpu")) == 0.5
    assert compiled.worth_compiling(compiled.WORTH_COMPILING_S / 10, 11)
    assert not compiled.worth_compiling(compiled.WORTH_COMPILING_S / 10, 9)


def test_on_a_cuda_device_the_probe_waits_for_the_kernels_and_reads_the_wall_clock(monkeypatch):
    # a CUDA call returns once its kernels are queued: the thread's CPU clock would time their
    # launch only. The probe synchronises before and after the timed (second) call and reads
    # the wall clock; fakes make the order of events exact without a GPU
    events = []
    ticks = iter([5.0, 7.0])
    monkeypatch.setattr(compiled.torch.cuda, "synchronize",
                        lambda device=None: events.append(("sync", str(device))))
    monkeypatch.setattr(compiled.time, "perf_counter",
                        lambda: events.append("clock") or next(ticks))
    monkeypatch.setattr(compiled.time, "thread_time", lambda: pytest.fail("the CPU clock"))
    seconds = compiled.eager_seconds(lambda: events.append("call"), "cuda:0")
    assert seconds == 2.0
    assert events == ["call", ("sync", "cuda:0"), "clock", "call", ("sync", "cuda:0"), "clock"]
