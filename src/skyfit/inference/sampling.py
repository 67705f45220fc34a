"""Drivers of the batched HMC samplers: ``sample_nuts`` and ``sample_hmc``.

A driver turns a :class:`~skyfit.inference.LogDensity` into :class:`~skyfit.inference.Samples`:
it maps the parameters to an unconstrained space (with the log |Jacobian|), resolves the starts
(:func:`~skyfit.inference.resolve_start`), and runs the one loop (``mcmc/loop.py``) of a kernel
(``mcmc/nuts.py``, ``mcmc/hmc.py``) inside Stan's windowed warm-up
(``adaptation/window_adaptation.py``), with a progress bar and checkpoints every
``checkpoint_every`` iterations; ``resume=True`` continues a killed run from its checkpoint
exactly. Ctrl-C or an exception during sampling returns every finished draw
(``info["interrupted"] = True``).
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ConvergenceWarning, LogDensityError
from .adaptation.window_adaptation import WindowAdaptation
from .checkpoint import save_checkpoint
from .compiled import CompiledDensity, compile_if_worth
from .density import LogDensity
from .initialization import RandomSource, resolve_start
from .mcmc import HMC, NUTS, HMCState, ValueAndGrad
from .mcmc.loop import (
    Checkpointer,
    Counters,
    LoopState,
    ProgressBar,
    Trace,
    run,
)
from .results import Samples
from .sampling_checkpoint import load_state, state_dict
from .transforms import UnconstrainedDensity

__all__ = ["sample_nuts", "sample_hmc"]

def sample_nuts(
    density: LogDensity,
    init=None,
    n_chains: int = 4,
    n_warmup: int = 1000,
    n_draws: int = 1000,
    seed: int = 0,
    mass: str = "diag",
    pool_mass: bool = False,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    init_scale: float = 0.1,
    checkpoint=None,
    checkpoint_every: int = 100,
    resume: bool = False,
    progress: bool = True,
    compile: bool | None = None,
) -> Samples:
    """Sample ``density`` with batched multinomial NUTS, Stan's defaults, all chains at once.

    Every leapfrog step evaluates the log-density and its gradient of all chains still building
    their trees in one batched call. Sampling happens on an unconstrained vector mapped to each
    parameter's range (:class:`UnconstrainedDensity`, Jacobian included); the draws returned are
    in the constrained (physical) space.

    Arguments:
        density: the log-density (for instance a Posterior).
        init: resolved by :func:`~skyfit.inference.resolve_start`: ``None``
            (``density.initial()``), a ``(dim,)`` point or ``{name: value}`` dict (chains start
            at it plus ``init_scale`` times N(0, 1) in unconstrained space), a
            ``(n_chains, dim)`` array of starts, a previous result (a MAPResult; a Gaussian
            result such as a LaplaceResult or VIResult: starts drawn from it inside the
            bounds, and its covariance, mapped to the unconstrained space, is the initial mass
            matrix; Samples) or an ``init_to_*`` strategy.
        n_chains, n_warmup, n_draws: chains, warm-up iterations (not returned), kept draws.
        seed: seed of the ``torch.Generator`` behind every random number.
        mass: ``"diag"`` or ``"dense"`` inverse mass matrix, estimated in warm-up windows.
        pool_mass: estimate one mass matrix from all chains' draws (else one per chain).
        target_accept: target of the step-size adaptation (Stan's ``delta``).
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per draw.
        init_scale: spread of the starts around a single ``(dim,)`` init.
        checkpoint: path of a checkpoint file (``None``: no checkpoints).
        checkpoint_every: iterations between checkpoints.
        resume: continue the run saved in ``checkpoint`` (same settings needed); a missing file
            starts a new run.
        progress: show a tqdm progress bar.
        compile: evaluate the unconstrained log-density and its gradient through
            :func:`~skyfit.inference.compile` (``torch.compile``). ``None``: when the run is
            long enough to pay for it: one batched eager gradient of the ``n_chains`` starts is
            timed and compiling is chosen when 16 gradients per iteration (NUTS at tree depth
            4) over ``n_warmup + n_draws`` iterations would take over five minutes eagerly. A
            density that is already compiled is used as it is.

    Returns:
        :class:`Samples` with ``sample_stats`` ``diverging``, ``tree_depth``, ``energy``,
        ``step_size``, ``accept_prob``, ``n_steps`` and ``info`` with ``wall_time`` (warm-up
        included), ``n_gradient_evals``, ``n_nonfinite`` (points where the log-density or its
        gradient was NaN or inf, rejected), ``step_size``, ``inv_mass_matrix`` and
        ``lockstep_waste`` (fraction of chain-steps spent waiting for the slowest chain),
        ``compiled``, ``compile_s`` (first calls of each compiled shape, in ``wall_time``) and
        ``compile_fallback`` (why compiling was asked for but not done, or None).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), ["a", "b"])
        >>> s = sample_nuts(d, init=torch.zeros(2), n_warmup=100, n_draws=50, progress=False)
        >>> s.draws.shape, sorted(s.sample_stats)[:2]
        ((4, 50, 2), ['accept_prob', 'diverging'])
    """
    u = _unconstrained(density, compile, n_warmup + n_draws, n_chains)
    kernel = NUTS(ValueAndGrad(u), max_tree_depth)
    return _sample(kernel, u, init, init_scale, n_chains, n_warmup, n_draws, seed, mass,
                   pool_mass, target_accept, checkpoint, checkpoint_every, resume, progress)


def sample_hmc(
    density: LogDensity,
    init=None,
    n_chains: int = 4,
    n_warmup: int = 1000,
    n_draws: int = 1000,
    seed: int = 0,
    mass: str = "diag",
    pool_mass: bool = False,
    target_accept: float = 0.8,
    n_leapfrog: int | None = None,
    jitter: bool = True,
    max_leapfrog: int = 1023,
    init_scale: float = 0.1,
    checkpoint=None,
    checkpoint_every: int = 100,
    resume: bool = False,
    progress: bool = True,
    compile: bool | None = None,
) -> Samples:
    """Sample ``density`` with batched fixed-trajectory HMC: every chain takes the same number of
    leapfrog steps, so none waits for another (no lock-step waste).

    With ``jitter`` the number of steps of each transition is drawn uniformly from
    ``1 .. n_max`` (shared by all chains), which averts the resonances of a fixed trajectory.
    ``n_max`` is ``n_leapfrog`` if given, else it is tuned in warm-up: after each mass-matrix
    window the trajectory time is set to 4 times the largest standard deviation of the
    posterior in the metric's units (the optimum of ``U(0, T)`` jitter for a Gaussian), divided
    by the step size. Before the first window, 10 steps.

    Arguments are those of :func:`sample_nuts`, and:
        n_leapfrog: maximum (with ``jitter``) or exact number of leapfrog steps; ``None``: tuned.
        jitter: draw the number of steps per transition uniformly in ``1 .. n_max``.
        max_leapfrog: cap on the tuned number of steps.

    Returns:
        :class:`Samples` with ``sample_stats`` ``diverging``, ``energy``, ``step_size``,
        ``accept_prob``, ``n_steps``; ``info`` as for :func:`sample_nuts`, plus ``n_leapfrog``.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)
        >>> s = sample_hmc(d, init=torch.zeros(2), n_warmup=100, n_draws=50, progress=False)
        >>> s.draws.shape, s.info["lockstep_waste"]
        ((4, 50, 2), 0.0)
    """
    u = _unconstrained(density, compile, n_warmup + n_draws, n_chains)
    kernel = HMC(ValueAndGrad(u), n_leapfrog, jitter, max_leapfrog)
    return _sample(kernel, u, init, init_scale, n_chains, n_warmup, n_draws, seed, mass,
                   pool_mass, target_accept, checkpoint, checkpoint_every, resume, progress)


def _unconstrained(density, compile_, n_iterations, n_chains) -> UnconstrainedDensity:
    # the model compiled; the elementwise transform and Jacobian around it stay eager
    if not isinstance(density, CompiledDensity):
        density = compile_if_worth(density, compile_, n_iterations, n_chains)
    return UnconstrainedDensity(density)


def _compile_info(u: UnconstrainedDensity) -> dict:
    if not isinstance(u.density, CompiledDensity):
        return dict(compiled=False, compile_s=0.0, compile_fallback=None)
    info = u.density.info
    return dict(compiled=info["fallback"] is None, compile_s=info["compile_s"],
                compile_fallback=info["fallback"])


def _format_point(names, x) -> str:
    return ", ".join(f"{n}={v:.6g}" for n, v in zip(names, x.tolist()))


class _Settings:
    """A run's settings, checked; ``config()`` is what a resumed run must match."""

    def __init__(self, kernel, u, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
                 target_accept, checkpoint, checkpoint_every):
        if mass not in ("diag", "dense"):
            raise ValueError(f"mass must be 'diag' or 'dense', got {mass!r}")
        for name, value, least in (("n_chains", n_chains, 1), ("n_warmup", n_warmup, 0),
                                   ("n_draws", n_draws, 0),
                                   ("checkpoint_every", checkpoint_every, 1)):
            if int(value) < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
        self.kernel, self.names = kernel, list(u.names)
        self.n_chains, self.n_warmup, self.n_draws = int(n_chains), int(n_warmup), int(n_draws)
        self.seed, self.mass, self.pool_mass = int(seed), mass, bool(pool_mass)
        self.target_accept = float(target_accept)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        # the data and model, stored in checkpoints and checked when resuming
        self.fingerprint = None if checkpoint is None else u.fingerprint()
        self.checkpoint_every = int(checkpoint_every)

    def config(self) -> dict:
        return dict(kind=self.kernel.name, names=self.names, n_chains=self.n_chains,
                    n_warmup=self.n_warmup, n_draws=self.n_draws, seed=self.seed,
                    mass=self.mass, pool_mass=self.pool_mass, target_accept=self.target_accept,
                    **self.kernel.config())


