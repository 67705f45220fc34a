"""Sampler benchmarks: effective samples per wall second of skyfit's batched NUTS vs emcee / Pyro.

ESS is ArviZ's rank-normalised ESS, the minimum of bulk and tail over parameters; time is the
wall time of the whole run, warm-up (NUTS) or burn-in (emcee) included, in the same process on
the same machine. The MAP and its Laplace approximation are found once (not timed) and the
samplers get the same start: skyfit NUTS and emcee start from draws of the Laplace Gaussian (and
skyfit's dense metric from its covariance), Pyro from the MAP with a dense mass matrix adapted by
its own warm-up. emcee: a plain ``EnsembleSampler(vectorize=True)`` over the same batched torch
log-density, walkers as chains for ArviZ, no thinning (walkers are not independent chains, so
this ESS flatters emcee a little), run with 32 and with 256 walkers for the same number of draws
(bigger batches amortise the per-call cost): its better ESS/s is the baseline. Pyro: the same
model written natively in Pyro (uniform priors on the valid ranges, Gaussian likelihood),
``NUTS(jit_compile=True, full_mass=True)``, one chain of 1000 warm-up iterations and 1000 draws
(Stan's defaults).
"""

from __future__ import annotations

import time

import caskade as ck
import numpy as np
import torch
from harness import Benchmark

from skyfit import GaussianLikelihood, Posterior
from skyfit.inference import fit_map, laplace, sample_nuts
from skyfit.params import Param


def ess_min(draws: np.ndarray) -> float:
    """min over parameters of min(bulk ESS, tail ESS); ``draws (chain, draw, parameter)``."""
    import arviz as az

    ds = az.convert_to_dataset(np.asarray(draws))
    bulk = az.ess(ds, method="bulk")["x"].values
    tail = az.ess(ds, method="tail")["x"].values
    return float(min(bulk.min(), tail.min()))


class BumpOnLine(ck.Module):
    """A Gaussian bump on a linear baseline, ``y(t) = a exp(-(t - t0)^2 / 2 w^2) + b + c t``."""

    def __init__(self, t, name="bump"):
        super().__init__(name)
        self.t = t
        self.amplitude = Param("amplitude", 2.0, valid=(0, 20), units="flux",
                               description="height of the bump")
        self.center = Param("center", 0.3, valid=(-5, 5), units="day", description="bump centre")
        self.width = Param("width", 0.8, valid=(0.05, 5), units="day", description="bump sigma")
        self.intercept = Param("intercept", 1.0, valid=(-10, 10), units="flux",
                               description="baseline at t = 0")
        self.slope = Param("slope", 0.2, valid=(-5, 5), units="flux/day",
                           description="baseline slope")

    @ck.forward
    def __call__(self, amplitude=None, center=None, width=None, intercept=None, slope=None):
        bump = amplitude * torch.exp(-0.5 * ((self.t - center) / width) ** 2)
        return bump + intercept + slope * self.t


