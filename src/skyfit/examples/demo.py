"""The main job, ``python -m skyfit demo``: the supernova example fitted in three steps, then
sampled.

It simulates five seeded 50x50 epochs of a supernova on a Sersic host
(:mod:`skyfit.examples.supernova`), fits each image alone, then all epochs jointly with one linked
SN position, then with the SN flux following a light-curve model; it prints fitted values +-
Laplace errors against the truth, judges each sampler's run with :meth:`skyfit.Samples.check`
and writes figures, the model graph and ``summary.json`` to an output folder. It uses skyfit's
public API only.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch

import skyfit
from skyfit import plots
from skyfit.errors import HessianWarning

from .supernova import (
    HOST_TRUTH,
    LIGHT_CURVE_TRUTH,
    SN_TRUTH,
    SupernovaData,
    aperture_flux,
    host_galaxy,
    linked_epoch_stack,
    perturbed_start,
    simulate_supernova,
    supernova_light_curve_model,
)

__all__ = ["run_demo", "SAMPLER_SETTINGS"]


def _per_image_fits(data: SupernovaData, log):
    """Step 1: each epoch alone (host + SN with free position and flux)."""
    rows = []
    for i in range(len(data.times)):
        host = host_galaxy(f"host{i}", **perturbed_start(HOST_TRUTH, 10 + i))
        x0, y0 = SN_TRUTH["x0"] + 0.02, SN_TRUTH["y0"] - 0.02
        sn = skyfit.PointSource(f"sn{i}", x0=x0, y0=y0,
                                flux=aperture_flux(data.images[i], data.grid, x0, y0))
        psf = skyfit.GaussianPSF(f"psf{i}", sigma=data.psf_sigma, size=15)
        scene = skyfit.Scene(data.grid, [host], psf, [sn], name=f"image{i}")
        host.to_dynamic()
        sn.to_dynamic()
        post = skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images[i], noise=data.noise))
        res = skyfit.fit_map(post, polish=True)
        lap = skyfit.laplace(post, res.x)
        k = post.names.index(f"sn{i}.flux")
        rows.append((res.x[k].item(), lap.std[k].item()))
        log(f"  epoch {i} (t={data.times[i].item():+.1f} d): SN flux "
            f"{rows[-1][0]:8.2f} +- {rows[-1][1]:6.2f}  (truth {data.true_fluxes[i].item():8.2f})")
    return rows


def _joint_fit(data: SupernovaData, log):
    """Step 2: all epochs, one host and one SN position (caskade links), a free flux per epoch."""
    host = host_galaxy(**perturbed_start(HOST_TRUTH, 20))
    host.to_dynamic()
    x0, y0 = SN_TRUTH["x0"] + 0.02, SN_TRUTH["y0"] - 0.02
    stack = linked_epoch_stack(data, host, x0, y0,
                               [aperture_flux(image, data.grid, x0, y0) for image in data.images])
    post = skyfit.Posterior(skyfit.GaussianLikelihood(stack, data.images, noise=data.noise))
    res = skyfit.fit_map(post)
    with warnings.catch_warnings():  # a flux pinned at 0 is flagged in the table instead
        warnings.simplefilter("ignore", HessianWarning)
        lap = skyfit.laplace(post, res.x)
    rows = []
    for i in range(len(data.times)):
        k = post.names.index(f"sn{i}.flux")
        rows.append((res.x[k].item(), lap.std[k].item()))
        note = "  (at the bound 0: the error is no interval)" if rows[-1][0] <= 0 else ""
        log(f"  epoch {i}: SN flux {rows[-1][0]:8.2f} +- {rows[-1][1]:6.2f}  "
            f"(truth {data.true_fluxes[i].item():8.2f}){note}")
    return rows, post


SAMPLER_SETTINGS = {
    "full": dict(emcee=dict(n_walkers=32, n_burn=300, n_steps=700),
                 # the full run aims at R-hat < 1.01 and ESS > 400 (Samples.check) for NUTS
                 nuts=dict(n_chains=4, n_warmup=200, n_draws=500, mass="dense")),
    "quick": dict(emcee=dict(n_walkers=32, n_burn=30, n_steps=60),
                  nuts=dict(n_chains=2, n_warmup=30, n_draws=30, mass="dense")),
}


def _sample(post, lap, settings, seed, progress, log) -> dict:
    """emcee and batched NUTS, both started from the Laplace approximation: ``{name: Samples}``.
    Warnings raised during a run go to the log and to ``info["warnings"]``: convergence itself is
    judged once, by :meth:`Samples.check`, in :func:`_sampler_summary`."""
    runs = {}
    for name, sampler in (("emcee", skyfit.sample_emcee), ("nuts", skyfit.sample_nuts)):
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[name] = sampler(post, init=lap, seed=seed, progress=progress, **settings[name])
        runs[name].info["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        log(f"      {name}: {time.perf_counter() - t:.1f} s, "
            f"{runs[name].n_divergent} divergences")
        for message in runs[name].info["warnings"]:
            log(f"        {message}")
    return runs


def _sampler_summary(samples, truth: dict) -> dict:
    """Diagnostics of one run and its verdict from :meth:`Samples.check` (R-hat, bulk and tail
    ESS, divergences and, for emcee, the run length in autocorrelation times; Vehtari et al.
    2021, Bayesian Anal. 16, 667)."""
    table = samples.summary(warn=False)
    problems = samples.check(warn=False)
    verdict = "converged" if not problems else ("NOT converged (" + "; ".join(problems) + ")")
    return {
        "wall_time_s": samples.info.get("wall_time"),
        "n_divergent": int(samples.n_divergent),
        "max_rhat": float(table["r_hat"].max()),
        "min_ess_bulk": float(table["ess_bulk"].min()),
        "min_ess_tail": float(table["ess_tail"].min()),
        "verdict": verdict,
        "warnings": samples.info.get("warnings", []),
        "parameters": [
            {"name": n, "mean": float(row["mean"]), "sd": float(row["sd"]),
             "rhat": float(row["r_hat"]), "ess_bulk": float(row["ess_bulk"]),
             "ess_tail": float(row["ess_tail"]), "truth": truth[n]}
            for n, (_, row) in zip(samples.names, table.iterrows())
        ],
        "table": table.to_string(),
    }


def _light_curve_fit(data: SupernovaData, log):
    """Step 3: the light-curve model's MAP, Laplace errors and the peak time's error."""
    post, modules = supernova_light_curve_model(data)
    res = skyfit.fit_map(post)
    lap = skyfit.laplace(post, res.x)
    post.set(res.x)
    log(f"      converged={res.converged} after {res.n_evals} evaluations "
        f"({res.wall_time:.1f} s); Newton decrement {res.newton_decrement:.1e}")
    log(lap.table(data.truth))

    def peak_time(x):  # a derived quantity, with its error by the delta method
        return post.unpack(x)["lightcurve.t0"]

    _, t0_var = lap.propagate(peak_time)
    log(f"      peak time t0 = {res.values['lightcurve.t0']:.3f} +- "
        f"{math.sqrt(t0_var.item()):.3f} d (truth {LIGHT_CURVE_TRUTH['t0']})")
    return post, modules, res, lap


def _figures(data: SupernovaData, post, modules, lap, single, joint, runs, out: Path) -> list:
    """images.png, light_curve.png, the model graph, a corner plot and the chains per sampler."""
    with torch.no_grad():
        model_images = modules["scene"]()
        sigma = data.noise.variance(model_images).sqrt()
    t_fine = torch.linspace(data.times.min() - 2, data.times.max() + 2, 200, dtype=post.dtype)

    def curve(x):  # light curve at t_fine as a function of the parameter vector
        p = post.unpack(x)
        return skyfit.lightcurves.gaussian_light_curve(
            t_fine, p["lightcurve.t0"], p["lightcurve.sigma"], p["lightcurve.peak_flux"])

    fit_curve, curve_cov = lap.propagate(curve)
    curve_err = curve_cov.diagonal().clamp(min=0).sqrt()
    true_curve = skyfit.lightcurves.gaussian_light_curve(t_fine, **LIGHT_CURVE_TRUTH)
    files = [
        plots.save_figure(plots.plot_image_stack(
            data.images, model_images, sigma, extent=data.grid.extent, units="e-/s per pixel",
            titles=[f"t = {t:+.1f} d" for t in data.times.tolist()]), out / "images.png"),
        plots.save_figure(plots.plot_light_curve(
            data.times, points={"each image alone": single, "joint, linked position": joint},
            curve=(t_fine, fit_curve, curve_err), truth=(t_fine, true_curve)),
            out / "light_curve.png"),
        plots.save_model_graph(post.likelihood, out / "model_graph"),
    ]
    truths = [data.truth[n] for n in post.names]
    for name, samples in runs.items():
        files.append(plots.save_figure(plots.corner_plot(samples, truths=truths),
                                       out / f"corner_{name}.png"))
        samples.save(out / f"chains_{name}.h5")
        files.append(out / f"chains_{name}.h5")
    return [f for f in files if f is not None]


def run_demo(outdir: str | Path = "skyfit-demo", seed: int = 0, progress: bool = True,
             samplers: str | None = "full") -> dict:
    """The main job: simulate, fit in three steps, sample the final posterior (emcee and NUTS,
    unless ``samplers=None``; ``"quick"`` for a short smoke run), report, and write figures and
    summary.json."""
    if samplers == "none":
        samplers = None
    if samplers is not None and samplers not in SAMPLER_SETTINGS:
        raise ValueError(f"samplers must be None, 'none' or one of {sorted(SAMPLER_SETTINGS)}, "
                         f"got {samplers!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    log(f"[1/5] simulating 5 epochs of a supernova on a Sersic host (seed {seed})")
    data = simulate_supernova(seed)
    log("[2/5] fitting each image alone (host + SN position and flux)")
    single = _per_image_fits(data, log)
    log("[3/5] fitting all epochs jointly: one host, one SN position (linked), flux per epoch")
    joint, _ = _joint_fit(data, log)
    log("[4/5] fitting the light-curve model: SN flux = Gaussian light curve at each epoch")
    post, modules, res, lap = _light_curve_fit(data, log)
    summary = {
        "seed": seed,
        "model": "host Sersic + SN point source; SN flux = Gaussian light curve",
        "converged": res.converged,
        "log_posterior": res.log_density,
        "n_evaluations": res.n_evals,
        "parameters": [
            {"name": n, "value": v, "uncertainty": s, "truth": data.truth[n]}
            for n, v, s in zip(post.names, res.x.tolist(), lap.std.tolist())
        ],
        "per_image_sn_flux": [{"value": v, "uncertainty": s} for v, s in single],
        "joint_sn_flux": [{"value": v, "uncertainty": s} for v, s in joint],
        "true_sn_flux": data.true_fluxes.tolist(),
        "times": data.times.tolist(),
    }
    summary["max_abs_pull"] = max(abs(p["value"] - p["truth"]) / p["uncertainty"]
                                  for p in summary["parameters"])
    runs = {}
    if samplers is None:
        log("[5/5] sampling skipped (samplers=None)")
    else:
        log("[5/5] sampling the posterior with emcee and batched NUTS (started from Laplace)")
        runs = _sample(post, lap, SAMPLER_SETTINGS[samplers], seed, progress, log)
        summary["samplers"] = {k: _sampler_summary(v, data.truth) for k, v in runs.items()}
        for k, v in summary["samplers"].items():
            log(f"      {k:6s} max R-hat {v['max_rhat']:.3f}, min ESS bulk "
                f"{v['min_ess_bulk']:.0f} / tail {v['min_ess_tail']:.0f}, "
                f"{v['n_divergent']} divergences: {v['verdict']}")
        log(summary["samplers"]["nuts"]["table"])
    files = _figures(data, post, modules, lap, single, joint, runs, out)
    summary["files"] = [str(f) for f in files]
    summary["wall_time_s"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {', '.join(summary['files'])} and {out / 'summary.json'} "
        f"in {summary['wall_time_s']:.1f} s")
    return summary
