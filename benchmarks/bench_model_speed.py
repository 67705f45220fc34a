"""Speed of one value+gradient of the supernova posterior (``problems.supernova``, 12 parameters,
five 50x50 epochs, supersample 3): against the model written naively in plain torch, compiled
against eager, against a FLOP-count floor, and the memory of a 64-chain batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import harness
import problems
import torch
from harness import Benchmark, best_times, median_of_rounds, spread

import skyfit

HERE = Path(__file__).resolve().parent


def _point():
    post, data = problems.supernova()
    x = torch.tensor([data.truth[n] for n in post.names], dtype=torch.float64)
    return post, data, x


def _value_and_grad(fn):
    def run(x):
        x = x.detach().requires_grad_(True)
        value = fn(x)
        (grad,) = torch.autograd.grad(value, x)
        return value, grad

    return run


def _timed_rounds(fns: dict, x, quick: bool, metric):
    repeat, number = (3, 3) if quick else (5, 10)

    def measure(_):
        return best_times({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeat, number)

    return median_of_rounds(measure, 2 if quick else harness.ROUNDS, metric)


def overhead(quick: bool):
    post, data, x = _point()
    naive = problems.naive_torch_supernova(data)
    # Ciotti & Bertin's b(n) in the naive model: equal to ~1e-8 relative
    if abs(naive(x).item() / post.log_likelihood(x).item() - 1) > 1e-6:
        raise RuntimeError("the naive torch model disagrees with skyfit's")
    fns = {"skyfit": _value_and_grad(post.log_likelihood), "naive": _value_and_grad(naive),
           "skyfit_value": post.log_likelihood, "naive_value": naive}
    ratio = lambda r: r["skyfit"] / r["naive"]  # noqa: E731
    value, t, rounds = _timed_rounds(fns, x, quick, ratio)
    return value, dict(spread=spread(rounds, ratio), skyfit_ms=round(1e3 * t["skyfit"], 3),
                       naive_ms=round(1e3 * t["naive"], 3),
                       value_only_ratio=round(t["skyfit_value"] / t["naive_value"], 3),
                       threads=torch.get_num_threads(), metric="value_and_grad time ratio")


def compiled_vs_eager(quick: bool):
    post, _, x = _point()
    t = time.perf_counter()
    fast = skyfit.compile(post)  # a point's value and gradient: one compiled shape
    v, g = fast.value_and_grad(x)
    compile_s = time.perf_counter() - t
    if fast.info["fallback"] is not None:
        raise RuntimeError(f"torch.compile is not available: {fast.info['fallback']}")
    v0, g0 = post.value_and_grad(x)
    if not (torch.allclose(v, v0, rtol=1e-10) and torch.allclose(g, g0, rtol=1e-6, atol=1e-8)):
        raise RuntimeError("compiled and eager value+gradient differ")
    ratio = lambda r: r["eager"] / r["compiled"]  # noqa: E731
    fns = {"eager": post.value_and_grad, "compiled": fast.value_and_grad}
    value, t, rounds = _timed_rounds(fns, x, quick, ratio)
    return value, dict(spread=spread(rounds, ratio), eager_ms=round(1e3 * t["eager"], 3),
                       compiled_ms=round(1e3 * t["compiled"], 3), compile_s=round(compile_s, 1),
                       compiled="skyfit.compile(posterior).value_and_grad, inductor default "
                                "mode", threads=torch.get_num_threads())


def _gemm_flops_per_s(n: int = 768) -> float:
    """Measured float64 matrix-multiply rate on one thread: the floor's 'peak'."""
    a = torch.randn(n, n, dtype=torch.float64)
    t = best_times({"mm": lambda: a @ a}, repeat=5, number=3)["mm"]
    return 2 * n**3 / t


