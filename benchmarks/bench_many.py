"""Survey scale: many ragged 3-band Villar light curves fitted and sampled in batches.

Rows: ``many_fits`` (objects/s of ``fit_map_many`` + ``laplace_many`` vs a loop of scipy
L-BFGS-B on a numpy model with an analytic gradient, as an expert would write it, run on as many
processes as the batched fit has torch threads: the same cores on both sides; the one-process
loop's ratio is in the details; iminuit too when it is installed), ``many_fits_dask``
(``fit_catalogue`` with its defaults, an embedded LocalCluster of 2 worker threads, vs the
in-process batched call; 2 worker processes in the details) and
``many_nuts`` (ESS/s of ``sample_nuts_many`` vs a loop of
single-object ``sample_nuts``). Full mode: 10,000 objects (``many_nuts``: ``MANY_NUTS_SIZES``,
the issue's 1,000 objects of which 2 also in the loop, or ``SKYFIT_MANY_NUTS``); ``--quick``:
small sizes (``many_nuts`` quick: 4 objects).
``dask_row(n, chunk=None)`` and ``nuts_row(n, n_loop, warmup, draws)`` run a row at other sizes.

``python benchmarks/bench_many.py [--quick] [--rows many_fits ...]`` prints the same lines as
``run.py``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch
from harness import Benchmark
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from skyfit.examples.survey_night import (
    TRANSITION_WIDTH,
    simulate_survey_night,
    villar_posterior,
    villar_starts,
)
from skyfit.inference import (
    fit_map,
    fit_map_many,
    laplace,
    laplace_many,
    resample_unconverged,
    sample_nuts,
    sample_nuts_many,
)
from skyfit.inference.nuts_many import bulk_ess, split_rhat
from skyfit.survey import ManyObjects, fit_catalogue

LOWER = np.array([-np.inf, 0, 0, 0, -np.inf, 0, 0, 0], dtype=float)
# L-BFGS-B needs closed bounds: a positive parameter stays 1e-8 above 0
BOUNDS = [(None, None)] + [(1e-8, None)] * 3 + [(None, None)] + [(1e-8, None)] * 3


def villar_chi2_and_grad(p: np.ndarray, t: np.ndarray, band: np.ndarray, flux: np.ndarray,
                         err: np.ndarray) -> tuple[float, np.ndarray]:
    """``0.5 chi^2`` of one object's 3-band Villar model (``p`` in ``villar_posterior`` order)
    and its analytic gradient: the products of sigmoids and the decline exponential are summed
    in log space, as :func:`skyfit.lightcurves.functions.villar_light_curve` does."""
    t0, beta, gamma, tau_r, tau_f = p[0], p[4], p[5], p[6], p[7]
    A = p[1:4][band]
    w = TRANSITION_WIDTH
    dt = t - t0
    x = dt / tau_r
    r_c = expit(-x)  # 1 - r
    u = (dt - gamma) / w
    s_m, s_p = expit(-u), expit(u)
    plateau = (A + beta * dt) * np.exp(log_expit(x) + log_expit(-u))
    decline = (A + beta * gamma) * np.exp(log_expit(x) + log_expit(u) - (dt - gamma) / tau_f)
    resid = (plateau + decline - flux) / err
    weight = resid / err  # d(0.5 chi^2)/dF
    unit_p = np.exp(log_expit(x) + log_expit(-u))  # dP/dA
    unit_d = np.exp(log_expit(x) + log_expit(u) - (dt - gamma) / tau_f)  # dD/dA
    d_dt = (beta * unit_p + plateau * (r_c / tau_r - s_p / w)
            + decline * (r_c / tau_r + s_m / w - 1 / tau_f))
    grad = np.empty(8)
    grad[0] = -(weight * d_dt).sum()
    dA = weight * (unit_p + unit_d)
    grad[1:4] = np.bincount(band, dA, minlength=3)
    grad[4] = (weight * (dt * unit_p + gamma * unit_d)).sum()
    grad[5] = (weight * (plateau * s_p / w + beta * unit_d - decline * s_m / w
                         + decline / tau_f)).sum()
    grad[6] = (weight * (plateau + decline) * r_c * (-dt / tau_r**2)).sum()
    grad[7] = (weight * decline * (dt - gamma) / tau_f**2).sum()
    return 0.5 * float((resid**2).sum()), grad


# scipy's default tolerances (the fastest loop: the timed baseline) stop about 1e-3 relative
# short of the optimum on these fits; the agreement check reruns the loop to these tolerances
TIGHT = dict(gtol=1e-8, ftol=1e-14)


def scipy_loop(data: dict, starts: np.ndarray, **tolerances) -> tuple[np.ndarray, np.ndarray]:
    """One scipy L-BFGS-B fit per object on its real points; ``(x (N, 8), success (N,))``."""
    n = len(starts)
    x, ok = np.empty_like(starts), np.zeros(n, bool)
    for i in range(n):
        keep = data["mask"][i]
        args = tuple(data[k][i][keep] for k in ("time", "band", "flux", "flux_err"))
        start = np.maximum(starts[i], [b[0] or -np.inf for b in BOUNDS])
        # trial steps to extreme time scales overflow the decline term: L-BFGS-B backs off
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(villar_chi2_and_grad, start, args=args, jac=True, method="L-BFGS-B",
                           bounds=BOUNDS, options=dict(maxiter=15000, **tolerances))
        x[i], ok[i] = res.x, res.success
    return x, ok


def _scipy_chunk(arguments: tuple) -> tuple[np.ndarray, np.ndarray]:
    return scipy_loop(*arguments)


@contextlib.contextmanager
def one_thread_per_process():
    """Worker processes started inside get one BLAS / OpenMP thread each, as an expert sets for
    a process pool: with the libraries' default (a thread per core) in every process, the
    oversubscribed threads made the 2-process loop 20x slower than one process."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scipy_loop_parallel(data: dict, starts: np.ndarray, pool, workers: int,
                        chunk=_scipy_chunk) -> tuple[np.ndarray, np.ndarray]:
    """The loop as an expert runs a catalogue on several cores: contiguous chunks of objects
    to the ``workers`` processes of ``pool`` (a ``ProcessPoolExecutor``), results in order.
    ``chunk``: the loop over one chunk (scipy's, or ``_iminuit_chunk``)."""
    chunks = np.array_split(np.arange(len(starts)), 4 * workers)
    parts = list(pool.map(chunk, [({k: v[c] for k, v in data.items()}, starts[c])
                                  for c in chunks]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def iminuit_loop(data: dict, starts: np.ndarray):
    """The same fits with iminuit's MIGRAD and the analytic gradient (the value and gradient of
    a point computed once: MIGRAD asks for both at each point); None if not installed."""
    try:
        from iminuit import Minuit
    except ImportError:
        return None
    n = len(starts)
    x, ok = np.empty_like(starts), np.zeros(n, bool)
    lower = np.array([b[0] if b[0] is not None else -np.inf for b in BOUNDS])
    for i in range(n):
        keep = data["mask"][i]
        cached = _CachedChi2(tuple(data[k][i][keep] for k in ("time", "band", "flux",
                                                                "flux_err")))
        m = Minuit(cached.value, np.maximum(starts[i], lower), grad=cached.grad)
        m.errordef = Minuit.LIKELIHOOD  # the cost is 0.5 chi^2 = -log L
        m.limits = [(lo, None) for lo, _ in BOUNDS]
        with np.errstate(over="ignore", invalid="ignore"):
            m.migrad()
        x[i], ok[i] = np.asarray(m.values), m.valid
    return x, ok


def _iminuit_chunk(arguments: tuple) -> tuple[np.ndarray, np.ndarray]:
    return iminuit_loop(*arguments)


class _CachedChi2:
    """``villar_chi2_and_grad`` of one object's points, evaluated once per point."""

    def __init__(self, args: tuple):
        self.args, self.key, self.last = args, None, None

    def _at(self, p: np.ndarray):
        key = np.asarray(p, dtype=float).tobytes()
        if key != self.key:
            self.key, self.last = key, villar_chi2_and_grad(np.asarray(p, dtype=float),
                                                            *self.args)
        return self.last

    def value(self, p: np.ndarray) -> float:
        return self._at(p)[0]

    def grad(self, p: np.ndarray) -> np.ndarray:
        return self._at(p)[1]


def gradient_check(night) -> float:
    """Largest relative difference of the analytic gradient from autograd on 5 objects."""
    worst = 0.0
    for i in range(5):
        keep = night.data["mask"][i]
        args = tuple(night.data[k][i][keep] for k in ("time", "band", "flux", "flux_err"))
        _, g = villar_chi2_and_grad(night.truth[i], *args)
        post = villar_posterior(**{k: v[i] for k, v in night.data.items()})
        x = torch.as_tensor(night.truth[i]).requires_grad_(True)
        (ref,) = torch.autograd.grad(-post.log_likelihood(x), x)
        worst = max(worst, float(np.max(np.abs(g - ref.numpy()) / (np.abs(ref.numpy()) + 1e-8))))
    return worst


def flat_villar_posterior(**data) -> object:
    """The survey's Villar posterior without its priors: the maximum-likelihood fit the scipy
    loop's chi^2 objective is, so that both sides fit the same function."""
    return villar_posterior(**data, priors=False)


def _batched_fit(data: dict, starts: np.ndarray, factory=flat_villar_posterior):
    many = ManyObjects(factory, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return laplace_many(many, fit_map_many(many, torch.as_tensor(starts)))


def _log_like(data, x):
    many = ManyObjects(flat_villar_posterior, data)
    return many.log_prob(torch.as_tensor(x)).numpy()


def many_fits(quick: bool) -> tuple[float, dict]:
    n, n_loop = (300, 100) if quick else (10_000, 1_000)
    night = simulate_survey_night(n, seed=0)
    starts = villar_starts(night.data)
    details = dict(objects=n, loop_objects=n_loop, gradient_check=f"{gradient_check(night):.1e}",
                   threads=torch.get_num_threads(), load_1min=round(os.getloadavg()[0], 1))
    warm = {k: v[:5] for k, v in night.data.items()}  # first calls import and allocate
    _batched_fit(warm, starts[:5])
    scipy_loop(warm, starts[:5])
    t = time.perf_counter()
    result = _batched_fit(night.data, starts)
    batched_s = time.perf_counter() - t
    loop_data = {k: v[:n_loop] for k, v in night.data.items()}
    t = time.perf_counter()
    _, ok_fast = scipy_loop(loop_data, starts[:n_loop])
    loop_s = time.perf_counter() - t
    # the same loop on as many processes as the batched fit has torch threads (cores), the
    # pool started and warmed before the clock like the batched fit's first call
    cores = torch.get_num_threads()
    with one_thread_per_process(), ProcessPoolExecutor(cores, mp_context=get_context("spawn")
                                                       ) as pool:
        scipy_loop_parallel(warm, starts[:5], pool, cores)
        t = time.perf_counter()
        _, ok_parallel = scipy_loop_parallel(loop_data, starts[:n_loop], pool, cores)
        parallel_s = time.perf_counter() - t
        minuit = _iminuit_parallel(loop_data, starts[:n_loop], pool, cores) if not quick else None
    assert np.array_equal(ok_parallel, ok_fast), "the parallel loop must fit what the loop fits"
    n_check = min(n_loop, 50)
    loop_data = {k: v[:n_check] for k, v in night.data.items()}
    x_loop, ok_loop = scipy_loop(loop_data, starts[:n_check], **TIGHT)
    x_many, ok_many = result.x.numpy()[:n_check], result.converged.numpy()[:n_check]
    both = ok_loop & ok_many
    rel = np.abs(x_many - x_loop) / np.maximum(np.abs(x_loop), 1e-3)
    agree = both & (rel.max(1) < 1e-4)
    lp_many, lp_loop = _log_like(loop_data, x_many), _log_like(loop_data, x_loop)
    differ = both & ~agree
    details.update(
        batched_objects_per_s=round(n / batched_s, 1), loop_objects_per_s=round(n_loop / loop_s, 1),
        loop_processes=cores, parallel_loop_objects_per_s=round(n_loop / parallel_s, 1),
        ratio_vs_one_process_loop=round((n / batched_s) / (n_loop / loop_s), 2),
        success_batched=f"{result.converged.float().mean().item():.3f}",
        success_scipy=f"{ok_fast.mean():.3f}", success_scipy_tight=f"{ok_loop.mean():.3f}",
        agree_1e4=f"{agree.sum()}/{both.sum()}",
        differ_batched_higher=int((differ & (lp_many > lp_loop + 1e-6)).sum()),
        differ_scipy_higher=int((differ & (lp_loop > lp_many + 1e-6)).sum()))
    details.update(_iminuit_details(minuit, n, batched_s, x_loop, ok_loop) if not quick
                   else dict(iminuit="not run (quick)"))
    return (n / batched_s) / (n_loop / parallel_s), details


def _iminuit_parallel(data: dict, starts: np.ndarray, pool, cores: int):
    """iminuit's loop on the pool as scipy's (warmed first): ``(x, ok, seconds)``, or None if
    iminuit is not installed."""
    if iminuit_loop({k: v[:1] for k, v in data.items()}, starts[:1]) is None:
        return None
    scipy_loop_parallel({k: v[:5] for k, v in data.items()}, starts[:5], pool, cores,
                        _iminuit_chunk)
    t = time.perf_counter()
    x, ok = scipy_loop_parallel(data, starts, pool, cores, _iminuit_chunk)
    return x, ok, time.perf_counter() - t


def _iminuit_details(minuit, n: int, batched_s: float, x_tight: np.ndarray,
                     ok_tight: np.ndarray) -> dict:
    """The iminuit loop's rate, success, and agreement with the tight scipy fits."""
    if minuit is None:
        return dict(iminuit="not installed (pip install iminuit, the bench extra)")
    x, ok, seconds = minuit
    m = len(x_tight)
    both = ok[:m] & ok_tight
    rel = np.abs(x[:m] - x_tight) / np.maximum(np.abs(x_tight), 1e-3)
    return dict(iminuit_parallel_objects_per_s=round(len(x) / seconds, 1),
                ratio_vs_parallel_iminuit=round((n / batched_s) / (len(x) / seconds), 2),
                success_iminuit=f"{ok.mean():.3f}",
                iminuit_agree_tight_1e4=f"{int((both & (rel.max(1) < 1e-4)).sum())}/{both.sum()}",
                iminuit_median_rel_diff_tight=f"{np.median(rel.max(1)[both]):.1e}")


def _kill_a_worker_when_busy(client, done: threading.Event, delay_s: float) -> dict:
    """Start a thread that waits until both workers hold a chunk, then ``delay_s`` more, and
    kills the process of one of them mid-chunk (its nanny starts a new one)."""
    killed = {}

    def kill():
        while not done.is_set():
            busy = [w for w, tasks in client.processing().items() if tasks]
            if len(busy) >= 2:
                time.sleep(delay_s)
                victim = busy[0]
                killed["worker"] = victim
                try:  # the worker dies before it can answer: the call may raise
                    client.run(os._exit, 1, workers=[victim])
                except Exception as exc:  # noqa: BLE001 - the expected lost connection
                    killed["answer"] = type(exc).__name__
                return
            time.sleep(0.1)

    threading.Thread(target=kill, daemon=True).start()
    return killed


def many_fits_dask(quick: bool) -> tuple[float, dict]:
    return dask_row(2_000) if quick else dask_row(10_000)


def dask_row(n: int, chunk: int | None = None) -> tuple[float, dict]:
    """The ``many_fits_dask`` row at ``n`` objects: ``fit_catalogue`` as a user calls it (its
    defaults: ``chunk_size`` from the catalogue and the workers, the embedded cluster of worker
    threads started, warmed and closed inside the timed call) over the best in-process call
    (``fit_map_many`` + ``laplace_many`` on all torch threads, its first calls paid before the
    clock). Details: a rerun on the finished folder (resume: fits nothing), the same catalogue
    on a cluster of 2 worker processes (start and warm-up timed apart), and a run on it that
    kills one worker mid-chunk (chunks of n / 8 there, so that one is lost)."""
    from distributed import Client

    from skyfit.survey.catalogue import _local_cluster, _warm_up, default_chunk_size

    night = simulate_survey_night(n, seed=1)
    starts = villar_starts(night.data)
    _batched_fit({k: v[:20] for k, v in night.data.items()}, starts[:20], villar_posterior)
    t = time.perf_counter()
    inline = _batched_fit(night.data, starts, villar_posterior).to_pandas()
    inline_s = time.perf_counter() - t
    chunk_used = chunk or default_chunk_size(n, torch.get_num_threads())
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = dict(starts=starts, progress=False)
        t = time.perf_counter()
        table = fit_catalogue(villar_posterior, night.data, f"{folder}/run", chunk_size=chunk,
                              **options)
        dask_s = time.perf_counter() - t
        t = time.perf_counter()
        again = fit_catalogue(villar_posterior, night.data, f"{folder}/run", **options)
        resume_s = time.perf_counter() - t
        t = time.perf_counter()
        with _local_cluster(2, processes=True) as cluster, Client(cluster) as client:
            client.run(_warm_up)
            start_s = time.perf_counter() - t
            t = time.perf_counter()
            fit_catalogue(villar_posterior, night.data, f"{folder}/processes", client=client,
                          chunk_size=chunk, torch_threads=1, **options)
            processes_s = time.perf_counter() - t
            done = threading.Event()
            killed = _kill_a_worker_when_busy(client, done, 0.2 * processes_s / 4)
            survived = fit_catalogue(villar_posterior, night.data, f"{folder}/kill",
                                     client=client, chunk_size=max(1, n // 8),
                                     torch_threads=1, **options)
            done.set()
    numeric = list(inline.select_dtypes(include=["number"]).columns)
    ours, theirs = table[numeric].to_numpy(float), inline[numeric].to_numpy(float)
    finite = np.isfinite(theirs)  # NaN where an object has no Laplace uncertainty, both sides
    worst = np.max(np.abs(ours - theirs)[finite] / np.maximum(np.abs(theirs[finite]), 1e-300))
    ratio = dask_s / inline_s
    return ratio, dict(
        objects=n, chunk_size=chunk_used, workers=torch.get_num_threads(),
        in_process_s=round(inline_s, 2), dask_s=round(dask_s, 2), rows=len(table),
        max_rel_diff_vs_in_process=f"{worst:.1e}",
        same_nonfinite=bool(np.array_equal(np.isfinite(ours), finite)),
        same_converged=bool((table["converged"].to_numpy() == inline["converged"].to_numpy())
                            .all()),
        resume_rerun_s=round(resume_s, 2), resume_same_table=bool(again.equals(table)),
        processes_start_s=round(start_s, 2), processes_fit_s=round(processes_s, 2),
        processes_ratio=round((start_s + processes_s) / inline_s, 3),
        kill_run=f"killed {killed.get('worker', 'none')} ({killed.get('answer', 'no answer')})",
        kill_run_chunk_size=max(1, n // 8),
        kill_run_every_object_once=list(survived.index) == list(range(n)),
        kill_run_converged_same=bool((survived["converged"].to_numpy()
                                      == table["converged"].to_numpy()).all()),
        load_1min=round(os.getloadavg()[0], 1),
        note="dask_s: the whole fit_catalogue call with its defaults (threads cluster start, "
             "warm-up, chunks, Parquet, concat); in-process warmed, both cores")


def _single_object_nuts(data: dict, start: np.ndarray, **options):
    """An expert's single-object run: MAP, Laplace, NUTS from the Laplace approximation (its
    covariance the first metric); the draws ``(chains, draws, dim)``, the divergences and the
    leapfrog gradients."""
    post = villar_posterior(**data)
    mode = fit_map(post, torch.as_tensor(start))
    samples = sample_nuts(post, init=laplace(post, mode), progress=False, compile=False,
                          **options)
    return (samples.draws, int(np.sum(samples.sample_stats["diverging"])),
            int(samples.info["n_gradient_evals"]))


# the sizes of a full many_nuts run: objects, loop objects, warm-up, draws (the recorded row's:
# the 1,000 objects x 4 chains); the environment variable
# SKYFIT_MANY_NUTS="objects,loop_objects,warmup,draws" chooses others, e.g. "256,2,300,300"
MANY_NUTS_SIZES = (1000, 2, 300, 300)


def many_nuts(quick: bool) -> tuple[float, dict]:
    # compiled chains: sample_nuts' compile=None rule assumes 16 gradients per iteration, but out
    # of step the run makes about as many calls as its busiest chain needs leapfrog steps (95
    # per iteration on 64 survey objects), and chose eager calls 5x dearer than compiled ones
    if quick:
        return nuts_row(4, 1, 100, 100, compile=True)
    chosen = os.environ.get("SKYFIT_MANY_NUTS")
    sizes = tuple(int(v) for v in chosen.split(",")) if chosen else MANY_NUTS_SIZES
    return nuts_row(*sizes, compile=True)


def nuts_row(n: int, n_loop: int, warmup: int, draws: int,
             compile: bool | None = None) -> tuple[float, dict]:  # noqa: A002
    """The ``many_nuts`` row: ``n`` objects batched, the first ``n_loop`` of them also in the
    loop. Both sides start the expert way (MAP + Laplace metric, dense), 4 chains each, the
    MAP, Laplace and warm-up inside the timings (the batched side's compilation too), ESS by
    one estimator (bulk_ess), R-hat and divergences checked on both sides, and on the loop's
    objects side by side (the same posteriors: a hard object is hard for both). The loop's
    single-object runs are eager (``compile=False``: what ``sample_nuts``' ``compile=None``
    rule chooses for them, each predicted under the time a compilation takes)."""
    options = dict(n_chains=4, n_warmup=warmup, n_draws=draws, mass="dense")
    night = simulate_survey_night(n, seed=2)
    starts = villar_starts(night.data)
    many = ManyObjects(villar_posterior, night.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, cpu = time.perf_counter(), time.process_time()
        fitted = laplace_many(many, fit_map_many(many, torch.as_tensor(starts)))
        fit_s = time.perf_counter() - t
        result = sample_nuts_many(many, fitted, compile=compile, **options)
        batched_s, batched_cpu = time.perf_counter() - t, time.process_time() - cpu
        load_mid = os.getloadavg()[0]
        t, cpu = time.perf_counter(), time.process_time()
        loop = [_single_object_nuts({k: v[i] for k, v in night.data.items()}, starts[i],
                                    **options) for i in range(n_loop)]
        loop_s, loop_cpu = time.perf_counter() - t, time.process_time() - cpu
    rerun = _rerun_unconverged(many, result, compile)
    loop_ess = np.array([bulk_ess(d).min() for d, _, _ in loop])
    loop_rhat = np.array([split_rhat(d).max() for d, _, _ in loop])
    batched_rate = float(result.ess.min(1).sum()) / batched_s
    loop_rate = float(loop_ess.sum()) / loop_s
    evals = result.extra["n_gradient_evals"].numpy()
    calls = int(result.extra["n_batched_steps"])
    compile_s = float(result.extra["compile_s"])
    rhat = result.rhat.max(1)
    divergent = result.extra["n_divergent"].numpy()
    return batched_rate / loop_rate, dict(
        objects=n, loop_objects=n_loop, chains=4, warmup=warmup, draws=draws, mass="dense",
        batched_s=round(batched_s, 1), batched_cpu_s=round(batched_cpu, 1),
        fit_s=round(fit_s, 1), compile_s=round(compile_s, 1), loop_s=round(loop_s, 1),
        loop_cpu_s=round(loop_cpu, 1),
        batched_min_ess_per_s=round(batched_rate, 2), loop_min_ess_per_s=round(loop_rate, 2),
        converged_batched=f"{int((rhat < 1.01).sum())}/{n}",
        converged_loop=f"{int((loop_rhat < 1.01).sum())}/{n_loop}",
        max_rhat_batched=round(float(rhat.max()), 3),
        max_rhat_loop=round(float(loop_rhat.max()), 3),
        divergent=int(divergent.sum()), divergent_loop=int(sum(d for _, d, _ in loop)),
        compile="compiled chains" if compile_s > 0 else "eager",
        # the loop's objects in the batched run: the same posteriors side by side
        rhat_loop_objects_batched=[round(float(r), 3) for r in rhat[:n_loop]],
        rhat_loop_objects_loop=[round(float(r), 3) for r in loop_rhat],
        divergent_loop_objects_batched=int(divergent[:n_loop].sum()),
        gradients_loop_objects_batched=int(evals[:n_loop].sum()),
        gradients_loop_objects_loop=int(sum(g for _, _, g in loop)),
        batched_steps=calls, ms_per_batched_step=round(
            1e3 * (batched_s - fit_s - compile_s) / calls, 2), schedule="chains out of step",
        start_metric_replaced=int(result.extra["start_metric_replaced"].sum()),
        gradients_per_object_median=int(np.median(evals)), gradients_per_object_max=int(
            evals.max()), threads=torch.get_num_threads(),
        load_1min=f"{load_mid:.1f} after batched, {os.getloadavg()[0]:.1f} at end", **rerun)


# resample_unconverged passes after the first run: (thin, seed) each, on what is still not
# converged; each pass samples fewer, harder objects for longer, so the last runs longest
# (what they add: RESULTS.md, many_nuts)
RERUN_PASSES = ((4, 1), (4, 2), (8, 3))


def _rerun_unconverged(many: ManyObjects, result, compile: bool | None) -> dict:  # noqa: A002
    """What sampling the unconverged objects again adds, pass by pass
    (:data:`RERUN_PASSES`): the objects each pass samples, its time, and the converged
    objects and summed min ESS after it. Not in the row's ratio, which compares first runs on
    both sides."""
    passes, again = [], result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for thin, seed in RERUN_PASSES:
            left = int((~again.converged).sum())
            if left == 0:
                break
            t = time.perf_counter()
            again = resample_unconverged(many, again, thin=thin, seed=seed, compile=compile)
            passes.append(f"{left} objects, thin {thin}: {time.perf_counter() - t:.0f} s, "
                          f"{int(again.converged.sum())}/{len(again)} converged, max R-hat "
                          f"{float(again.rhat.max(1).max()):.3f}")
    return dict(
        rerun_objects=int((~result.converged).sum()), rerun_passes=passes,
        converged_after_reruns=f"{int(again.converged.sum())}/{len(again)}",
        rerun_max_rhat=round(float(again.rhat.max(1).max()), 3),
        min_ess_sum_after_reruns=round(float(again.ess.min(1).sum())))


BENCHMARKS = [
    Benchmark("many_fits", "objects_per_s_ratio", ">=", 20, many_fits,
              "fit_map_many + laplace_many on ragged 3-band Villar light curves (20-40 points) "
              "vs a loop of scipy L-BFGS-B with an analytic-gradient numpy model, on as many "
              "processes as torch has threads (the same cores)"),
    Benchmark("many_fits_dask", "time_ratio", "<=", 1.3, many_fits_dask,
              "fit_catalogue with its defaults (embedded LocalCluster of one worker thread per "
              "core, chunk size from the catalogue and workers; start and warm-up timed) vs "
              "the best in-process batched fit (both cores, warmed) of the same catalogue"),
    Benchmark("many_nuts", "min_ess_per_s_ratio", ">=", 20, many_nuts,
              "fit_map_many + laplace_many + sample_nuts_many (objects x 4 chains, dense "
              "Laplace metric) vs a loop of fit_map + laplace + sample_nuts from the Laplace "
              "result; sum over objects of the smallest bulk ESS, per second, warm-up included"),
]

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", nargs="*", default=[b.name for b in BENCHMARKS])
    args = parser.parse_args()
    for b in BENCHMARKS:
        if b.name in args.rows:
            value, details = b.fn(args.quick)
            print(f"BENCH {b.name} {b.metric}={value:.3g} target={b.op}{b.target:g} "
                  f"{b.status(value)} {details}", flush=True)
