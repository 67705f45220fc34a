"""Survey scale across workers: ``many_fits_dask``, ``fit_catalogue`` with its defaults (an
embedded LocalCluster of 2 worker threads; start, warm-up, chunks and Parquet timed) vs the
in-process batched call of :mod:`bench_many` on the same catalogue; 2 worker processes, a
resume on the finished folder and a run that kills a worker mid-chunk in the details. Full
mode: 10,000 objects; ``--quick``: 2,000. ``dask_row(n, chunk=None)`` runs it at other sizes.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings

import numpy as np
import torch
from bench_many import _batched_fit
from harness import Benchmark

from skyfit.examples.survey_night import simulate_survey_night, villar_posterior, villar_starts
from skyfit.survey import fit_catalogue


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


BENCHMARKS = [
    Benchmark("many_fits_dask", "time_ratio", "<=", 1.3, many_fits_dask,
              "fit_catalogue with its defaults (embedded LocalCluster of one worker thread per "
              "core, chunk size from the catalogue and workers; start and warm-up timed) vs "
              "the best in-process batched fit (both cores, warmed) of the same catalogue"),
]
