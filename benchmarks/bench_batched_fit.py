"""Many independent Gaussian light-curve fits: one batched L-BFGS call vs a loop of fit_map.

``python benchmarks/bench_batched_fit.py [--objects 1000] [--loop 50] [--sizes 100 1000 10000]``

Prints the wall time per object of (a) ``minimize_batched`` on all objects at once, (b) a Python
loop of ``skyfit.fit_map`` (scipy L-BFGS-B with autograd gradients and a Newton polish) on the
first ``--loop`` objects, extrapolated per object, (c) a loop of plain scipy L-BFGS-B on the same
torch objective (no skyfit modules, no polish), and the per-object agreement where both converge.
Not registered in run.py (no ``BENCHMARKS`` list): a later ``many_fits`` row will use it.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

import skyfit
from skyfit.inference.optimizers import minimize_batched
from skyfit.lightcurves.functions import gaussian_light_curve

F64 = torch.float64
N_POINTS, NOISE = 30, 5.0


def simulate(n: int, seed: int = 0):
    """Truth, times, fluxes, errors of ``n`` Gaussian light curves, and data-driven starts
    (t0 at the brightest point, sigma 5 days, peak_flux the brightest flux)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=gen, dtype=F64)
    truth = torch.stack([20 * u[:, 0] - 10, 3 + 7 * u[:, 1], 50 + 150 * u[:, 2]], -1)
    t = torch.linspace(-30, 30, N_POINTS, dtype=F64).expand(n, N_POINTS).contiguous()
    err = torch.full_like(t, NOISE)
    flux = gaussian_light_curve(t, *truth.T[:, :, None])
    flux = flux + err * torch.randn(t.shape, generator=gen, dtype=F64)
    brightest = flux.argmax(-1)
    starts = torch.stack([t[torch.arange(n), brightest], torch.full((n,), 5.0, dtype=F64),
                          flux.amax(-1).clamp(min=1.0)], -1)
    return truth, t, flux, err, starts


def batched_objective(t, flux, err):
    """``-log L`` of object ``rows`` at ``z = (t0, log sigma, log peak_flux)``, and its
    gradient, for a batch of objects (one autograd pass)."""
    const = 0.5 * torch.log(2 * math.pi * err**2).sum(-1)

    def objective(z, rows):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            model = gaussian_light_curve(t[rows], z[:, :1], z[:, 1:2].exp(), z[:, 2:].exp())
            f = 0.5 * (((flux[rows] - model) / err[rows]) ** 2).sum(-1) + const[rows]
            (g,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), g

    return objective


def to_z(x):
    return torch.cat([x[:, :1], x[:, 1:].log()], -1)


def to_x(z):
    return torch.cat([z[:, :1], z[:, 1:].exp()], -1)


def run_batched(t, flux, err, starts, scale="curvature"):
    """CPU seconds (process time: less sensitive than wall time to other tenants of a shared
    machine), wall seconds, result."""
    cpu, wall = time.process_time(), time.perf_counter()
    res = minimize_batched(batched_objective(t, flux, err), to_z(starts), takes_rows=True,
                           scale=scale)
    return time.process_time() - cpu, time.perf_counter() - wall, res


def run_fit_map_loop(t, flux, err, starts):
    """CPU and wall seconds of the fits (building each Posterior is not counted), results."""
    xs, ok, cpu, wall = [], [], 0.0, 0.0
    for i in range(len(starts)):
        lc = skyfit.GaussianLightCurve(t0=starts[i, 0].item(), sigma=starts[i, 1].item(),
                                       peak_flux=starts[i, 2].item())
        lc.to_dynamic()
        post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t[i], flux[i], err[i]))
        c0, w0 = time.process_time(), time.perf_counter()
        res = skyfit.fit_map(post, starts[i])
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        xs.append(res.x)
        ok.append(res.converged)
    return cpu, wall, torch.stack(xs), torch.tensor(ok)