def bump_problem(seed: int = 0):
    """The 5-parameter bump + line fit to 50 points with Gaussian errors 0.3."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-5, 5, 50, dtype=torch.float64)
    model = BumpOnLine(t)
    clean = model().detach()
    data = clean + 0.3 * torch.randn(50, generator=g, dtype=torch.float64)
    model.to_dynamic()
    post = Posterior(GaussianLikelihood(model, data, variance=torch.full_like(data, 0.09)))
    return post


def gauss10():
    """The 10-D correlated Gaussian: AR(0.9) correlation, standard deviations 0.1 to 10."""
    from skyfit.inference import FunctionDensity

    i = torch.arange(10, dtype=torch.float64)
    scales = torch.logspace(-1, 1, 10, dtype=torch.float64)
    cov = 0.9 ** (i[:, None] - i[None, :]).abs() * scales[:, None] * scales[None, :]
    prec = torch.linalg.inv(cov)
    return FunctionDensity(lambda x: -0.5 * ((x - i) @ prec * (x - i)).sum(-1), 10)


def start_point(density):
    """MAP and Laplace approximation (the common start of every sampler; not timed)."""
    x0 = density.initial() if hasattr(density, "initial") else torch.zeros(density.dim,
                                                                             dtype=density.dtype)
    res = fit_map(density, x0)
    return res.x, laplace(density, res.x)


def run_nuts(density, lap, n_chains, n_warmup, n_draws, mass="diag", seed=0):
    t = time.perf_counter()
    s = sample_nuts(density, init=lap, n_chains=n_chains, n_warmup=n_warmup, n_draws=n_draws,
                    mass=mass, seed=seed, progress=False)
    wall = time.perf_counter() - t
    return ess_min(s.draws), wall, s


def run_emcee(density, x_map, cov, n_steps, burn, n_walkers=32, seed=0):
    import emcee

    n_walkers = max(n_walkers, 2 * density.dim)
    rng = np.random.default_rng(seed)
    x_map = np.asarray(x_map, dtype=float)
    lo, hi = density.lower.numpy(), density.upper.numpy()
    # draws of the Laplace Gaussian: the start skyfit's NUTS gets too
    chol = np.linalg.cholesky(np.asarray(cov, dtype=float))
    p0 = x_map + rng.standard_normal((n_walkers, density.dim)) @ chol.T
    with np.errstate(invalid="ignore"):  # open bounds stay open
        lo = np.where(np.isfinite(lo), lo + 1e-9 * (1 + np.abs(lo)), -np.inf)
        hi = np.where(np.isfinite(hi), hi - 1e-9 * (1 + np.abs(hi)), np.inf)
    p0 = np.clip(p0, lo, hi)

    def log_prob(x):
        with torch.no_grad():
            return density(torch.as_tensor(x, dtype=density.dtype)).numpy()

    t = time.perf_counter()
    sampler = emcee.EnsembleSampler(n_walkers, density.dim, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(p0, burn + n_steps, progress=False, skip_initial_state_check=True)
    wall = time.perf_counter() - t
    chain = sampler.get_chain(discard=burn)  # (step, walker, dim)
    return ess_min(chain.transpose(1, 0, 2)), wall


def run_pyro_bump(post, x_map, n_warmup, n_draws, seed=0):
    """Pyro's NUTS on the bump problem written as a native Pyro model (what a Pyro user would
    write): uniform priors on the Params' valid ranges (skyfit's default priors) and the Gaussian
    likelihood, compiled with ``jit_compile=True``, dense mass matrix, started at the MAP."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    model_module = post.likelihood.model
    t, data = model_module.t, post.likelihood.data
    sigma = post.likelihood.variance.sqrt()
    names = [n.split(".")[1] for n in post.names]
    bounds = {n: (post.lower[i].item(), post.upper[i].item()) for i, n in enumerate(names)}
    f64 = dict(dtype=torch.float64)

    def model():
        p = {n: pyro.sample(n, dist.Uniform(torch.tensor(lo, **f64), torch.tensor(hi, **f64)))
             for n, (lo, hi) in bounds.items()}
        mean = (p["amplitude"] * torch.exp(-0.5 * ((t - p["center"]) / p["width"]) ** 2)
                + p["intercept"] + p["slope"] * t)
        pyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=data)

    # the same density as skyfit's posterior (a check that both sample the same thing)
    values = dict(zip(names, torch.as_tensor(x_map, **f64)))
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace()
    if abs(trace.log_prob_sum().item() - post(torch.as_tensor(x_map, **f64)).item()) > 1e-8:
        raise RuntimeError("the Pyro model's log-density differs from skyfit's posterior")

    pyro.set_rng_seed(seed)
    kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True, full_mass=True,
                  init_strategy=init_to_value(values=values))
    t0 = time.perf_counter()
    mcmc = MCMC(kernel, num_samples=n_draws, warmup_steps=n_warmup, disable_progbar=True)
    mcmc.run()
    wall = time.perf_counter() - t0
    samples = mcmc.get_samples()
    x = np.stack([samples[n].numpy() for n in names], axis=-1)[None]
    return ess_min(x), wall, bool(kernel._jit_compile)


def _details(nuts_ess, nuts_wall, s, **other):
    d = dict(nuts_ess=round(nuts_ess), nuts_wall_s=round(nuts_wall, 2),
             nuts_ess_per_s=round(nuts_ess / nuts_wall, 1), nuts_chains=s.n_chains,
             nuts_draws=s.n_draws, nuts_warmup=s.info["n_warmup"],
             nuts_divergent=s.info["n_divergent"],
             nuts_lockstep_waste=round(s.info["lockstep_waste"], 3),
             nuts_grad_evals=s.info["n_gradient_evals"])
    d.update(other)
    return d


