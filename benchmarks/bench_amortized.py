"""Amortised posteriors of 1,000 light curves vs NUTS per object, to the same effective sample
size, with the network's calibration on held-out simulations printed next to the speed-up."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from harness import Benchmark

from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior, sample_nuts
from skyfit.amortized import calibration, fit, simulate

N_OBJECTS = 1000
ESS_TARGET = 1000  # independent draws per object from the network
VALID = {"t0": (-2.0, 2.0), "sigma": (1.5, 3.5), "peak_flux": (0.5, 2.0)}
TIME = torch.linspace(-8.0, 8.0, 15, dtype=torch.float64)
FLUX_ERR = 0.4


def _posterior(flux=None) -> Posterior:
    lc = GaussianLightCurve(t0=0.0, sigma=2.5, peak_flux=1.0)
    for name, valid in VALID.items():
        getattr(lc, name).valid = valid
    lc.to_dynamic()
    flux = torch.zeros_like(TIME) if flux is None else flux
    return Posterior(PhotometryLikelihood(lc, TIME, flux, torch.full_like(TIME, FLUX_ERR)))


def _nuts_seconds_per_object(objects, truths) -> tuple[float, float]:
    """Mean wall time per object for NUTS to reach ``ESS_TARGET`` (min bulk ESS), and that ESS."""
    times, ess = [], []
    for i, (x, truth) in enumerate(zip(objects, truths)):
        start = time.perf_counter()
        samples = sample_nuts(_posterior(x), init=truth, n_chains=4, n_warmup=500, n_draws=500,
                              seed=i, progress=False)
        elapsed = time.perf_counter() - start
        ess_min = float(np.min(samples.ess()))
        times.append(elapsed * ESS_TARGET / ess_min)
        ess.append(ess_min)
    return float(np.mean(times)), float(np.mean(ess))


def amortized_vs_nuts(quick: bool) -> tuple[float, dict]:
    """Both sides on one thread: the network's batch-128 steps and NUTS on 15 points are small
    operations, which a second thread slows down on a shared machine (the threads wait for each
    other); the previous thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _amortized_vs_nuts(quick)
    finally:
        torch.set_num_threads(threads)


def _amortized_vs_nuts(quick: bool) -> tuple[float, dict]:
    load_start = os.getloadavg()[0]  # the machine is shared: the load goes next to the times
    template = _posterior()
    # the network of tests/test_amortized_lightcurve.py (within 0.2 sd of NUTS per object);
    # quick mode trains on fewer simulations, with as many gradient steps per epoch as it can
    n_train = 20_000 if quick else 50_000
    start = time.perf_counter()
    post = fit(template, n_train=n_train, kind="nsf", transforms=3, epochs=6,
               batch_size=128, lr=2e-3, embedding="lightcurve", embedding_hidden=(64, 64),
               features=16, progress=False, seed=0)
    train_s = time.perf_counter() - start
    objects = simulate(template, N_OBJECTS, seed=777, progress=False)
    start = time.perf_counter()
    post.draw(objects.x, ESS_TARGET, seed=1)  # 1,000 objects x 1,000 draws, one batched call
    draw_s = time.perf_counter() - start
    n_nuts = 2 if quick else 5
    nuts_s, nuts_ess = _nuts_seconds_per_object(objects.x[:n_nuts], objects.theta[:n_nuts])
    nuts_total = nuts_s * N_OBJECTS
    cal = calibration(post, objects.theta, objects.x, n_draws=199, seed=2)
    details = {
        "n_train": n_train, "epochs": post.info["epochs"], "train_s": train_s,
        "draw_1000_objects_s": draw_s, "nuts_s_per_object_at_ess1000": nuts_s,
        "nuts_objects_timed": n_nuts, "nuts_mean_min_ess": nuts_ess,
        "speedup_excluding_training": nuts_total / draw_s,
        "coverage50": cal["coverage"][0.5], "coverage68": cal["coverage"][0.68],
        "coverage95": cal["coverage"][0.95],
        "sbc_min_pvalue": float(np.min(cal["sbc_pvalue"])),
        "threads": torch.get_num_threads(),
        "load_1min_start": round(load_start, 2), "load_1min_end": round(os.getloadavg()[0], 2),
    }
    sbc = ", ".join(f"{n}={p:.3f}" for n, p in zip(post.names, cal["sbc_pvalue"]))
    calibrated = (details["sbc_min_pvalue"] > 0.001 and all(
        abs(cal["coverage"][c] - c) < 0.05 for c in (0.5, 0.68, 0.95)))
    details["calibrated"] = calibrated
    print(f"  calibration on {cal['n_sims']} held-out simulations: coverage 50/68/95% = "
          f"{details['coverage50']:.3f}/{details['coverage68']:.3f}/{details['coverage95']:.3f}; "
          f"SBC p-values {sbc}: {'calibrated' if calibrated else 'NOT calibrated'}", flush=True)
    print(f"  speed-up {nuts_total / (train_s + draw_s):.0f}x with training ({train_s:.0f} s), "
          f"{nuts_total / draw_s:.0f}x without", flush=True)
    return nuts_total / (train_s + draw_s), details


BENCHMARKS = [
    Benchmark("amortized_vs_nuts", "speedup_including_training", ">=", 100.0, amortized_vs_nuts,
              "posteriors of 1,000 light curves: NPE (training included) vs NUTS per object "
              "at the same ESS"),
]