def _sample(kernel, u, init, init_scale, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
            target_accept, checkpoint, checkpoint_every, resume, progress) -> Samples:
    t_start = time.perf_counter()
    run_ = _Settings(kernel, u, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
                     target_accept, checkpoint, checkpoint_every)
    if resume and run_.checkpoint is None:
        raise ValueError("resume=True needs checkpoint= the path of the run to resume")
    kw = dict(dtype=u.dtype, device=u.device)
    generator = torch.Generator(device=u.device).manual_seed(run_.seed)
    adaptation = WindowAdaptation(kernel, kernel.value_and_grad, run_.n_chains, u.dim,
                                  run_.n_warmup, run_.target_accept, mass == "dense",
                                  run_.pool_mass, **kw)
    trace = Trace(run_.n_chains, run_.n_draws, u.dim, kernel.stat_names, **kw)
    elapsed_before, resumed_from = 0.0, None
    if resume and run_.checkpoint.exists():
        state, elapsed_before = load_state(run_, adaptation, trace, generator, u)
        resumed_from = state.iteration
    else:
        state = _start(run_, adaptation, u, init, init_scale, generator)

    def clock() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def save(s: LoopState) -> None:
        if run_.checkpoint is not None:
            save_checkpoint(run_.checkpoint, state_dict(run_, adaptation, s, trace, clock()),
                            fingerprint=run_.fingerprint)

    n_total = run_.n_warmup + run_.n_draws
    callbacks = [ProgressBar(kernel.name.upper(), run_.n_warmup, n_total, trace, progress),
                 Checkpointer(save, run_.checkpoint_every, n_total)]
    state, error = run(kernel, adaptation, state, trace, generator, run_.n_warmup, run_.n_draws,
                       callbacks, clock)
    save(state)
    if error is not None:
        n_done = max(0, state.iteration - run_.n_warmup)
        if not isinstance(error, KeyboardInterrupt) and n_done == 0:
            raise error
        where = f" (checkpoint: {run_.checkpoint})" if run_.checkpoint is not None else ""
        warnings.warn(
            f"{kernel.name.upper()} stopped at iteration {state.iteration} of {n_total} by "
            f"{type(error).__name__}{f': {error}' if str(error) else ''}; returning the "
            f"{n_done} finished draws per "
            f"chain{where}", ConvergenceWarning, stacklevel=3)
    samples = _samples(run_, u, state, trace, clock(), error, resumed_from)
    _warn_divergent(kernel.name.upper(), samples)
    return samples


