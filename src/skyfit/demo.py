"""The supernova-in-a-host-galaxy problem (after caskade's light-curve tutorial) and the main job.

``python -m skyfit demo`` simulates five seeded 50x50 epochs of a supernova on a Sersic host,
fits each image alone, then all epochs jointly with one linked SN position, then with the SN
flux following a light-curve model; it prints fitted values +- Laplace errors against the truth
and writes figures, the model graph and ``summary.json`` to an output folder.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ConvergenceWarning, HessianWarning
from .inference.emcee import AUTOCORR_TIMES_MIN
from .inference.laplace import laplace
from .inference.optimize import fit_map
from .inference.results import ESS_MIN, RHAT_MAX
from .instruments import GaussianPSF, PixelGrid, ReadPoissonNoise
from .lightcurves import GaussianLightCurve, gaussian_light_curve, link_flux_to_light_curve
from .likelihoods import GaussianLikelihood
from .posterior import Posterior
from .scenes import ImageStack, Scene
from .sources import PointSource, Sersic

__all__ = ["SupernovaData", "simulate_supernova", "supernova_light_curve_model",
           "linked_epoch_stack",
           "supernova_problem", "run_demo"]

HOST_TRUTH = dict(x0=0.20, y0=0.18, q=0.6, phi=0.5, n=1.5, Re=0.30, flux=400.0)
SN_TRUTH = dict(x0=-0.35, y0=-0.20)
LIGHT_CURVE_TRUTH = dict(t0=-3.0, sigma=2.0, peak_flux=120.0)
TIMES = (-8.0, -5.0, -2.0, 1.0, 4.0)


@dataclass
class SupernovaData:
    """Seeded mock observations: ``images (n_epochs, 50, 50)`` in e-/s per pixel, and the truth."""

    images: torch.Tensor
    times: torch.Tensor
    grid: PixelGrid
    psf_sigma: float
    noise: ReadPoissonNoise
    truth: dict[str, float] = field(default_factory=dict)
    true_fluxes: torch.Tensor | None = None


def _host(name="host", **values) -> Sersic:
    return Sersic(name, **{**HOST_TRUTH, **values})


def simulate_supernova(seed: int = 0, dtype: torch.dtype = torch.float64) -> SupernovaData:
    """Simulate the five epochs (0.04" pixels, Gaussian PSF of 0.06", 25 s exposures, 5 e- read
    noise) with read + Poisson noise from ``torch.Generator().manual_seed(seed)``."""
    grid = PixelGrid((50, 50), pixel_scale=0.04, supersample=3, dtype=dtype)
    times = torch.tensor(TIMES, dtype=dtype)
    lightcurve = GaussianLightCurve("lightcurve", **LIGHT_CURVE_TRUTH)
    sn = PointSource("sn", **SN_TRUTH)
    link_flux_to_light_curve(sn, lightcurve, times)
    scene = Scene(grid, [_host()], GaussianPSF("psf", sigma=0.06, size=15), [sn], name="truth")
    noise = ReadPoissonNoise("noise", exposure_time=25.0, read_noise=5.0)
    with torch.no_grad():
        clean = scene()
        images = noise.sample(clean, torch.Generator().manual_seed(seed))
        fluxes = lightcurve.flux(times)
    truth = {f"host.{k}": v for k, v in HOST_TRUTH.items()}
    truth.update({f"sn.{k}": v for k, v in SN_TRUTH.items()})
    truth.update({f"lightcurve.{k}": v for k, v in LIGHT_CURVE_TRUTH.items()})
    for i, f in enumerate(fluxes.tolist()):
        truth[f"sn.flux[{i}]"] = f
    return SupernovaData(images, times, grid, 0.06, noise, truth, fluxes)


def aperture_flux(image: torch.Tensor, grid: PixelGrid, x0: float, y0: float,
                  radius: float = 4.0) -> float:
    """Aperture photometry: flux within ``radius`` pixels of ``(x0, y0)`` minus the local level
    (median of an annulus at 5-8 pixels) times the aperture's area; at least 1. The fits' start
    for the SN flux: it knows nothing of the truth."""
    x, y = grid.coordinates()
    r = torch.hypot(x - x0, y - y0) / grid.pixel_scale
    inside, annulus = r <= radius, (r > radius + 1) & (r <= radius + 4)
    level = image[annulus].median()
    return max(float(image[inside].sum() - inside.sum() * level), 1.0)


def _perturbed(values: dict, seed: int, frac: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v * (1 + frac * torch.randn((), generator=g, dtype=torch.float64).item())
            for k, v in values.items()}


def supernova_light_curve_model(data: SupernovaData, start_seed: int = 1):
    """The final model: one host, one SN position, SN flux = Gaussian light curve at each epoch,
    evaluated for all epochs in one batched call. Returns ``(posterior, modules)``; dynamic
    parameters start 5% off the truth."""
    s = _perturbed({**HOST_TRUTH, **{f"sn_{k}": v for k, v in SN_TRUTH.items()},
                    **{f"lc_{k}": v for k, v in LIGHT_CURVE_TRUTH.items()}}, start_seed)
    host = _host(**{k: s[k] for k in HOST_TRUTH})
    host.phi = HOST_TRUTH["phi"] + 0.05  # a relative kick on an angle means little
    sn = PointSource("sn", x0=s["sn_x0"], y0=s["sn_y0"])
    lightcurve = GaussianLightCurve("lightcurve", t0=s["lc_t0"], sigma=s["lc_sigma"],
                                    peak_flux=s["lc_peak_flux"])
    link_flux_to_light_curve(sn, lightcurve, data.times)
    psf = GaussianPSF("psf", sigma=data.psf_sigma, size=15)
    scene = Scene(data.grid, [host], psf, [sn], name="scene")
    host.to_dynamic()
    sn.x0.to_dynamic()
    sn.y0.to_dynamic()
    lightcurve.to_dynamic()
    like = GaussianLikelihood(scene, data.images, noise=data.noise, name="likelihood")
    return Posterior(like), dict(host=host, sn=sn, lightcurve=lightcurve, scene=scene, psf=psf)


def supernova_problem(seed: int = 0):
    """``(posterior, truth_vector)`` of the light-curve image model on seeded mock data."""
    data = simulate_supernova(seed)
    post, _ = supernova_light_curve_model(data)
    truth = torch.tensor([data.truth[n] for n in post.names], dtype=post.dtype)
    return post, truth


def _per_image_fits(data: SupernovaData, log):
    """Step 1: each epoch alone (host + SN with free position and flux)."""
    rows = []
    for i in range(len(data.times)):
        host = _host(f"host{i}", **_perturbed(HOST_TRUTH, 10 + i))
        x0, y0 = SN_TRUTH["x0"] + 0.02, SN_TRUTH["y0"] - 0.02
        sn = PointSource(f"sn{i}", x0=x0, y0=y0,
                         flux=aperture_flux(data.images[i], data.grid, x0, y0))
        scene = Scene(data.grid, [host], GaussianPSF(f"psf{i}", sigma=data.psf_sigma, size=15),
                      [sn], name=f"image{i}")
        host.to_dynamic()
        sn.to_dynamic()
        post = Posterior(GaussianLikelihood(scene, data.images[i], noise=data.noise))
        res = fit_map(post, polish=True)
        lap = laplace(post, res.x)
        k = post.names.index(f"sn{i}.flux")
        rows.append((res.x[k].item(), lap.std[k].item()))
        log(f"  epoch {i} (t={data.times[i].item():+.1f} d): SN flux "
            f"{rows[-1][0]:8.2f} +- {rows[-1][1]:6.2f}  (truth {data.true_fluxes[i].item():8.2f})")
    return rows


def linked_epoch_stack(data: SupernovaData, host: Sersic, sn_x0: float, sn_y0: float,
                       fluxes) -> ImageStack:
    """One Scene per epoch sharing ``host`` and, by caskade links, one SN position; each epoch's
    SN flux is its own dynamic Param (names ``sn{i}.flux``), the position is ``sn0.x0/y0``."""
    psf = GaussianPSF("psf", sigma=data.psf_sigma, size=15)
    scenes, sns = [], []
    for i, flux in enumerate(fluxes):
        sn = PointSource(f"sn{i}", x0=sn_x0, y0=sn_y0, flux=float(flux))
        sn.flux.to_dynamic()
        if i == 0:
            sn.x0.to_dynamic()
            sn.y0.to_dynamic()
        else:  # one SN position for all epochs
            sn.x0, sn.y0 = sns[0].x0, sns[0].y0
        sns.append(sn)
        scenes.append(Scene(data.grid, [host], psf, [sn], name=f"image{i}"))
    return ImageStack(scenes, name="stack")


def _joint_fit(data: SupernovaData, log):
    """Step 2: all epochs, one host and one SN position (caskade links), a free flux per epoch."""
    host = _host(**_perturbed(HOST_TRUTH, 20))
    host.to_dynamic()
    x0, y0 = SN_TRUTH["x0"] + 0.02, SN_TRUTH["y0"] - 0.02
    stack = linked_epoch_stack(data, host, x0, y0,
                               [aperture_flux(image, data.grid, x0, y0) for image in data.images])
    post = Posterior(GaussianLikelihood(stack, data.images, noise=data.noise))
    res = fit_map(post)
    with warnings.catch_warnings():  # a flux pinned at 0 is flagged in the table instead
        warnings.simplefilter("ignore", HessianWarning)
        lap = laplace(post, res.x)
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
                 # 300 draws per chain left R-hat at 1.012 (seed 0); 500 reach 1.008
                 nuts=dict(n_chains=4, n_warmup=200, n_draws=500, mass="dense")),
    "quick": dict(emcee=dict(n_walkers=32, n_burn=30, n_steps=60),
                  nuts=dict(n_chains=2, n_warmup=30, n_draws=30, mass="dense")),
}


def _sample(post, lap, settings, seed, progress, log):
    """Posterior draws of the light-curve model with emcee and batched NUTS, both started from
    the Laplace approximation; returns ``{name: Samples}``."""
    from .inference import sample_emcee, sample_nuts

    runs = {}
    t = time.perf_counter()
    with warnings.catch_warnings():  # the run length is judged in the log's verdict instead
        warnings.filterwarnings("ignore", "emcee: .* autocorrelation times", ConvergenceWarning)
        runs["emcee"] = sample_emcee(post, init=lap, seed=seed, progress=progress,
                                     **settings["emcee"])
    log(f"      emcee: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    runs["nuts"] = sample_nuts(post, init=lap, seed=seed, progress=progress, **settings["nuts"])
    log(f"      NUTS: {time.perf_counter() - t:.1f} s, "
        f"{runs['nuts'].n_divergent} divergences")
    return runs


def _verdict(samples, summary: dict) -> str:
    """Converged or not, by :meth:`Samples.check`'s thresholds (R-hat, bulk and tail ESS, no
    divergence; Vehtari et al. 2021, Bayesian Anal. 16, 667; arXiv:1903.08008) and, for emcee,
    its own rule of a run at least ``AUTOCORR_TIMES_MIN`` autocorrelation times long."""
    problems = []
    if not summary["max_rhat"] <= RHAT_MAX:  # NaN counts as a problem too
        problems.append(f"R-hat > {RHAT_MAX}")
    if not min(summary["min_ess_bulk"], summary["min_ess_tail"]) >= ESS_MIN:
        problems.append(f"ESS < {ESS_MIN}")
    if summary["n_divergent"]:
        problems.append(f"{summary['n_divergent']} divergences")
    tau = samples.info.get("autocorr_time")
    if tau is not None:
        need = AUTOCORR_TIMES_MIN * float(np.max(tau))
        if not samples.n_draws >= need:
            problems.append(f"{samples.n_draws} steps < {AUTOCORR_TIMES_MIN} tau = {need:.0f}")
    if not problems:
        return "converged"
    return "NOT converged (" + "; ".join(problems) + "): run it longer"


def _sampler_summary(samples, truth: dict) -> dict:
    table = samples.summary(warn=False)
    rhat, ess_bulk, ess_tail = samples.rhat(), samples.ess("bulk"), samples.ess("tail")
    mean, std = samples.mean(), samples.std()
    return {
        "wall_time_s": samples.info.get("wall_time"),
        "n_divergent": int(samples.n_divergent),
        "max_rhat": float(rhat.max()),
        "min_ess_bulk": float(ess_bulk.min()),
        "min_ess_tail": float(ess_tail.min()),
        "parameters": [
            {"name": n, "mean": float(m), "sd": float(sd), "rhat": float(r),
             "ess_bulk": float(eb), "ess_tail": float(et), "truth": truth[n]}
            for n, m, sd, r, eb, et in zip(samples.names, mean, std, rhat, ess_bulk, ess_tail)
        ],
        "table": table.to_string() if hasattr(table, "to_string") else str(table),
    }


def run_demo(outdir: str | Path = "skyfit-demo", seed: int = 0, progress: bool = True,
             samplers: str | None = "full") -> dict:
    """The main job: simulate, fit in three steps, sample the final posterior (emcee and NUTS,
    unless ``samplers=None``; ``"quick"`` for a short smoke run), report, and write figures and
    summary.json."""
    from . import plots  # matplotlib only when plotting

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
    post, modules = supernova_light_curve_model(data)
    res = fit_map(post)
    lap = laplace(post, res.x)
    post.set(res.x)
    log(f"      converged={res.converged} after {res.n_evals} evaluations "
        f"({res.wall_time:.1f} s); Newton decrement {res.newton_decrement:.1e}")
    log(lap.table(data.truth))

    def peak_time(x):  # a derived quantity, with its error by the delta method
        return post.unpack(x)["lightcurve.t0"]

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
    pulls = [(p["value"] - p["truth"]) / p["uncertainty"] for p in summary["parameters"]]
    summary["max_abs_pull"] = max(abs(p) for p in pulls)
    _, t0_var = lap.propagate(peak_time)
    log(f"      peak time t0 = {res.values['lightcurve.t0']:.3f} +- "
        f"{math.sqrt(t0_var.item()):.3f} d (truth {LIGHT_CURVE_TRUTH['t0']})")

    runs = {}
    if samplers is None:
        log("[5/5] sampling skipped (samplers=None)")
    else:
        log("[5/5] sampling the posterior with emcee and batched NUTS (started from Laplace)")
        runs = _sample(post, lap, SAMPLER_SETTINGS[samplers], seed, progress, log)
        summary["samplers"] = {k: _sampler_summary(v, data.truth) for k, v in runs.items()}
        for k, v in summary["samplers"].items():
            v["verdict"] = _verdict(runs[k], v)
            log(f"      {k:6s} max R-hat {v['max_rhat']:.3f}, min ESS bulk "
                f"{v['min_ess_bulk']:.0f} / tail {v['min_ess_tail']:.0f}, "
                f"{v['n_divergent']} divergences: {v['verdict']}")
        log(summary["samplers"]["nuts"]["table"])

    with torch.no_grad():
        model_images = modules["scene"]()
        sigma = data.noise.variance(model_images).sqrt()
    t_fine = torch.linspace(data.times.min() - 2, data.times.max() + 2, 200, dtype=post.dtype)

    def curve(x):  # light curve at t_fine as a function of the parameter vector
        p = post.unpack(x)
        return gaussian_light_curve(t_fine, p["lightcurve.t0"], p["lightcurve.sigma"],
                                    p["lightcurve.peak_flux"])

    fit_curve, curve_cov = lap.propagate(curve)
    curve_err = curve_cov.diagonal().clamp(min=0).sqrt()
    true_curve = gaussian_light_curve(t_fine, **LIGHT_CURVE_TRUTH)
    files = [
        plots.save(plots.plot_image_stack(
            data.images, model_images, sigma, extent=data.grid.extent,
            titles=[f"t = {t:+.1f} d" for t in data.times.tolist()]), out / "images.png"),
        plots.save(plots.plot_light_curve(
            data.times, points={"each image alone": single, "joint, linked position": joint},
            curve=(t_fine, fit_curve, curve_err), truth=(t_fine, true_curve)),
            out / "light_curve.png"),
        plots.save_model_graph(post.likelihood, out / "model_graph"),
    ]
    truths = [data.truth[n] for n in post.names]
    for name, samples in runs.items():
        files.append(plots.save(samples.corner(truths=truths), out / f"corner_{name}.png"))
        samples.save(out / f"chains_{name}.h5")
        files.append(out / f"chains_{name}.h5")
    summary["files"] = [str(f) for f in files if f is not None]
    summary["wall_time_s"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {', '.join(summary['files'])} and {out / 'summary.json'} "
        f"in {summary['wall_time_s']:.1f} s")
    return summary
