"""Survey scale: many ragged 3-band Villar light curves fitted in one batched call.

Row ``many_fits``: objects/s of ``fit_map_many`` + ``laplace_many`` vs a loop of scipy
L-BFGS-B on a numpy model with an analytic gradient, as an expert would write it, run on as many
processes as the batched fit has torch threads (the same cores on both sides); the one-process
loop's ratio is in the details, and iminuit's loop when it is installed. Full mode: 10,000
objects; ``--quick``: 300 (100 in the loop). The same night across Dask workers:
:mod:`bench_many_dask`; sampled: :mod:`bench_many_nuts`. Run it with
``python benchmarks/run.py [--quick] many_fits``.
"""

from __future__ import annotations

import contextlib
import os
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
    fit_map_many,
    laplace_many,
)
from skyfit.survey import ManyObjects

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


BENCHMARKS = [
    Benchmark("many_fits", "objects_per_s_ratio", ">=", 20, many_fits,
              "fit_map_many + laplace_many on ragged 3-band Villar light curves (20-40 points) "
              "vs a loop of scipy L-BFGS-B with an analytic-gradient numpy model, on as many "
              "processes as torch has threads (the same cores)"),
]
