"""Hard fits (issue 14.7): success rate and median wall time per success of skyfit's fit_map
(defaults) against scipy L-BFGS-B with numerical gradients (same
parametrisation, box bounds) and scipy ``differential_evolution``, on four problems:

(a) a quad-lens image (SIE + external shear, Sersic source) from starts drawn from broad priors;
(b) a Sersic host with the true angle at 0.02 rad, starts at any angle;
(c) a two-band Villar light curve with t0 unknown within +-30 days;
(d) the seed-style supernova joint model (benchmarks/problems.py) from starts 20% off.

A run succeeds if its final log p is within 1 of the best known and every parameter is within 3
sigma (Laplace at the best known point; angles compared on the circle) of the truth.
Metric: the lowest skyfit success rate over the problems (target >= 0.95).

Sizes: full mode runs 20 starts for skyfit and L-BFGS-B (``SKYFIT_HARD_FITS_STARTS`` overrides)
and differential_evolution with scipy's documented defaults (popsize 15, tol 0.01, maxiter 1000,
L-BFGS-B polish) on 5 seeds (``SKYFIT_HARD_FITS_DE_SEEDS``): DE is a global method that ignores
the start, so more seeds measure the same thing again at hours of cost. Every method is warmed up
once (imports, first-call set-up) before it is timed. The rows ``hard_fits_a`` ... ``hard_fits_d``
run one problem each (one per process keeps a run bounded); their status is ``ok`` only if both
targets are met: skyfit success >= 0.95 and median time <= 1/5 of the best baseline that reaches
skyfit's success rate.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from harness import Benchmark

import skyfit
from skyfit.inference import fit_map, laplace
from skyfit.lens_start import init_to_lensed_image


def quad_lens(quick: bool, n: int) -> SimpleNamespace:
    shape, scale = ((30, 30), 0.1) if quick else ((60, 60), 0.05)
    grid = skyfit.PixelGrid(shape, scale, supersample=2)
    truth = dict(lens=dict(theta_E=1.1, q=0.75, phi=0.6), shear=dict(gamma1=0.03, gamma2=-0.02),
                 src=dict(x0=0.05, y0=0.03, q=0.7, phi=1.2, n=1.5, Re=0.15, flux=3.0))

    def build():
        lens = skyfit.SIE("lens", **truth["lens"])
        shear = skyfit.ExternalShear("shear", **truth["shear"])
        src = skyfit.Sersic("src", **truth["src"])
        sim = skyfit.LensedImage(grid, skyfit.CompositeLens([lens, shear]), [src],
                                 psf=skyfit.GaussianPSF(sigma=0.1, size=7))
        return sim, (lens.theta_E, lens.q, lens.phi, shear.gamma1, shear.gamma2, src)
    sim, _ = build()
    with torch.no_grad():
        image = sim() + 0.03 * torch.randn(shape, generator=torch.Generator().manual_seed(0),
                                           dtype=torch.float64)
    sim, free = build()
    for p in free:
        p.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(sim, image, variance=0.03**2))
    # fit_map's documented call for a lens image: the user's start and the image's own start
    candidates = [init_to_lensed_image(sim, image, variance=0.03**2)]
    boxes = {"lens.theta_E": (0.5, 2.0), "lens.q": (0.3, 1.0), "lens.phi": (0.0, math.pi),
             "shear.gamma1": (-0.1, 0.1), "shear.gamma2": (-0.1, 0.1), "src.x0": (-0.3, 0.3),
             "src.y0": (-0.3, 0.3), "src.q": (0.3, 1.0), "src.phi": (0.0, math.pi),
             "src.n": (0.5, 4.0), "src.Re": (0.05, 0.5), "src.flux": (1.0, 9.0)}
    return _problem("a quad lens", post, boxes, n, candidates=candidates)


def sersic_host(quick: bool, n: int) -> SimpleNamespace:
    size = 32 if quick else 64
    grid = skyfit.PixelGrid((size, size), 0.05)
    truth = dict(x0=0.0, y0=0.0, q=0.65, phi=0.02, n=1.5, Re=0.35, flux=300.0)
    with torch.no_grad():
        image = skyfit.Scene(grid, [skyfit.Sersic(**truth)])() + 0.2 * torch.randn(
            size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    host = skyfit.Sersic("host", **truth)
    host.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(skyfit.Scene(grid, [host]), image,
                                                      variance=0.04))
    boxes = {"host.x0": (-0.1, 0.1), "host.y0": (-0.1, 0.1), "host.q": (0.3, 1.0),
             "host.phi": (0.0, math.pi), "host.n": (0.7, 4.0), "host.Re": (0.2, 0.6),
             "host.flux": (150.0, 600.0)}
    return _problem("b sersic angle 0.02", post, boxes, n)


def villar_two_band(quick: bool, n: int) -> SimpleNamespace:
    truth = dict(t0=5.0, A=[10.0, 8.0], beta=[-0.05, -0.04], gamma=20.0, tau_rise=[3.0, 4.0],
                 tau_fall=[25.0, 30.0])
    kw = dict(bands=["g", "r"], shared=("t0", "gamma"))
    t = torch.arange(-40.0, 120.0, 4.0 if quick else 2.0, dtype=torch.float64).repeat(2)
    band = torch.arange(2).repeat_interleave(t.shape[0] // 2)
    with torch.no_grad():
        flux = skyfit.Villar(**truth, **kw).flux(t, band)
    flux = flux + 0.3 * torch.randn(flux.shape, generator=torch.Generator().manual_seed(2),
                                    dtype=torch.float64)
    lc = skyfit.Villar("sn", **truth, **kw)
    lc.to_dynamic()
    post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, 0.3 * torch.ones_like(t),
                                                        band=band))
    boxes = {"sn.t0": (-25.0, 35.0)}  # the rest starts 20% off the truth
    return _problem("c villar t0 +-30 d", post, boxes, n, frac=0.2)


def supernova_joint(quick: bool, n: int) -> SimpleNamespace:
    from problems import supernova
    post, data = supernova(0)
    truth = torch.tensor([data.truth[k] for k in post.names], dtype=torch.float64)
    return _problem("d supernova joint", post, {}, n, frac=0.2, truth=truth)


def _problem(name, post, boxes, n, frac=0.0, truth=None, candidates=()) -> SimpleNamespace:
    truth = post.initial() if truth is None else truth
    g = np.random.default_rng(7)
    starts = []
    for _ in range(n):
        x = truth.clone()
        for i, k in enumerate(post.names):
            x[i] = g.uniform(*boxes[k]) if k in boxes else x[i] * (1 + frac * g.uniform(-1, 1))
        starts.append(torch.minimum(torch.maximum(x, post.lower + 1e-6), post.upper - 1e-6))
    lo = [boxes[k][0] if k in boxes else min(v * (1 - frac), v * (1 + frac)) - 1e-3
          for k, v in zip(post.names, truth.tolist())]
    hi = [boxes[k][1] if k in boxes else max(v * (1 - frac), v * (1 + frac)) + 1e-3
          for k, v in zip(post.names, truth.tolist())]
    box = [(max(a, float(lw)), min(b, float(up))) for a, b, lw, up in
           zip(lo, hi, post.lower.tolist(), post.upper.tolist())]
    return SimpleNamespace(name=name, post=post, truth=truth, starts=starts, box=box,
                           candidates=list(candidates))


def _negative_log_p(post):
    def f(x):
        with torch.no_grad():
            v = float(post(torch.as_tensor(x, dtype=torch.float64)))
        return -v if math.isfinite(v) else 1e300
    return f


def _run_skyfit(p, x0, seed, quick):
    # fit_map's defaults: one start, ellipses in (e1, e2), angles periodic, Newton polish.
    # Multi-start (starts=8, broad-prior draws) cost 15-50x the time on (b) and gained nothing
    # there: every single start already reached the global optimum. (a): fit_map's documented
    # call for a lens image, candidates=[init_to_lensed_image(...)] (a start read off the image,
    # fitted beside x0; the higher log p wins). The model's values are set to x0 first, so the
    # strategy's "parameters the image does not tell keep initial()" is x0, never the truth
    # (here it tells all 12)
    p.post.set(x0)
    return fit_map(p.post, x0, candidates=p.candidates).x


def _warm_up(p):
    """One untimed call of each method's machinery (imports, torch.func's first Hessian, scipy's
    first minimize), so no method's first timed run pays the process's one-time set-up."""
    from scipy.optimize import differential_evolution, minimize
    fit_map(p.post, p.starts[0], maxiter=2, retries=0)
    start = np.clip(p.starts[0].numpy(), [a for a, _ in p.box], [b for _, b in p.box])
    minimize(_negative_log_p(p.post), start, method="L-BFGS-B", bounds=p.box,
             options=dict(maxiter=2))
    differential_evolution(_negative_log_p(p.post), p.box, popsize=1, maxiter=1, polish=False,
                           seed=0)


def _run_lbfgsb(p, x0, seed, quick):
    from scipy.optimize import minimize
    start = np.clip(x0.numpy(), [a for a, _ in p.box], [b for _, b in p.box])
    return torch.tensor(minimize(_negative_log_p(p.post), start, method="L-BFGS-B",
                                 bounds=p.box).x)  # jac=None: 2-point numerical gradient


def _run_de(p, x0, seed, quick):
    from scipy.optimize import differential_evolution
    # full mode: scipy's documented defaults (popsize 15, tol 0.01, maxiter 1000, then an
    # L-BFGS-B polish of the best member); quick mode: a token run (a small population for a few
    # generations), not a fair baseline
    # SKYFIT_HARD_FITS_DE_TOL / _DE_MAXITER: a stricter run (e.g. 1e-8 and 300, the setting of
    # earlier rows), where the default tol (1% of the mean energy) stops DE too early to succeed
    kw = dict(popsize=5, maxiter=5) if quick else dict(
        tol=float(os.environ.get("SKYFIT_HARD_FITS_DE_TOL", 0.01)),
        maxiter=int(os.environ.get("SKYFIT_HARD_FITS_DE_MAXITER", 1000)))
    return torch.tensor(differential_evolution(_negative_log_p(p.post), p.box, seed=seed,
                                               **kw).x)


METHODS = {"skyfit": _run_skyfit, "lbfgsb_numgrad": _run_lbfgsb, "diff_evolution": _run_de}


def _judge(p, results):
    """Success flags per method: log p within 1 of the best known, within 3 sigma of truth."""
    ref = fit_map(p.post, p.truth, starts=1)
    sigma = laplace(p.post, ref).std
    logp = {m: [float(p.post(x)) for x, _ in runs] for m, runs in results.items()}
    best = max([ref.log_density] + [v for vs in logp.values() for v in vs if math.isfinite(v)])
    period = torch.where(p.post.periodic, p.post.upper - p.post.lower, torch.inf)
    flags = {}
    for m, runs in results.items():
        flags[m] = []
        for (x, _), v in zip(runs, logp[m]):
            d = x - p.truth
            wrapped = torch.remainder(d + period / 2, period) - period / 2
            d = torch.where(p.post.periodic, wrapped, d)
            near = bool(((d / sigma).abs() <= 3.0).all())
            flags[m].append(v >= best - 1.0 and near)
    return flags


def _selected_methods() -> dict:
    """``SKYFIT_HARD_FITS_METHODS`` (comma-separated names of METHODS; default all): run only
    these, e.g. the hour-long baselines in one process and skyfit in another; ``none``: run
    nothing, judge the runs merged from files (``SKYFIT_HARD_FITS_MERGE``)."""
    names = os.environ.get("SKYFIT_HARD_FITS_METHODS")
    if not names:
        return METHODS
    if names == "none":  # judge only what SKYFIT_HARD_FITS_MERGE brings
        return {}
    unknown = set(names.split(",")) - set(METHODS)
    if unknown:
        raise ValueError(f"SKYFIT_HARD_FITS_METHODS names {sorted(unknown)}; have {list(METHODS)}")
    return {m: METHODS[m] for m in names.split(",")}


def _save_raw(p, results) -> None:
    """``SKYFIT_HARD_FITS_SAVE=path.json``: write every run's end point and wall time, so that
    runs made in separate processes (``SKYFIT_HARD_FITS_MERGE``) are judged together."""
    path = os.environ.get("SKYFIT_HARD_FITS_SAVE")
    if path:
        raw = {m: [(x.tolist(), t) for x, t in runs] for m, runs in results.items()}
        with open(path, "w") as f:
            json.dump(dict(problem=p.name, load=os.getloadavg(), results=raw), f)


def _merge_raw(p, results) -> None:
    """``SKYFIT_HARD_FITS_MERGE=a.json[,b.json]``: add the methods saved by another process on the
    same problem and starts (methods run in this process take precedence; a saved run cut short
    counts only the starts it finished)."""
    for path in filter(None, os.environ.get("SKYFIT_HARD_FITS_MERGE", "").split(",")):
        with open(path) as f:
            saved = json.load(f)
        if saved["problem"] != p.name:
            raise ValueError(f"{path} holds problem {saved['problem']!r}, not {p.name!r}")
        for m, runs in saved["results"].items():
            if not results.get(m):
                results[m] = [(torch.tensor(x, dtype=torch.float64), t) for x, t in runs]


def _solve(p, quick, de_seeds):
    methods = _selected_methods()
    results = {m: [] for m in methods}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _warm_up(p)
    for i, x0 in enumerate(p.starts):
        for m, run in methods.items():
            if m == "diff_evolution" and i >= de_seeds:
                continue
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = run(p, x0, i, quick)
            results[m].append((x.to(torch.float64), time.perf_counter() - t))
            print(f"  {p.name} {m} start {i}: {time.perf_counter() - t:.1f} s, log p "
                  f"{float(p.post(x.to(torch.float64))):.2f}", flush=True)
            _save_raw(p, results)  # after every run: a run cut short keeps what it finished
    _merge_raw(p, results)
    results = {m: runs for m, runs in results.items() if runs}  # a method cut before its first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flags = _judge(p, results)
    row = {}
    for m, runs in results.items():
        times = [t for (_, t), ok in zip(runs, flags[m]) if ok]
        row[m] = (sum(flags[m]) / len(runs), statistics.median(times) if times else math.inf,
                  len(runs))
        print(f"  {p.name} {m}: " + ", ".join(f"{i} {'ok' if ok else 'FAIL'} {t:.0f} s"
                                          for i, ((_, t), ok) in enumerate(zip(runs, flags[m]))),
              flush=True)
    return row


BUILDERS = {"a": quad_lens, "b": sersic_host, "c": villar_two_band, "d": supernova_joint}


def _sizes(quick: bool) -> tuple[int, int]:
    """(starts for skyfit and L-BFGS-B, seeds of differential_evolution)."""
    if quick:
        return 2, 2
    return (int(os.environ.get("SKYFIT_HARD_FITS_STARTS", 20)),
            int(os.environ.get("SKYFIT_HARD_FITS_DE_SEEDS", 5)))


def _time_ratio(row) -> float:
    """skyfit's median time over the best baseline's that reaches skyfit's success rate (inf if
    none does: then no baseline is a rival at the same success)."""
    if "skyfit" not in row:  # a baselines-only run (SKYFIT_HARD_FITS_METHODS)
        return math.nan
    rivals = [t for m, (rate, t, _) in row.items() if m != "skyfit" and rate >= row["skyfit"][0]]
    return row["skyfit"][1] / min(rivals) if rivals else math.nan


def _problem_details(p, row, quick) -> dict:
    details = {f"{p.name}: {m}": f"{rate:.2f} success of {runs}, {t:.3g} s median per success"
               for m, (rate, t, runs) in row.items()}
    ratio = _time_ratio(row)
    details[f"{p.name}: time ratio"] = (
        f"{ratio:.3g} (target <= 0.2: {'ok' if ratio <= 0.2 else 'short'})"
        if math.isfinite(ratio) else "no baseline reaches skyfit's success rate")
    details["load"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    details["DE settings"] = ("token run" if quick else
                              f"popsize 15, tol {os.environ.get('SKYFIT_HARD_FITS_DE_TOL', 0.01)}"
                              f", maxiter {os.environ.get('SKYFIT_HARD_FITS_DE_MAXITER', 1000)}, "
                              "polish")
    return details


def run(quick: bool, letters: str = "bcda"):
    n, de_seeds = _sizes(quick)
    details, worst = {}, 1.0
    for letter in letters:
        p = BUILDERS[letter](quick, n)
        row = _solve(p, quick, de_seeds)
        details.update(_problem_details(p, row, quick))
        worst = min(worst, row.get("skyfit", (math.nan,))[0])
    return worst, details


class HardFit(Benchmark):
    """One problem per row: ``ok`` only if skyfit's success rate is >= 0.95 AND its median time
    is <= 1/5 of the best baseline at the same success rate (no rival at that rate counts as
    met: every baseline succeeds less often)."""

    time_ratio: float = math.nan

    def status(self, value: float, spread=None) -> str:
        time_ok = not math.isfinite(self.time_ratio) or self.time_ratio <= 0.2
        return "ok" if self.passes(value) and time_ok else "short"


def _one(letter: str) -> HardFit:
    bench = HardFit(f"hard_fits_{letter}", "skyfit_success_rate", ">=", 0.95, lambda q: None,
                    f"issue 14.7 problem ({letter}) alone: skyfit vs scipy L-BFGS-B (numerical "
                    "gradient) and differential_evolution; ok = success >= 0.95 and time ratio "
                    "<= 0.2")

    def fn(quick: bool):
        n, de_seeds = _sizes(quick)
        p = BUILDERS[letter](quick, n)
        row = _solve(p, quick, de_seeds)
        bench.time_ratio = _time_ratio(row)
        details = _problem_details(p, row, quick)
        for key, value in details.items():
            print(f"  {key}: {value}", flush=True)
        return row.get("skyfit", (math.nan,))[0], details

    bench.fn = fn
    return bench


BENCHMARKS = [Benchmark("hard_fits", "min_skyfit_success_rate", ">=", 0.95, run,
                        "issue 14.7: hard fits, skyfit vs scipy L-BFGS-B (numerical gradient) "
                        "and differential_evolution")] + [_one(k) for k in "abcd"]
