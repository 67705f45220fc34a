"""Samplers run as their experts run them, and one set of diagnostics for all of them.

ESS is ArviZ's rank-normalised bulk ESS (``skyfit.inference.diagnostics.ess``, Vehtari et al.
2021), the minimum over parameters, and R-hat its rank-normalised split R-hat, the maximum over
parameters: the same functions on every sampler's draws shaped ``(chain, draw, parameter)``.
emcee's walkers go in as the chains (as ``arviz.from_emcee`` does): walkers of one ensemble are
not independent, so this R-hat is a within-ensemble check; emcee's own integrated
autocorrelation time is reported alongside (``emcee_ess_from_tau = steps * walkers / tau``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from skyfit.inference import fit_map, laplace, sample_nuts
from skyfit.inference.diagnostics import ess, rhat


def diagnostics(draws: np.ndarray) -> tuple[float, float]:
    """``(min bulk ESS, max R-hat)`` over parameters of ``draws (chain, draw, parameter)``."""
    draws = np.asarray(draws, dtype=np.float64)
    return float(np.min(ess(draws, "bulk"))), float(np.max(rhat(draws)))


# ----------------------------------------------------------------------------------- skyfit


def skyfit_start(density):
    """MAP and Laplace approximation: skyfit NUTS's start (its time is counted in skyfit's)."""
    try:  # a Posterior has a natural start; a bare FunctionDensity does not
        x0 = density.initial()
    except NotImplementedError:
        x0 = torch.zeros(density.dim, dtype=density.dtype)
    return laplace(density, fit_map(density, x0).x)


def run_skyfit_nuts(density, n_chains, n_warmup, n_draws, mass="dense", seed=0) -> dict:
    """Laplace start + batched NUTS, all timed."""
    t = time.perf_counter()
    lap = skyfit_start(density)
    t_start = time.perf_counter() - t
    s = sample_nuts(density, init=lap, n_chains=n_chains, n_warmup=n_warmup, n_draws=n_draws,
                    mass=mass, seed=seed, progress=False)
    wall = time.perf_counter() - t
    e, r = diagnostics(s.draws)
    return dict(ess=e, rhat=r, wall=wall, start_s=t_start, chains=n_chains, warmup=n_warmup,
                draws=n_draws, divergent=int(s.info["n_divergent"]), lap=lap)


# ------------------------------------------------------------------------------------ emcee

MOVES = {  # name: emcee moves (built lazily: emcee is imported by the runner)
    "stretch": lambda m: m.StretchMove(),
    "de_snooker": lambda m: [(m.DEMove(), 0.8), (m.DESnookerMove(), 0.2)],
    "de_stretch": lambda m: [(m.DEMove(), 0.8), (m.StretchMove(), 0.2)],
}


def laplace_walkers(lap, n_walkers, lower, upper, seed) -> np.ndarray:
    """Draws of the Laplace Gaussian (the start NUTS gets), kept inside the bounds."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(lap.mean, dtype=float)
    chol = np.linalg.cholesky(np.asarray(lap.covariance, dtype=float))
    p0 = mean + rng.standard_normal((n_walkers, mean.size)) @ chol.T
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    with np.errstate(invalid="ignore"):
        lo = np.where(np.isfinite(lo), lo + 1e-9 * (1 + np.abs(lo)), -np.inf)
        hi = np.where(np.isfinite(hi), hi - 1e-9 * (1 + np.abs(hi)), np.inf)
    return np.clip(p0, lo, hi)