def nuts_vs_emcee(density, quick, mass="dense", chains=512, warmup=150, draws=200,
                  emcee_steps=4000, emcee_burn=1000, walker_counts=(32, 256)):
    if quick:
        chains, warmup, draws, emcee_steps, emcee_burn = 64, 100, 100, 1000, 300
    x_map, lap = start_point(density)
    ess_n, wall_n, s = run_nuts(density, lap, chains, warmup, draws, mass=mass)
    runs = {}
    for walkers in walker_counts:
        # the same number of kept draws; burn-in in steps (autocorrelation times are in steps)
        steps = max(emcee_steps * 32 // walkers, 50)
        runs[walkers] = (*run_emcee(density, x_map, lap.covariance, steps, emcee_burn, walkers),
                         steps)
    walkers = max(runs, key=lambda w: runs[w][0] / runs[w][1])
    ess_e, wall_e, steps = runs[walkers]
    ratio = (ess_n / wall_n) / (ess_e / wall_e)
    tried = {f"emcee_ess_per_s_{w}_walkers": round(r[0] / r[1], 1) for w, r in runs.items()}
    return ratio, _details(ess_n, wall_n, s, emcee_ess=round(ess_e), emcee_wall_s=round(wall_e, 2),
                           emcee_ess_per_s=round(ess_e / wall_e, 1), emcee_walkers=walkers,
                           emcee_steps=steps, emcee_burn=emcee_burn, **tried)


def nuts_vs_emcee_bump(quick: bool):
    return nuts_vs_emcee(bump_problem(), quick, warmup=100, draws=300)


def nuts_vs_emcee_gauss10(quick: bool):
    # a Gaussian: the Laplace start is exact, so a short warm-up suffices
    return nuts_vs_emcee(gauss10(), quick, mass="dense", warmup=100, draws=300,
                         emcee_steps=6000, emcee_burn=2000)


def nuts_vs_pyro_bump(quick: bool):
    chains, warmup, draws = (64, 100, 100) if quick else (512, 100, 300)
    post = bump_problem()
    x_map, lap = start_point(post)
    ess_n, wall_n, s = run_nuts(post, lap, chains, warmup, draws, mass="dense")
    # Pyro gets Stan's default-length run: its one chain needs the warm-up
    p_warmup, p_draws = (100, 100) if quick else (1000, 1000)
    ess_p, wall_p, jit = run_pyro_bump(post, x_map, p_warmup, p_draws)
    ratio = (ess_n / wall_n) / (ess_p / wall_p)
    return ratio, _details(ess_n, wall_n, s, pyro_ess=round(ess_p), pyro_wall_s=round(wall_p, 2),
                           pyro_ess_per_s=round(ess_p / wall_p, 1), pyro_jit=jit,
                           pyro_warmup=p_warmup, pyro_draws=p_draws)


def nuts_vs_emcee_lightcurve(quick: bool):
    from problems import supernova_problem

    post, _ = supernova_problem(3)
    # the image model costs ~7 ms per chain and gradient: few chains, short runs
    if quick:
        return nuts_vs_emcee(post, False, chains=4, warmup=20, draws=20, emcee_steps=60,
                             emcee_burn=20)
    # one walker count: each emcee step costs a batch of image models (256 walkers would take
    # minutes); the image model is expensive enough that 16-point batches are not overhead-bound
    return nuts_vs_emcee(post, False, chains=16, warmup=100, draws=150, emcee_steps=1500,
                         emcee_burn=500, walker_counts=(32,))


BENCHMARKS = [
    Benchmark("nuts_vs_emcee_bump", "ess_per_s_ratio", ">=", 8, nuts_vs_emcee_bump,
              "batched NUTS vs emcee, 5-parameter bump + line (caskade model), ESS/s"),
    Benchmark("nuts_vs_emcee_gauss10", "ess_per_s_ratio", ">=", 10, nuts_vs_emcee_gauss10,
              "batched NUTS (dense mass) vs emcee, 10-D AR(0.9) Gaussian, ESS/s"),
    Benchmark("nuts_vs_pyro_bump", "ess_per_s_ratio", ">=", 40, nuts_vs_pyro_bump,
              "batched NUTS vs Pyro NUTS (one chain), 5-parameter bump + line, ESS/s"),
    Benchmark("nuts_vs_emcee_lightcurve", "ess_per_s_ratio", ">=", 5, nuts_vs_emcee_lightcurve,
              "batched NUTS vs emcee, seed-003 light-curve image model (12 parameters), ESS/s"),
]
