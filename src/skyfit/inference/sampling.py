"""Drivers of the batched HMC samplers: ``sample_nuts`` and ``sample_hmc``.

A driver turns a :class:`~skyfit.inference.LogDensity` into :class:`~skyfit.inference.Samples`:
it maps the parameters to an unconstrained space (with the log |Jacobian|), starts the chains,
runs Stan's windowed warm-up around the kernel (``nuts.py`` / ``hmc.py``, ``adaptation.py``),
records per-draw diagnostics, shows progress, writes checkpoints every ``checkpoint_every``
iterations and can resume a killed run from its checkpoint. Ctrl-C or an exception during
sampling returns every finished draw (``info["interrupted"] = True``).
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ConvergenceWarning, LogDensityError, ParameterVectorError
from .adaptation import DualAveraging, WelfordCovariance, find_reasonable_step_size, warmup_windows
from .checkpoint import load_checkpoint, save_checkpoint
from .density import LogDensity
from .hmc import HMC, Metric, ValueAndGrad
from .nuts import NUTS
from .results import Samples
from .transforms import UnconstrainedDensity

__all__ = ["sample_nuts", "sample_hmc"]

CHECKPOINT_FORMAT = "skyfit-hmc-checkpoint"
CHECKPOINT_VERSION = 1


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
) -> Samples:
    """Sample ``density`` with batched multinomial NUTS, Stan's defaults, all chains at once.

    Every leapfrog step evaluates the log-density and its gradient of all chains still building
    their trees in one batched call. Sampling happens on an unconstrained vector mapped to each
    parameter's range (:class:`UnconstrainedDensity`, Jacobian included); the draws returned are
    in the constrained (physical) space.

    Arguments:
        density: the log-density (for instance a Posterior).
        init: ``None`` (use ``density.initial()``), a ``(dim,)`` point (chains start at it plus
            ``init_scale`` times N(0, 1) in unconstrained space), a ``(n_chains, dim)`` array of
            starts, or an object with ``.mean`` and ``.covariance`` such as a LaplaceResult
            (starts drawn from that normal inside the bounds, and its covariance, mapped to the
            unconstrained space, is the initial mass matrix).
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

    Returns:
        :class:`Samples` with ``sample_stats`` ``diverging``, ``tree_depth``, ``energy``,
        ``step_size``, ``accept_prob``, ``n_steps`` and ``info`` with ``wall_time`` (warm-up
        included), ``n_gradient_evals``, ``step_size``, ``inv_mass_matrix`` and
        ``lockstep_waste`` (fraction of chain-steps spent waiting for the slowest chain).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), ["a", "b"])
        >>> s = sample_nuts(d, init=torch.zeros(2), n_warmup=100, n_draws=50, progress=False)
        >>> s.draws.shape, sorted(s.sample_stats)[:2]
        ((4, 50, 2), ['accept_prob', 'diverging'])
    """
    run = _Run("nuts", density, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
               target_accept, dict(max_tree_depth=int(max_tree_depth)), checkpoint,
               checkpoint_every, progress)
    return run.sample(init, init_scale, resume)


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
    if n_leapfrog is not None and int(n_leapfrog) < 1:
        raise ValueError(f"n_leapfrog must be at least 1, got {n_leapfrog}")
    if int(max_leapfrog) < 1:
        raise ValueError(f"max_leapfrog must be at least 1, got {max_leapfrog}")
    opts = dict(n_leapfrog=None if n_leapfrog is None else int(n_leapfrog), jitter=bool(jitter),
                max_leapfrog=int(max_leapfrog))
    run = _Run("hmc", density, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
               target_accept, opts, checkpoint, checkpoint_every, progress)
    return run.sample(init, init_scale, resume)


def _format_point(names, x) -> str:
    return ", ".join(f"{n}={v:.6g}" for n, v in zip(names, x.tolist()))


class _Run:
    """One sampling run: configuration, the state between iterations, and the loop."""

    def __init__(self, kind, density, n_chains, n_warmup, n_draws, seed, mass, pool_mass,
                 target_accept, opts, checkpoint, checkpoint_every, progress):
        if mass not in ("diag", "dense"):
            raise ValueError(f"mass must be 'diag' or 'dense', got {mass!r}")
        for name, value, least in (("n_chains", n_chains, 1), ("n_warmup", n_warmup, 0),
                                   ("n_draws", n_draws, 0),
                                   ("checkpoint_every", checkpoint_every, 1)):
            if int(value) < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
        self.kind, self.density = kind, density
        self.u = UnconstrainedDensity(density)
        self.vg = ValueAndGrad(self.u)
        self.C, self.D = int(n_chains), density.dim
        self.n_warmup, self.n_draws = int(n_warmup), int(n_draws)
        self.seed, self.mass, self.pool_mass = int(seed), mass, bool(pool_mass)
        self.target_accept, self.opts = float(target_accept), opts
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every, self.progress = int(checkpoint_every), progress
        self.kw = dict(dtype=self.u.dtype, device=self.u.device)
        self.windows = warmup_windows(self.n_warmup)
        self.generator = torch.Generator(device=self.u.device).manual_seed(self.seed)
        if kind == "nuts":
            self.kernel = NUTS(self.vg, opts["max_tree_depth"])
        else:
            self.kernel = HMC(self.vg)

    # -- configuration stored in the checkpoint; a resumed run must match it ------------------
    def config(self) -> dict:
        return dict(kind=self.kind, names=list(self.density.names), n_chains=self.C,
                    n_warmup=self.n_warmup, n_draws=self.n_draws, seed=self.seed,
                    mass=self.mass, pool_mass=self.pool_mass, target_accept=self.target_accept,
                    **self.opts)

    # -- start ----------------------------------------------------------------------------------
    def _initial_positions(self, init, init_scale):
        d, u, C, D = self.density, self.u, self.C, self.D
        if init is None:
            if not hasattr(d, "initial"):
                raise ValueError(
                    f"init=None needs a density with an initial() method (a Posterior has one); "
                    f"{type(d).__name__} has none: pass init= a ({D},) point, a ({C}, {D}) array "
                    "of chain starts or a LaplaceResult"
                )
            init = d.initial()
        inv_mass = None
        if hasattr(init, "elbo_history"):  # a VIResult: q lives in the unconstrained space
            if init.covariance is not None:
                mean_z = torch.as_tensor(init.mean, **self.kw).reshape(D)
                cov_z = _make_positive_definite(torch.as_tensor(init.covariance, **self.kw))
                chol = torch.linalg.cholesky(cov_z)
                z = mean_z + torch.randn(C, D, generator=self.generator, **self.kw) @ chol.T
                return z, (cov_z if self.mass == "dense" else cov_z.diagonal().clone())
            x = torch.as_tensor(init.sample(C, seed=self.seed).draws[0], **self.kw)  # a flow
            return u.to_unconstrained(x), None
        if hasattr(init, "mean") and hasattr(init, "covariance") and not callable(init.mean):
            mean = d.as_tensor(init.mean).reshape(D)
            cov = torch.as_tensor(init.covariance, **self.kw).reshape(D, D)
            d.check_inside(mean)
            x = self._draw_inside(mean, cov)
            # covariance in unconstrained space: J cov J^T, J = d to_unconstrained / dx (diagonal)
            with torch.enable_grad():
                m = mean.detach().clone().requires_grad_(True)
                (jac,) = torch.autograd.grad(u.to_unconstrained(m).sum(), m)
            cov_z = cov * jac[:, None] * jac[None, :]
            cov_z = 0.5 * (cov_z + cov_z.T)
            if torch.isfinite(cov_z).all() and (torch.diagonal(cov_z) > 0).all():
                inv_mass = cov_z if self.mass == "dense" else torch.diagonal(cov_z).clone()
                if self.mass == "dense":
                    inv_mass = _make_positive_definite(inv_mass)
            return u.to_unconstrained(x), inv_mass
        x = d.as_tensor(init)
        if x.ndim == 1:
            d.check_inside(x)
            z = u.to_unconstrained(x)
            noise = torch.randn(C, D, generator=self.generator, **self.kw)
            return z + float(init_scale) * noise, None
        if x.shape == (C, D):
            d.check_inside(x)
            return u.to_unconstrained(x), None
        raise ParameterVectorError(
            f"init has shape {tuple(x.shape)}; expected ({D},) or (n_chains, dim) = ({C}, {D})"
        )

    def _draw_inside(self, mean, cov):
        """``n_chains`` draws of N(mean, cov) strictly inside the bounds (redrawn up to 100 times,
        then the mean)."""
        chol = torch.linalg.cholesky(_make_positive_definite(0.5 * (cov + cov.T)))
        lo, hi = self.density.lower, self.density.upper
        x = mean.expand(self.C, self.D).clone()
        todo = torch.ones(self.C, dtype=torch.bool, device=mean.device)
        for _ in range(100):
            xi = torch.randn(self.C, self.D, generator=self.generator, **self.kw)
            cand = mean + xi @ chol.T
            ok = ((cand > lo) & (cand < hi)).all(-1) & todo
            x = torch.where(ok[:, None], cand, x)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
        return x

    def _check_start(self, z):
        logp, grad = self.vg.raw(z)
        x = self.u.to_constrained(z)
        names = self.density.names
        for c in range(z.shape[0]):
            lp = logp[c].item()
            if not math.isfinite(lp):
                raise LogDensityError(
                    f"the log-density is {lp} at the start point of chain {c}: "
                    f"{_format_point(names, x[c])}. Sampling needs a finite log-density at every "
                    "start: check the model, data and priors at these values, or pass another init."
                )
            bad = ~torch.isfinite(grad[c])
            if bad.any():
                which = [names[i] for i in torch.nonzero(bad).flatten().tolist()]
                raise LogDensityError(
                    f"the gradient of the log-density is NaN or inf for {which} at the start "
                    f"point of chain {c}: {_format_point(names, x[c])}."
                )
        return logp, grad

    def _start(self, init, init_scale):
        z, inv_mass = self._initial_positions(init, init_scale)
        from_laplace = inv_mass is not None
        logp, grad = self._check_start(z)
        self.state = (z, logp, grad)
        dense = self.mass == "dense"
        if inv_mass is None:
            inv_mass = torch.eye(self.D, **self.kw) if dense else torch.ones(self.D, **self.kw)
        self.inv_mass = inv_mass.expand(self.C, *inv_mass.shape).clone()
        # a metric from the Laplace covariance is kept as the prior of every window estimate
        self.prior_inv_mass = self.inv_mass.clone() if from_laplace else None
        self.metric = Metric(self.inv_mass)
        eps = find_reasonable_step_size(self.vg, self.metric, z, logp, grad,
                                        torch.ones(self.C, **self.kw), self.generator)
        self.step_size = eps
        self.da = DualAveraging(eps, self.target_accept)
        self.welford = WelfordCovariance(self.C, self.D, dense, self.pool_mass, **self.kw)
        self.auto_trajectory = self.kind == "hmc" and self.opts["n_leapfrog"] is None
        self.traj_welford = (WelfordCovariance(self.C, self.D, True, True, **self.kw)
                             if self.auto_trajectory and self.D <= 1000 else None)
        self.traj_length = torch.full((self.C,), math.nan, **self.kw)
        self.iteration = 0
        n = self.n_draws
        self.draws = torch.zeros(self.C, n, self.D, **self.kw)
        self.stats = {k: torch.zeros(self.C, n, **self.kw) for k in self._stat_names()}
        self.stats["log_density_unconstrained"] = torch.zeros(self.C, n, **self.kw)
        self.counters = dict(lockstep=0, useful=0, lockstep_sampling=0, useful_sampling=0,
                             divergent_warmup=0)
        self.elapsed_before = 0.0
        self.warmup_time = None
        self.resumed_from = None

    def _stat_names(self):
        names = ["diverging", "energy", "step_size", "accept_prob", "n_steps"]
        return (["tree_depth"] + names) if self.kind == "nuts" else names

    # -- checkpoint ------------------------------------------------------------------------------
    def _stage(self) -> str:
        it = self.iteration
        if it >= self.n_warmup:
            return "sampling"
        for k, (s, e) in enumerate(self.windows):
            if s <= it < e:
                return f"slow window {k + 1}/{len(self.windows)} [{s}, {e})"
        if not self.windows or it < self.windows[0][0]:
            return "initial fast buffer"
        return "terminal fast buffer"

    def state_dict(self) -> dict:
        n = max(0, self.iteration - self.n_warmup)
        z, logp, grad = self.state
        return dict(
            format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, config=self.config(),
            iteration=self.iteration, stage=self._stage(),
            rng_state=self.rng_state,  # as at the end of the last finished iteration
            position=z, log_density=logp, grad=grad, step_size=self.step_size,
            inv_mass=self.inv_mass, prior_inv_mass=self.prior_inv_mass,
            dual_averaging=self.da.state_dict(),
            welford=self.welford.state_dict(),
            traj_welford=None if self.traj_welford is None else self.traj_welford.state_dict(),
            traj_length=self.traj_length,
            draws=self.draws[:, :n], stats={k: v[:, :n] for k, v in self.stats.items()},
            counters=dict(self.counters, n_evals=self.vg.n_evals, n_calls=self.vg.n_calls),
            elapsed=self.elapsed_before + (time.perf_counter() - self.t_start),
            warmup_time=self.warmup_time,
        )

    def load_state_dict(self, s: dict) -> None:
        if s.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.checkpoint} is not a skyfit HMC/NUTS checkpoint")
        mine, theirs = self.config(), s["config"]
        diff = {k: (theirs.get(k), mine[k]) for k in mine if theirs.get(k) != mine[k]}
        if diff:
            msg = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"cannot resume from {self.checkpoint}: it was written with other settings "
                f"({msg}); call with the same settings, or resume=False to start afresh"
            )
        dev = self.u.device
        to = lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.iteration = int(s["iteration"])
        self.generator.set_state(s["rng_state"])
        self.rng_state = s["rng_state"]
        self.state = (to(s["position"]), to(s["log_density"]), to(s["grad"]))
        self.step_size = to(s["step_size"])
        self.inv_mass = to(s["inv_mass"])
        self.prior_inv_mass = to(s.get("prior_inv_mass"))
        self.metric = Metric(self.inv_mass)
        self.da.load_state_dict({k: to(v) for k, v in s["dual_averaging"].items()})
        self.welford.load_state_dict({k: to(v) for k, v in s["welford"].items()})
        if self.traj_welford is not None and s["traj_welford"] is not None:
            self.traj_welford.load_state_dict({k: to(v) for k, v in s["traj_welford"].items()})
        self.traj_length = to(s["traj_length"])
        n = s["draws"].shape[1]
        self.draws[:, :n] = to(s["draws"])
        for k, v in s["stats"].items():
            self.stats[k][:, :n] = to(v)
        counters = dict(s["counters"])
        self.vg.n_evals, self.vg.n_calls = counters.pop("n_evals"), counters.pop("n_calls")
        self.counters = counters
        self.elapsed_before = float(s["elapsed"])
        self.warmup_time = s["warmup_time"]
        self.resumed_from = self.iteration

    def _save(self) -> None:
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict())

    # -- one iteration -------------------------------------------------------------------------
    def _n_leapfrog(self) -> int:
        n_max = self.opts["n_leapfrog"]
        if n_max is None:
            if torch.isnan(self.traj_length).any():
                n_max = 10
            else:
                ratio = torch.median(self.traj_length / self.step_size).item()
                n_max = int(min(max(math.ceil(ratio), 1), self.opts["max_leapfrog"]))
        if self.opts["jitter"]:
            u = torch.rand(1, generator=self.generator, **self.kw).item()
            return max(1, math.ceil(u * n_max))
        return n_max

    def _transition(self):
        if self.kind == "nuts":
            return self.kernel.step(self.generator, self.state, self.step_size, self.metric)
        n = self._n_leapfrog()
        state, info = self.kernel.step(self.generator, self.state, self.step_size, self.metric, n)
        return state, info

    def _adapt(self, it: int, z: torch.Tensor, accept_prob: torch.Tensor) -> None:
        step_size = self.da.update(accept_prob)
        for start, end in self.windows:
            if start <= it < end:
                self.welford.update(z)
                if self.traj_welford is not None:
                    self.traj_welford.update(z)
                if it == end - 1:
                    self._end_window()
                    step_size = self.step_size
                break
        if it == self.n_warmup - 1:
            step_size = self.da.final_step_size()
        self.step_size = step_size

    def _end_window(self) -> None:
        # prior weight: 10 draws per dimension, so a 25-draw window of a 12-D problem moves the
        # Laplace metric by 17% and a 500-draw window by 80%
        self.inv_mass = self.welford.inverse_mass(self.prior_inv_mass, prior_count=10.0 * self.D)
        self.metric = Metric(self.inv_mass)
        self.welford.reset()
        if self.auto_trajectory:
            self.traj_length = self._trajectory_length()
        z, logp, grad = self.state
        eps = find_reasonable_step_size(self.vg, self.metric, z, logp, grad, self.da.step_size,
                                        self.generator)
        self.da.restart(eps)
        self.step_size = eps

    def _trajectory_length(self) -> torch.Tensor:
        """4 x the largest posterior standard deviation in the metric's units, per chain."""
        if self.traj_welford is None or self.traj_welford.count < self.D + 2:
            lam = torch.ones(self.C, **self.kw)
        else:
            cov = self.traj_welford.covariance()  # (C, D, D), the same for every chain
            if self.metric.dense:
                white = torch.linalg.solve_triangular(self.metric.chol, cov, upper=False)
                white = torch.linalg.solve_triangular(self.metric.chol, white.transpose(-1, -2),
                                                      upper=False)
            else:
                s = self.inv_mass.rsqrt()
                white = cov * s[:, :, None] * s[:, None, :]
            lam = torch.linalg.eigvalsh(0.5 * (white + white.transpose(-1, -2)))[:, -1]
            self.traj_welford.reset()
        return 4.0 * lam.clamp(min=1e-12).sqrt()

    def _record(self, j: int, z, logp, info) -> None:
        self.draws[:, j] = z
        self.stats["log_density_unconstrained"][:, j] = logp
        for k in self._stat_names():
            v = self.step_size if k == "step_size" else getattr(info, k)
            self.stats[k][:, j] = v

    # -- the loop --------------------------------------------------------------------------------
    def sample(self, init, init_scale, resume) -> Samples:
        self.t_start = time.perf_counter()
        resuming = resume and self.checkpoint is not None and self.checkpoint.exists()
        if resume and self.checkpoint is None:
            raise ValueError("resume=True needs checkpoint= the path of the run to resume")
        if resuming:
            state = load_checkpoint(self.checkpoint)
            self._start_empty()
            self.load_state_dict(state)
        else:
            self._start(init, init_scale)
            self.rng_state = self.generator.get_state()
        n_total = self.n_warmup + self.n_draws
        interrupted, error = False, None
        it, snap = None, None
        try:
            from tqdm import tqdm

            phase = "warm-up" if self.iteration < self.n_warmup else "sampling"
            bar = tqdm(total=n_total, initial=self.iteration, disable=not self.progress,
                       desc=f"{self.kind.upper()} {phase}", unit="it", dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
        try:
            while self.iteration < n_total:
                it = self.iteration
                snap = self._snapshot()
                (z, logp, grad), info = self._transition()
                steps = int(info.n_steps.sum())
                lock = info.lockstep_steps if self.kind == "nuts" else int(info.n_steps[0])
                self.state = (z, logp, grad)
                self.counters["lockstep"] += lock * self.C
                self.counters["useful"] += steps
                if it < self.n_warmup:
                    self.counters["divergent_warmup"] += int(info.diverging.sum())
                    self._adapt(it, z, info.accept_prob)
                else:
                    self.counters["lockstep_sampling"] += lock * self.C
                    self.counters["useful_sampling"] += steps
                    self._record(it - self.n_warmup, z, logp, info)
                self.iteration = it + 1
                self.rng_state = self.generator.get_state()
                if self.iteration == self.n_warmup:
                    self.warmup_time = self.elapsed_before + time.perf_counter() - self.t_start
                    if bar is not None:
                        bar.set_description(f"{self.kind.upper()} sampling")
                if bar is not None:
                    bar.update(1)
                    if self.iteration % 25 == 0:
                        n_done = max(0, self.iteration - self.n_warmup)
                        n_div = int(self.stats["diverging"][:, :n_done].sum())
                        bar.set_postfix(step=f"{self.step_size.median().item():.3g}", div=n_div,
                                        refresh=False)
                if self.iteration % self.checkpoint_every == 0 and self.iteration < n_total:
                    self._save()
        except (KeyboardInterrupt, Exception) as exc:
            # an iteration is all or nothing: roll back one cut off half-way (its adaptation
            # step included), so the checkpoint saved below resumes exactly
            if snap is not None and self.iteration == it:
                self._restore(snap)
            interrupted = True
            error = exc
        finally:
            if bar is not None:
                bar.close()
        self._save()
        if interrupted:
            n_done = max(0, self.iteration - self.n_warmup)
            if not isinstance(error, KeyboardInterrupt) and n_done == 0:
                raise error
            where = f" (checkpoint: {self.checkpoint})" if self.checkpoint is not None else ""
            warnings.warn(
                f"{self.kind.upper()} stopped at iteration {self.iteration} of {n_total} by "
                f"{type(error).__name__}: {error}; returning the {n_done} finished draws per "
                f"chain{where}", ConvergenceWarning, stacklevel=3)
        return self._samples(interrupted, error)

    def _snapshot(self):
        # every update rebinds tensors (none is in place): references are a consistent copy
        return (self.state, self.step_size, self.inv_mass, self.metric,
                dict(self.da.state_dict()), dict(self.welford.state_dict()),
                None if self.traj_welford is None else dict(self.traj_welford.state_dict()),
                self.traj_length, dict(self.counters))

    def _restore(self, snap) -> None:
        (self.state, self.step_size, self.inv_mass, self.metric, da, welford, traj,
         self.traj_length, self.counters) = snap
        self.da.load_state_dict(da)
        self.welford.load_state_dict(welford)
        if traj is not None:
            self.traj_welford.load_state_dict(traj)

    def _start_empty(self) -> None:
        """Allocate the state (then overwritten by a checkpoint) without evaluating anything."""
        dense = self.mass == "dense"
        C, D, kw = self.C, self.D, self.kw
        z = torch.zeros(C, D, **kw)
        self.state = (z, torch.zeros(C, **kw), z)
        self.inv_mass = torch.eye(D, **kw).expand(C, D, D) if dense else torch.ones(C, D, **kw)
        self.step_size = torch.ones(C, **kw)
        self.prior_inv_mass = None
        self.da = DualAveraging(self.step_size, self.target_accept)
        self.welford = WelfordCovariance(C, D, dense, self.pool_mass, **kw)
        self.auto_trajectory = self.kind == "hmc" and self.opts["n_leapfrog"] is None
        self.traj_welford = (WelfordCovariance(C, D, True, True, **kw)
                             if self.auto_trajectory and D <= 1000 else None)
        self.traj_length = torch.full((C,), math.nan, **kw)
        self.draws = torch.zeros(C, self.n_draws, D, **kw)
        self.stats = {k: torch.zeros(C, self.n_draws, **kw) for k in self._stat_names()}
        self.stats["log_density_unconstrained"] = torch.zeros(C, self.n_draws, **kw)

    def _samples(self, interrupted: bool, error) -> Samples:
        n = max(0, self.iteration - self.n_warmup)
        z = self.draws[:, :n]
        x = self.u.to_constrained(z)
        logp_u = self.stats["log_density_unconstrained"][:, :n]
        logp = logp_u - self.u.log_abs_det_jacobian(z)
        stats = {}
        for k in self._stat_names():
            v = self.stats[k][:, :n].cpu().numpy()
            if k == "diverging":
                v = v.astype(bool)
            elif k in ("tree_depth", "n_steps"):
                v = v.astype(np.int64)
            stats[k] = v
        c = self.counters
        wall = self.elapsed_before + time.perf_counter() - self.t_start
        info = dict(
            wall_time=wall,
            warmup_time=self.warmup_time if self.warmup_time is not None else 0.0,
            n_gradient_evals=int(self.vg.n_evals),
            n_density_calls=int(self.vg.n_calls),
            step_size=self.step_size.cpu().numpy(),
            inv_mass_matrix=self.inv_mass.cpu().numpy(),
            lockstep_waste=(1.0 - c["useful"] / c["lockstep"]) if c["lockstep"] else 0.0,
            lockstep_waste_sampling=((1.0 - c["useful_sampling"] / c["lockstep_sampling"])
                                     if c["lockstep_sampling"] else 0.0),
            n_divergent=int(stats["diverging"].sum()),
            n_divergent_warmup=int(c["divergent_warmup"]),
            n_chains=self.C, n_warmup=self.n_warmup, n_draws=n, n_draws_requested=self.n_draws,
            seed=self.seed, mass=self.mass, pool_mass=self.pool_mass,
            target_accept=self.target_accept, interrupted=interrupted,
            checkpoint=None if self.checkpoint is None else str(self.checkpoint),
            resumed_from=self.resumed_from,
            **self.opts,
        )
        if self.kind == "hmc":
            info["trajectory_length"] = self.traj_length.cpu().numpy()
        if error is not None:
            info["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
        return Samples(draws=x.detach().cpu().numpy(), names=list(self.density.names),
                       log_density=logp.detach().cpu().numpy(), sampler=self.kind,
                       sample_stats=stats, info=info)


def _make_positive_definite(cov: torch.Tensor) -> torch.Tensor:
    """``cov`` with eigenvalues clipped to at least ``1e-10`` times the largest."""
    try:
        torch.linalg.cholesky(cov)
        return cov
    except RuntimeError:
        w, v = torch.linalg.eigh(0.5 * (cov + cov.T))
        w = w.clamp(min=1e-10 * w.abs().max().clamp(min=1e-300))
        return (v * w) @ v.T