def _warn_divergent(sampler: str, samples: Samples) -> None:
    # said when sampling ends, as Stan and PyMC do: a run whose draws are half divergent was
    # otherwise returned in silence unless the caller asked for summary() or check()
    n = samples.n_divergent
    if n:
        total = samples.n_chains * samples.n_draws
        warnings.warn(f"{sampler}: {n} of {total} draws ({100 * n / total:.1f}%) ended in a "
                      f"divergent transition: the posterior has a geometry the step size cannot "
                      f"follow there, and the draws may be biased; raise target_accept or "
                      f"reparametrise (samples.sample_stats['diverging'] says which draws)",
                      ConvergenceWarning, stacklevel=4)


def _start(run_, adaptation, u, init, init_scale, generator) -> LoopState:
    """The first state: resolved starts, their check, the first metric and step size."""
    kw = dict(dtype=u.dtype, device=u.device)
    C, D = run_.n_chains, u.dim
    random = RandomSource.from_torch(generator, **kw)
    z, cov = resolve_start(u.density, init, C, random, "unconstrained", float(init_scale))
    logp, grad = _check_start(run_.kernel.value_and_grad, u, z)
    dense = run_.mass == "dense"
    if cov is None:
        inv_mass = torch.eye(D, **kw) if dense else torch.ones(D, **kw)
    else:
        inv_mass = cov if dense else cov.diagonal(dim1=-2, dim2=-1).clone()
    # one covariance for every chain, or one per chain (sample_nuts_many: each its object's)
    inv_mass = inv_mass.expand(C, *inv_mass.shape[-2 if dense else -1:]).clone()
    # a start's covariance is kept as the prior of every window estimate
    prior = inv_mass.clone() if cov is not None else None
    kernel_state = HMCState(z, logp, grad)
    a = adaptation.init(kernel_state, inv_mass, prior, generator)
    return LoopState(0, kernel_state, a, Counters(), generator.get_state(), None)