def value_grad_vs_limit(quick: bool):
    post, data, x = _point()
    flops = problems.supernova_flop_estimate(data)
    eager = _value_and_grad(post.log_likelihood)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # floor and measurement on one core
    try:
        def measure(_):
            rate = _gemm_flops_per_s()
            t = best_times({"vg": lambda: eager(x)}, 3 if quick else 5, 3 if quick else 10)
            return dict(rate=rate, vg=t["vg"], ratio=t["vg"] * rate / flops["value_and_grad"])

        value, r, rounds = median_of_rounds(measure, 2 if quick else harness.ROUNDS,
                                            lambda r: r["ratio"])
    finally:
        torch.set_num_threads(threads)
    floor = flops["value_and_grad"] / r["rate"]
    return value, dict(spread=spread(rounds, lambda r: r["ratio"]),
                       measured_ms=round(1e3 * r["vg"], 3), floor_ms=round(1e3 * floor, 4),
                       flop_estimate_M=round(flops["value_and_grad"] / 1e6, 2),
                       forward_host_M=round(flops["host"] / 1e6, 2),
                       forward_fft_M=round(flops["convolution"] / 1e6, 2),
                       forward_sn_likelihood_M=round(flops["sn_and_likelihood"] / 1e6, 2),
                       gemm_gflops_1_thread=round(r["rate"] / 1e9, 1),
                       transcendental_flops=problems.TRANSCENDENTAL, threads=1)


_MEMORY_PROBE = """
import json, resource, sys, torch
sys.path.insert(0, {here!r})
import problems
post, data = problems.supernova()
x = torch.tensor([data.truth[n] for n in post.names], dtype=torch.float64)
post.value_and_grad(x)  # one point: set-up allocations are not the batch's
xs = x + 1e-3 * torch.randn({chains}, x.numel(), dtype=torch.float64,
                            generator=torch.Generator().manual_seed(0))
page = __import__("os").sysconf("SC_PAGE_SIZE")
rss = int(open("/proc/self/statm").read().split()[1]) * page
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
post.value_and_grad(xs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(rss_before=rss, maxrss_before=base, maxrss_after=peak)))
"""


def peak_memory(quick: bool):
    chains = 64
    code = _MEMORY_PROBE.format(here=str(HERE), chains=chains)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    # the batch's own peak: the process's high-water mark after it minus its resident size
    # before it (set-up held then is not counted); 0 if set-up's own peak was higher
    peak = max(m["maxrss_after"] - max(m["rss_before"], 0), 0) / 2**20
    grid = (problems.PIXELS + 2 * (problems.PSF_SIZE // 2)) * problems.SUPERSAMPLE
    image_mb = chains * grid**2 * 8 / 2**20
    return peak, dict(chains=chains, peak_mb=round(peak, 1),
                      supersampled_image_mb_per_batch=round(image_mb, 1),
                      peak_in_batch_images=round(peak / image_mb, 1),
                      how="resource ru_maxrss of a fresh process minus /proc/self/statm RSS "
                          "before the batched Posterior.value_and_grad")


BENCHMARKS = [
    Benchmark("overhead", "time_ratio", "<=", 1.0, overhead,
              "skyfit value+gradient of the supernova likelihood vs the model written naively "
              "in plain torch (meshgrid, pow, conv2d, Ciotti-Bertin b)"),
    Benchmark("compiled_vs_eager", "speedup", ">=", 3, compiled_vs_eager,
              "skyfit.compile(posterior) vs the eager Posterior, value+gradient at one "
              "point, supernova model (compile time in details)"),
    Benchmark("value_grad_vs_limit", "time_over_floor", "<=", 10, value_grad_vs_limit,
              "eager value+gradient (1 thread) over a FLOP-count floor: the estimate in details "
              "at the measured 1-thread float64 GEMM rate"),
    Benchmark("peak_memory", "peak_mb", "<=", 1024, peak_memory,
              "peak resident memory added by one 64-chain batched value+gradient of the "
              "supernova posterior (ru_maxrss of a fresh process)"),
]