def run_scipy_loop(t, flux, err, starts):
    objective = batched_objective(t, flux, err)
    xs, ok = [], []
    cpu, wall = time.process_time(), time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for i in range(len(starts)):
            rows = torch.tensor([i])

            def fun(z, rows=rows):
                f, g = objective(torch.as_tensor(z)[None], rows)
                return f.item(), g[0].numpy()

            res = minimize(fun, to_z(starts[i : i + 1])[0].numpy(), jac=True,
                           method="L-BFGS-B")
            xs.append(torch.as_tensor(res.x))
            ok.append(bool(res.success))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, to_x(torch.stack(xs)), torch.tensor(ok)


def agreement(x_a, ok_a, x_b, ok_b):
    both = ok_a & ok_b
    rel = ((x_a - x_b).abs() / x_b.abs()).amax(-1)
    return int(both.sum()), float(rel[both].max()) if both.any() else float("nan")


def report(label: str, n: int, cpu: float, wall: float, extra: str = "") -> None:
    print(f"{label}: {1e3 * cpu / n:.3f} ms CPU / {1e3 * wall / n:.3f} ms wall per object"
          + (f", {extra}" if extra else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{N_POINTS} points per light curve, 3 parameters; best of {args.repeat} by CPU time")
    _, t, flux, err, starts = simulate(args.objects)
    per_object = {}
    for scale in ("curvature", None):
        cpu, wall, res = min((run_batched(t, flux, err, starts, scale)
                              for _ in range(args.repeat)), key=lambda r: r[0])
        per_object[scale] = cpu / args.objects
        report(f"batched B={args.objects} scale={scale}", args.objects, cpu, wall,
               f"converged {int(res.converged.sum())}/{args.objects}, iterations mean "
               f"{res.n_iter.float().mean():.1f} max {int(res.n_iter.max())}, evaluations mean "
               f"{res.n_evals.float().mean():.1f}")
    batched = run_batched(t, flux, err, starts)[2]
    x_batched, n = to_x(batched.x), args.loop
    cpu, wall, x_loop, ok_loop = run_fit_map_loop(t[:n], flux[:n], err[:n], starts[:n])
    both, rel = agreement(x_batched[:n], batched.converged[:n], x_loop, ok_loop)
    report(f"fit_map loop on {n}", n, cpu, wall,
           f"converged {int(ok_loop.sum())}/{n}; batched is {cpu / n / per_object['curvature']:.0f}"
           f"x faster (CPU); where both converged ({both}) max relative diff {rel:.2e}")
    cpu, wall, x_s, ok_s = run_scipy_loop(t[:n], flux[:n], err[:n], starts[:n])
    both, rel = agreement(x_batched[:n], batched.converged[:n], x_s, ok_s)
    report(f"scipy L-BFGS-B loop on {n} (same torch objective, scipy defaults)", n, cpu, wall,
           f"success {int(ok_s.sum())}/{n}; batched is {cpu / n / per_object['curvature']:.0f}x "
           f"faster (CPU); where both converged ({both}) max relative diff {rel:.2e}")
    cpu, wall, r32 = run_batched(t.float(), flux.float(), err.float(), starts.float())
    both, rel = agreement(to_x(r32.x.double()), r32.converged, x_batched, batched.converged)
    report(f"batched float32 B={args.objects}", args.objects, cpu, wall,
           f"converged {int(r32.converged.sum())}/{args.objects}; where both converged ({both}) "
           f"max relative diff from float64 {rel:.2e}")
    for size in args.sizes:
        _, ts, fs, es, ss = simulate(size, seed=1)
        cpu, wall, res = run_batched(ts, fs, es, ss)
        report(f"batched B={size}", size, cpu, wall,
               f"converged {int(res.converged.sum())}/{size}, iterations max "
               f"{int(res.n_iter.max())}, status counts {np.bincount(res.status.numpy()).tolist()}")


if __name__ == "__main__":
    main()