def _check_start(value_and_grad, u, z):
    """Every chain's start must have a finite log-density and gradient (named otherwise)."""
    logp, grad = value_and_grad.raw(z)
    x = u.to_constrained(z)
    for c in range(z.shape[0]):
        lp = logp[c].item()
        if not math.isfinite(lp):
            raise LogDensityError(
                f"the log-density is {lp} at the start point of chain {c}: "
                f"{_format_point(u.names, x[c])}. Sampling needs a finite log-density at every "
                "start: check the model, data and priors at these values, or pass another init.")
        bad = ~torch.isfinite(grad[c])
        if bad.any():
            which = [u.names[i] for i in torch.nonzero(bad).flatten().tolist()]
            raise LogDensityError(
                f"the gradient of the log-density is NaN or inf for {which} at the start "
                f"point of chain {c}: {_format_point(u.names, x[c])}.")
    return logp, grad


def _samples(run_, u, state: LoopState, trace: Trace, wall: float, error,
             resumed_from) -> Samples:
    n = max(0, state.iteration - run_.n_warmup)
    z = trace.draws[:, :n]
    x = u.to_constrained(z)
    logp = trace.stats["log_density_unconstrained"][:, :n] - u.log_abs_det_jacobian(z)
    stats = {}
    for k in trace.stat_names:
        v = trace.stats[k][:, :n].cpu().numpy()
        if k == "diverging":
            v = v.astype(bool)
        elif k in ("tree_depth", "n_steps"):
            v = v.astype(np.int64)
        stats[k] = v
    c, a, vg = state.counters, state.adaptation_state, run_.kernel.value_and_grad
    info = dict(
        wall_time=wall, warmup_time=state.warmup_time if state.warmup_time is not None else 0.0,
        n_gradient_evals=int(vg.n_evals), n_density_calls=int(vg.n_calls),
        n_nonfinite=int(vg.n_nonfinite),
        step_size=a.step_size.cpu().numpy(), inv_mass_matrix=a.inv_mass.cpu().numpy(),
        lockstep_waste=(1.0 - c.useful / c.lockstep) if c.lockstep else 0.0,
        lockstep_waste_sampling=((1.0 - c.useful_sampling / c.lockstep_sampling)
                                 if c.lockstep_sampling else 0.0),
        n_divergent=int(stats["diverging"].sum()), n_divergent_warmup=int(c.divergent_warmup),
        n_chains=run_.n_chains, n_warmup=run_.n_warmup, n_draws=n,
        n_draws_requested=run_.n_draws, seed=run_.seed, mass=run_.mass,
        pool_mass=run_.pool_mass, target_accept=run_.target_accept,
        interrupted=error is not None,
        checkpoint=None if run_.checkpoint is None else str(run_.checkpoint),
        resumed_from=resumed_from, **_compile_info(u), **run_.kernel.config(),
        **run_.kernel.final_info(a.tuning))
    if error is not None:
        info["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
    vg.nonfinite.warn(run_.kernel.name.upper(), int(vg.n_evals), u.to_constrained, stacklevel=4,
                      bounds=(u.density.lower, u.density.upper))
    periodic = {n: [float(lo), float(hi)] for n, lo, hi, w in zip(
        run_.names, u.density.lower.tolist(), u.density.upper.tolist(), u.periodic.tolist()) if w}
    if periodic:
        info["periodic"] = periodic
    return Samples(draws=x.detach().cpu().numpy(), names=list(run_.names),
                   log_density=logp.detach().cpu().numpy(), sampler=run_.kernel.name,
                   sample_stats=stats, info=info, units=dict(u.density.units))
