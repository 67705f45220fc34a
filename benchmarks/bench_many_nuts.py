"""Survey scale, sampled: ``many_nuts``, the ESS/s of ``sample_nuts_many`` (objects x 4 chains,
dense Laplace metric, warm-up included) vs a loop of single-object ``sample_nuts``, on the
ragged 3-band Villar survey night of :mod:`bench_many`, and what ``resample_unconverged``
passes add. Full mode: ``MANY_NUTS_SIZES`` (the issue's 1,000 objects, of which 2 also in the
loop) or ``SKYFIT_MANY_NUTS``; ``--quick``: 4 objects. ``nuts_row(n, n_loop, warmup, draws)``
runs the row at other sizes. Run it with ``python benchmarks/run.py [--quick] many_nuts``.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch
from harness import Benchmark

from skyfit.examples.survey_night import simulate_survey_night, villar_posterior, villar_starts
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
from skyfit.survey import ManyObjects


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
    Benchmark("many_nuts", "min_ess_per_s_ratio", ">=", 20, many_nuts,
              "fit_map_many + laplace_many + sample_nuts_many (objects x 4 chains, dense "
              "Laplace metric) vs a loop of fit_map + laplace + sample_nuts from the Laplace "
              "result; sum over objects of the smallest bulk ESS, per second, warm-up included"),
]