class EmceeRun:
    """An ``emcee.EnsembleSampler(vectorize=True)`` run the way its users are told to: run,
    measure the integrated autocorrelation time ``tau``, discard ``BURN_TAUS * tau`` steps,
    keep running until the goal is met."""

    BURN_TAUS = 5

    def __init__(self, log_prob: Callable, p0: np.ndarray, moves: str, seed: int = 0):
        import emcee

        self.sampler = emcee.EnsembleSampler(p0.shape[0], p0.shape[1], log_prob,
                                             vectorize=True, moves=MOVES[moves](emcee.moves))
        self.sampler.random_state = np.random.RandomState(seed).get_state()
        self.state, self.moves, self.wall = p0, moves, 0.0

    def run(self, steps: int) -> None:
        t = time.perf_counter()
        self.state = self.sampler.run_mcmc(self.state, steps, progress=False,
                                           skip_initial_state_check=True)
        self.wall += time.perf_counter() - t

    @property
    def steps(self) -> int:
        return self.sampler.iteration

    def tau(self) -> float:
        return float(np.max(self.sampler.get_autocorr_time(tol=0)))

    def measure(self) -> dict:
        tau = self.tau()
        burn = min(math.ceil(self.BURN_TAUS * tau), self.steps // 2)
        chain = self.sampler.get_chain(discard=burn)  # (step, walker, dim)
        e, r = diagnostics(chain.transpose(1, 0, 2))
        walkers = chain.shape[1]
        return dict(ess=e, rhat=r, wall=self.wall, tau=tau, burn=burn, steps=self.steps,
                    walkers=walkers, moves=self.moves,
                    ess_from_tau=(self.steps - burn) * walkers / tau,
                    acceptance=float(np.mean(self.sampler.acceptance_fraction)))


def run_emcee_to_ess(log_prob, lap, lower, upper, ess_goal, walkers, moves, pilot=300,
                     seed=0) -> dict:
    """Pilot run, then ``5 tau`` of burn-in and as many steps as ``ess_goal`` effective draws
    need by the pilot's ``tau`` (one top-up if ArviZ's ESS falls short); wall time of all."""
    run = EmceeRun(log_prob, laplace_walkers(lap, walkers, lower, upper, seed), moves, seed)
    run.run(pilot)
    for _ in range(3):
        tau = run.tau()
        need = math.ceil(EmceeRun.BURN_TAUS * tau + ess_goal * tau / walkers)
        if need > run.steps:
            run.run(need - run.steps)
        out = run.measure()
        if out["ess"] >= ess_goal:
            break
        run.run(max(run.steps // 2, 100))
    return run.measure()


def run_emcee_to_convergence(log_prob, lap, lower, upper, walkers, moves, ess_min=400,
                             rhat_max=1.01, first=200, grow=1.5, max_wall=600.0,
                             seed=0) -> dict:
    """Run until, after discarding ``5 tau``, every parameter has bulk ESS > ``ess_min`` and
    R-hat (walkers as chains) < ``rhat_max``, checking after chunks growing by ``grow``."""
    run = EmceeRun(log_prob, laplace_walkers(lap, walkers, lower, upper, seed), moves, seed)
    run.run(first)
    while True:
        out = run.measure()
        if (out["ess"] > ess_min and out["rhat"] < rhat_max) or run.wall > max_wall:
            out["converged"] = out["ess"] > ess_min and out["rhat"] < rhat_max
            return out
        run.run(math.ceil(run.steps * (grow - 1)))


# ---------------------------------------------------------------------- NumPyro and Pyro


def run_numpyro_bump(t, y, sigma, bounds, n_chains, n_warmup, n_draws, seed=0) -> dict:
    """NumPyro NUTS (JAX on CPU, float64) on the bump model as its users write it, chains
    vectorised (``chain_method="vectorized"``), default init (``init_to_uniform``), dense
    mass matrix; wall time includes JAX's compile (a fresh MCMC object: one compile per run)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    t, y = jnp.asarray(t), jnp.asarray(y)

    def model():
        p = {n: numpyro.sample(n, dist.Uniform(lo, hi)) for n, (lo, hi) in bounds.items()}
        mean = (p["amplitude"] * jnp.exp(-0.5 * ((t - p["center"]) / p["width"]) ** 2)
                + p["intercept"] + p["slope"] * t)
        numpyro.sample("y", dist.Normal(mean, sigma), obs=y)

    start = time.perf_counter()
    mcmc = MCMC(NUTS(model, dense_mass=True), num_warmup=n_warmup, num_samples=n_draws,
                num_chains=n_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed))
    samples = mcmc.get_samples(group_by_chain=True)
    x = np.stack([np.asarray(samples[n]) for n in bounds], axis=-1)
    wall = time.perf_counter() - start
    e, r = diagnostics(x)
    divergent = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return dict(ess=e, rhat=r, wall=wall, divergent=divergent)


def run_pyro_bump(t, y, sigma, bounds, n_chains, n_warmup, n_draws, seed=0) -> dict:
    """Pyro NUTS on the bump model as its users write it: ``jit_compile=True`` (TorchScript),
    dense mass, default init; ``n_chains`` chains one after another in this process (Pyro's
    multi-chain mode forks one process per chain; on this 2-core machine the batched samplers
    get no more cores than Pyro's chains would). Wall time includes the JIT traces."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    f64 = dict(dtype=torch.float64)
    lows = {n: torch.tensor(lo, **f64) for n, (lo, _) in bounds.items()}
    highs = {n: torch.tensor(hi, **f64) for n, (_, hi) in bounds.items()}

    def model():
        p = {n: pyro.sample(n, dist.Uniform(lows[n], highs[n])) for n in bounds}
        mean = (p["amplitude"] * torch.exp(-0.5 * ((t - p["center"]) / p["width"]) ** 2)
                + p["intercept"] + p["slope"] * t)
        pyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=y)

    start = time.perf_counter()
    chains = []
    for c in range(n_chains):
        pyro.set_rng_seed(seed + c)
        mcmc = MCMC(NUTS(model, jit_compile=True, ignore_jit_warnings=True, full_mass=True),
                    num_samples=n_draws, warmup_steps=n_warmup, disable_progbar=True)
        mcmc.run()
        s = mcmc.get_samples()
        chains.append(np.stack([s[n].numpy() for n in bounds], axis=-1))
    wall = time.perf_counter() - start
    e, r = diagnostics(np.stack(chains))
    return dict(ess=e, rhat=r, wall=wall)
