"""Foundation benchmarks: caskade overhead, L-BFGS vs Nelder-Mead, batched epochs vs a stack."""

from __future__ import annotations

import math
import time

import torch
from harness import Benchmark, best_times
from problems import (
    HOST_TRUTH,
    SN_TRUTH,
    linked_epoch_stack,
    simulate_supernova,
    supernova_light_curve_model,
)
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

import skyfit
from skyfit.sources.profiles import sersic_b


def _hand_written(data):
    """The light-curve image model and its log-likelihood written directly in torch (no modules):
    what a careful user would write by hand for this one problem, with the same numerical kernels
    as skyfit's (sub-pixel-first sample layout, factored quadratic form, b and Re folded into one
    exponent, CDF-difference point images), so the ratio measures the module layer alone."""
    ny, nx = data.grid.shape
    s, scale, pad, k = data.grid.supersample, data.grid.pixel_scale, 7, 15
    H, W = ny + 2 * pad, nx + 2 * pad
    xp = (torch.arange(W, dtype=torch.float64) - (W - 1) / 2) * scale
    yp = (torch.arange(H, dtype=torch.float64) - (H - 1) / 2) * scale
    offset = (torch.arange(s, dtype=torch.float64) - (s - 1) / 2) * (scale / s)
    # (s * s, H, W): sub-pixel offset first, so the pixel integral is a sum of planes
    X = (xp[None, None, :] + offset.repeat(s)[:, None, None]).expand(s * s, H, W).contiguous()
    Y = (yp[None, :, None] + offset.repeat_interleave(s)[:, None, None]).expand(s * s, H,
                                                                                W).contiguous()
    xe = (torch.arange(nx + 1, dtype=torch.float64) - nx / 2) * scale  # pixel edges
    ye = (torch.arange(ny + 1, dtype=torch.float64) - ny / 2) * scale
    r = (torch.arange(k, dtype=torch.float64) - k // 2) * scale
    psf_sigma, times, d = data.psf_sigma, data.times, data.images
    t_exp, read = data.noise.exposure_time.value, data.noise.read_noise.value
    kernel = torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / psf_sigma**2)
    kernel = kernel / kernel.sum()
    fft_shape = (H + k - 1, W + k - 1)
    kernel_ft = torch.fft.rfft2(kernel, s=fft_shape)

    def loglike(p):
        hx, hy, q, phi, n, Re, flux, sx, sy, t0, sig, peak = p
        c, sn_ = torch.cos(phi), torch.sin(phi)
        a2, b2, d2 = q * c**2 + sn_**2 / q, 2 * c * sn_ * (q - 1 / q), q * sn_**2 + c**2 / q
        dx, dy = X - hx, Y - hy
        r2 = dx * (a2 * dx + b2 * dy) + d2 * dy * dy
        b = sersic_b(n)
        log_norm = math.log(2 * math.pi) + torch.log(n) + 2 * torch.log(Re) + b
        log_norm = log_norm + torch.lgamma(2 * n) - 2 * n * torch.log(b)
        bu = torch.exp((0.5 / n) * torch.log(r2 + 1e-12) + (torch.log(b) - torch.log(Re) / n))
        sb = flux * torch.exp((b - log_norm) - bu)
        img = sb.mean(0) * scale**2
        img = torch.fft.irfft2(torch.fft.rfft2(img, s=fft_shape) * kernel_ft, s=fft_shape)
        img = img[k // 2 + pad : k // 2 + pad + ny, k // 2 + pad : k // 2 + pad + nx]
        sn_flux = peak * torch.exp(-0.5 * (times - t0) ** 2 / sig**2)
        ndtr = torch.special.ndtr
        px = torch.diff(ndtr((xe - sx) / psf_sigma))
        py = torch.diff(ndtr((ye - sy) / psf_sigma))
        model = img + (sn_flux[:, None] * py)[:, :, None] * px[None, None, :]
        var = model.clamp(min=0) / t_exp + (read / t_exp) ** 2
        terms = ((d - model) ** 2 / var + torch.log(var)).sum()
        return -0.5 * (terms + d.numel() * math.log(2 * math.pi))

    return loglike


def overhead(quick: bool):
    data = simulate_supernova(0)
    post, _ = supernova_light_curve_model(data)
    x = torch.tensor([data.truth[n] for n in post.names], dtype=torch.float64)
    plain = _hand_written(data)
    like = post.log_likelihood  # the flat-vector path every fit and sampler takes
    if not torch.allclose(like(x), plain(x), rtol=1e-8):
        raise RuntimeError(f"hand-written model disagrees: {like(x).item()} vs {plain(x).item()}")
    repeat = 5 if quick else 20
    number = 5 if quick else 20
    xg = x.clone().requires_grad_(True)
    fns = {"sky": lambda: like(x), "plain": lambda: plain(x),
           "sky_g": lambda: torch.autograd.grad(like(xg), xg),
           "plain_g": lambda: torch.autograd.grad(plain(xg), xg)}
    # the median of five rounds of best-of timings: one round's ratio swings by +-20% on this
    # shared machine (seen from 0.7 to 1.4 for the same code)
    rounds = [best_times(fns, repeat, number) for _ in range(1 if quick else 5)]
    ratios = sorted(r["sky"] / r["plain"] for r in rounds)
    grads = sorted(r["sky_g"] / r["plain_g"] for r in rounds)
    t = min(rounds, key=lambda r: abs(r["sky"] / r["plain"] - ratios[len(ratios) // 2]))
    return ratios[len(ratios) // 2], dict(
        skyfit_ms=1e3 * t["sky"], plain_ms=1e3 * t["plain"],
        round_ratios=[round(v, 3) for v in ratios],
        grad_ratio=grads[len(grads) // 2], skyfit_grad_ms=1e3 * t["sky_g"],
        plain_grad_ms=1e3 * t["plain_g"], threads=torch.get_num_threads())


def _joint_model(data):
    """Seed-003 joint model: host + one SN position for all epochs + a free SN flux per epoch
    (batched over epochs), started from the same perturbed values as the example's fits."""
    host = skyfit.Sersic("host", **{k: v * 1.05 for k, v in HOST_TRUTH.items()})
    sn = skyfit.PointSource("sn", x0=SN_TRUTH["x0"] + 0.02, y0=SN_TRUTH["y0"] - 0.02,
                            flux=data.true_fluxes.clamp(min=1.0) * 1.1)
    scene = skyfit.Scene(data.grid, [host], skyfit.GaussianPSF(sigma=data.psf_sigma, size=15),
                         [sn])
    host.to_dynamic()
    sn.to_dynamic()
    return skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images, noise=data.noise))


_MAP_CACHE: dict = {}


def map_vs_neldermead(quick: bool):
    if quick in _MAP_CACHE:  # the eval and time ratios come from one run
        return _MAP_CACHE[quick]
    data = simulate_supernova(0)
    if quick:  # one epoch: 10 parameters (7 host, SN position and flux)
        data.images = data.images[2:3]
        data.times = data.times[2:3]
        data.true_fluxes = data.true_fluxes[2:3]
    post = _joint_model(data)
    x0 = post.initial()
    skyfit.fit_map(post, x0)  # warm-up: one-time autograd/functorch set-up is not the optimiser
    t_lbfgs = float("inf")
    for _ in range(3):  # best of three: one fit takes 0.2 s, and a single timing can double
        t = time.perf_counter()
        res = skyfit.fit_map(post, x0)
        t_lbfgs = min(t_lbfgs, time.perf_counter() - t)
    target = res.log_density - 0.1  # "the same optimum": within 0.1 in log-density
    n_evals, reached = 0, None
    t = time.perf_counter()

    def f(v):
        nonlocal n_evals, reached
        n_evals += 1
        val = -post(torch.as_tensor(v)).item()
        if reached is None and -val >= target:
            reached = (n_evals, time.perf_counter() - t)
        return val if math.isfinite(val) else 1e300

    # Nelder-Mead as its experts run it: adaptive simplex parameters for dimension > ~5
    # (Gao & Han 2012), tight tolerances, a generous evaluation budget, restarted from its own
    # result until it stops improving.
    x = x0.numpy()
    budget = 6000 if quick else 40000
    bounds = list(zip(post.lower.tolist(), post.upper.tolist()))  # as L-BFGS-B gets them
    for _ in range(5):
        with threadpool_limits(limits=1, user_api="blas"):  # as fit_map runs scipy
            r = minimize(f, x, method="Nelder-Mead", bounds=bounds,
                         options=dict(adaptive=True, xatol=1e-8, fatol=1e-8, maxfev=budget))
        if reached is not None or n_evals >= budget:
            break
        x = r.x
    hit = reached is not None
    if not hit:
        reached = (n_evals, time.perf_counter() - t)  # lower bound: never got there
    ratio_evals = reached[0] / res.n_evals
    ratio_time = reached[1] / t_lbfgs
    # an L-BFGS evaluation is a value and a gradient, a Nelder-Mead one a value: the eval ratio
    # counts calls; weighted by their measured costs it is smaller (reported alongside)
    t = best_times({"v": lambda: post(x0), "vg": lambda: post.value_and_grad(x0)}, 5, 10)
    cost = t["vg"] / t["v"]
    _MAP_CACHE[quick] = ratio_evals, dict(lbfgs_evals=res.n_evals, lbfgs_s=t_lbfgs,
                             neldermead_evals=reached[0], neldermead_s=reached[1],
                             wall_time_ratio=ratio_time, n_params=post.dim,
                             value_and_grad_cost_in_values=cost,
                             cost_weighted_eval_ratio=ratio_evals / cost,
                             neldermead_reached=hit)
    return _MAP_CACHE[quick]


def map_vs_neldermead_time(quick: bool):
    ratio, details = map_vs_neldermead(quick)
    return details["wall_time_ratio"], details


def batched_vs_stack(quick: bool):

    data = simulate_supernova(0)
    batched = _joint_model(data)
    host = skyfit.Sersic("host", **{k: v * 1.05 for k, v in HOST_TRUTH.items()})
    host.to_dynamic()
    scenes = linked_epoch_stack(data, host, SN_TRUTH["x0"] + 0.02, SN_TRUTH["y0"] - 0.02,
                                (data.true_fluxes.clamp(min=1.0) * 1.1).tolist())
    stack = skyfit.Posterior(skyfit.GaussianLikelihood(scenes, data.images, noise=data.noise))
    # same parameters in each model's own order
    xb = batched.initial()
    vals = batched.unpack(xb)
    xs = torch.cat([vals["host." + n.split(".")[1]].reshape(1) if n.startswith("host") else
                    torch.zeros(1) for n in stack.names])
    for i, n in enumerate(stack.names):
        if n.startswith("sn"):
            j = int(n.split(".")[0][2:])
            key = n.split(".")[1]
            xs[i] = vals["sn.flux"][j] if key == "flux" else vals[f"sn.{key}"]
    lb, ls = batched(xb), stack(xs)
    if not torch.allclose(lb, ls, rtol=1e-12):
        raise RuntimeError(f"stack and batched models disagree: {ls.item()} vs {lb.item()}")
    repeat, number = (5, 5) if quick else (15, 20)
    fns = {"b": lambda: batched.value_and_grad(xb), "s": lambda: stack.value_and_grad(xs),
           "bv": lambda: batched(xb), "sv": lambda: stack(xs)}
    # the median of five rounds of best-of timings (one round swings by +-15% here)
    rounds = [best_times(fns, repeat, number) for _ in range(1 if quick else 5)]
    ratios = sorted(r["s"] / r["b"] for r in rounds)
    mid = ratios[len(ratios) // 2]
    t = min(rounds, key=lambda r: abs(r["s"] / r["b"] - mid))
    t_b, t_s, t_bv, t_sv = t["b"], t["s"], t["bv"], t["sv"]
    n = len(data.times)
    # the speed-up is n * (one stack epoch) / (all epochs batched): it exceeds n only if the
    # batched model costs less than one epoch of the stack; batched_over_one_epoch says how close
    return mid, dict(batched_ms=1e3 * t_b, stack_ms=1e3 * t_s, value_only_ratio=t_sv / t_bv,
                     round_ratios=[round(v, 3) for v in ratios], n_epochs=n,
                     batched_over_one_epoch=t_b / (t_s / n), metric="value_and_grad time ratio")


BENCHMARKS = [
    Benchmark("overhead", "time_ratio", "<=", 1.2, overhead,
              "skyfit light-curve image log-likelihood vs the same model hand-written in torch"),
    Benchmark("map_vs_neldermead", "eval_ratio", ">=", 20, map_vs_neldermead,
              "evaluations of Nelder-Mead / L-BFGS-B to reach the same optimum (joint model)"),
    Benchmark("map_vs_neldermead_time", "time_ratio", ">=", 10, map_vs_neldermead_time,
              "wall time of Nelder-Mead / L-BFGS-B to reach the same optimum (joint model)"),
    Benchmark("batched_vs_stack", "speedup", ">=", 5, batched_vs_stack,
              "batched multi-epoch Scene vs an ImageStack of linked per-epoch Scenes (both render "
              "the host; with 5 epochs the ratio passes 5 only if the batched model costs less "
              "than one stack epoch: see batched_over_one_epoch)"),
]
