"""Affine-invariant ensemble sampling with emcee, all walkers evaluated in one batched call."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ConvergenceWarning, LogDensityError
from .density import LogDensity
from .initialization import RandomSource, as_strategy, resolve_start
from .results import AUTOCORR_TIMES_MIN, Samples
from .transforms import UnwrappedAngles

__all__ = ["sample_emcee"]




def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


def _ball_scale(density: LogDensity) -> Callable[[torch.Tensor], torch.Tensor]:
    """Spread of the walkers around a single start point: 1e-3 of each bound width, or of
    ``max(|x|, 1)`` where a bound is open."""
    def scale(x: torch.Tensor) -> torch.Tensor:
        width = density.upper - density.lower
        return 1e-3 * torch.where(torch.isfinite(width), width, x.abs().clamp(min=1.0))
    return scale


def _initial_walkers(density: LogDensity, init, n_walkers: int, rng: np.random.Generator,
                     log_prob_np, scale) -> np.ndarray:
    """Walkers from the start resolver (:func:`resolve_start` in the constrained space, a ball
    of ``scale`` around a single point); walkers of a drawn start where the log-density is not
    finite are redrawn, then pulled towards the best walker. Explicit walkers are used as
    given."""
    strategy = as_strategy(init)
    random = RandomSource.from_numpy(rng, density.dtype, density.device)
    pos = _numpy(resolve_start(density, strategy, n_walkers, random, "constrained",
                               scale).position)
    if strategy.n_points is not None:
        return pos
    ok = np.isfinite(log_prob_np(pos))
    for _ in range(50):
        if ok.all():
            break
        bad = ~ok
        pos[bad] = _numpy(resolve_start(density, strategy, int(bad.sum()), random,
                                        "constrained", scale).position)
        ok[bad] = np.isfinite(log_prob_np(pos[bad]))
    if ok.any() and not ok.all():
        best = pos[ok][0]
        shrink = 0.5
        while not ok.all() and shrink > 1e-8:
            bad = ~ok
            pos[bad] = best + shrink * (pos[bad] - best)
            ok[bad] = np.isfinite(log_prob_np(pos[bad]))
            shrink *= 0.5
    if not ok.all():
        raise LogDensityError(f"could not place {int((~ok).sum())} walkers where the "
                              "log-density is finite around the start")
    return pos


def _numpy_log_prob(density: LogDensity, counts: dict) -> Callable[[np.ndarray], np.ndarray]:
    """emcee's batched log-probability: ``-inf`` outside the support (not evaluated) and for
    NaN (counted); +inf is an error naming the point."""
    dtype, device = density.dtype, density.device
    lo, hi = _numpy(density.lower), _numpy(density.upper)

    def log_prob_np(x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        inside = np.all((x >= lo) & (x <= hi), axis=-1) & np.all(np.isfinite(x), axis=-1)
        out = np.full(x.shape[0], -np.inf)
        if not inside.any():
            return out
        # points outside the support are not evaluated: an inside point stands in for them
        xe = np.where(inside[:, None], x, x[inside][0])
        with torch.no_grad():
            lp = density.log_prob(torch.as_tensor(xe, dtype=dtype, device=device))
        lp = _numpy(lp).reshape(-1)
        counts["evals"] += int(inside.sum())
        if np.isposinf(lp[inside]).any():
            bad = x[inside][np.isposinf(lp[inside])][0]
            raise LogDensityError("log-density is +inf at " + ", ".join(
                f"{n}={v:g}" for n, v in zip(density.names, bad.tolist())))
        nan = inside & np.isnan(lp)
        counts["nan"] += int(nan.sum())
        out[inside] = np.where(np.isnan(lp[inside]), -np.inf, lp[inside])
        return out

    return log_prob_np


def _autocorrelation(sampler, n_burn: int, counts: dict) -> tuple[np.ndarray, int]:
    """emcee's autocorrelation times after burn-in and the kept steps; warns when the run is
    shorter than AUTOCORR_TIMES_MIN times or had NaN proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = np.asarray(sampler.get_autocorr_time(discard=n_burn, tol=0), dtype=float)
    n_kept = sampler.iteration - n_burn
    tau_max = float(np.max(tau)) if np.all(np.isfinite(tau)) else float("nan")
    if not n_kept >= AUTOCORR_TIMES_MIN * tau_max:  # also when tau is nan (too few steps)
        warnings.warn(ConvergenceWarning(
            f"emcee: {n_kept} steps are fewer than {AUTOCORR_TIMES_MIN} autocorrelation times "
            f"(max tau = {tau_max:.1f} steps); the estimate of tau and the draws are "
            "unreliable: run longer (n_steps)"), stacklevel=3)
    if counts["nan"]:
        warnings.warn(ConvergenceWarning(
            f"emcee: log-density was NaN at {counts['nan']} proposals (treated as -inf)"),
            stacklevel=3)
    return tau, n_kept


def _run_info(sampler, counts: dict, t_start: float, settings: dict) -> dict:
    """``Samples.info`` of an emcee run: its settings, evaluation counts and autocorrelation."""
    tau, n_kept = _autocorrelation(sampler, settings["n_burn"], counts)
    n_walkers = sampler.nwalkers
    return dict(
        wall_time=time.perf_counter() - t_start, n_evals=counts["evals"], n_walkers=n_walkers,
        n_steps=int(n_kept), autocorr_time=tau, ess_autocorr=n_walkers * n_kept / tau,
        acceptance_fraction=np.asarray(sampler.acceptance_fraction, dtype=float),
        n_nan=counts["nan"], **settings)


def _walker_count(dim: int, init, n_walkers: int | None) -> int:
    """The ensemble size: as given, else as many as explicit walkers, else ``max(32, 4 dim)``
    rounded up to even; at least ``2 dim``."""
    if n_walkers is None:
        n_walkers = as_strategy(init).n_points
    if n_walkers is None:
        n_walkers = max(32, 4 * dim)
        n_walkers += n_walkers % 2
    if n_walkers < 2 * dim:
        raise ValueError(f"emcee needs at least 2 * dim = {2 * dim} walkers, got {n_walkers}; "
                         "pass n_walkers >= 2 * dim")
    return n_walkers


def _run_ensemble(density, init, n_walkers, walkers_given, log_prob_np, total, seed,
                  checkpoint, resume, progress, moves, scale):
    """Run emcee to ``total`` stored steps: from resolved starts, or on from the walkers and
    random state stored in ``checkpoint`` when resuming. Returns ``(sampler, resuming)``."""
    import emcee  # with h5py and scipy.stats: kept out of `import skyfit`

    dim = density.dim
    from .emcee_backend import CheckedHDFBackend, verify_emcee_checkpoint

    backend = None
    if checkpoint is not None:
        fingerprint = density.fingerprint()
        if resume and Path(checkpoint).exists():
            # an empty or damaged file must not start over, nor a run on other data go on
            verify_emcee_checkpoint(checkpoint, expect_fingerprint=fingerprint)
        backend = CheckedHDFBackend(str(checkpoint), fingerprint=fingerprint)
    resuming = resume and backend.initialized and backend.iteration > 0
    if resuming:
        if not walkers_given:
            n_walkers = int(backend.shape[0])
        if backend.shape != (n_walkers, dim):
            raise ValueError(f"checkpoint {checkpoint} holds {backend.shape} (walkers, dim), "
                             f"asked for ({n_walkers}, {dim})")
    else:
        rng = np.random.default_rng(seed)
        p0 = _initial_walkers(density, init, n_walkers, rng, log_prob_np, scale)
        if backend is not None:
            backend.reset(n_walkers, dim)
    sampler = emcee.EnsembleSampler(n_walkers, dim, log_prob_np, moves=moves, backend=backend,
                                    vectorize=True)
    if resuming:
        if total - backend.iteration > 0:
            sampler.run_mcmc(None, total - backend.iteration, **_progress(progress, resuming))
    else:
        sampler.random_state = np.random.RandomState(int(rng.integers(2**32 - 1))).get_state()
        sampler.run_mcmc(p0, total, **_progress(progress, resuming))
    return sampler, resuming


def _wrapped(target: UnwrappedAngles, chain: np.ndarray, logp: np.ndarray):
    """Draws of the unwrapped angles brought into their canonical range, the log-density
    without the line's weak Normal, and ``{name: [lower, upper]}`` of the angles (for the
    circular summaries of :class:`Samples`)."""
    z = torch.as_tensor(chain, dtype=target.dtype, device=target.device)
    with torch.no_grad():
        wrapped, weight = _numpy(target.wrap(z)), _numpy(target.weight(z))
    density = target.density
    periodic = {n: [float(lo), float(hi)] for n, lo, hi, w in zip(
        density.names, density.lower.tolist(), density.upper.tolist(),
        density.periodic.tolist()) if w}
    return wrapped, logp - weight, periodic


def _progress(progress: bool, resuming: bool) -> dict:
    """emcee's progress arguments: a labelled bar, a notebook widget where ``tqdm.auto``
    would pick one (emcee itself uses plain ``tqdm``)."""
    if not progress:
        return {"progress": False}
    from tqdm.auto import tqdm

    widget = tqdm.__module__.startswith("tqdm.notebook") or tqdm.__module__ == "tqdm.autonotebook"
    return {"progress": "notebook" if widget else True,
            "progress_kwargs": {"desc": "emcee (resumed)" if resuming else "emcee"}}


def sample_emcee(
    density: LogDensity,
    init=None,
    n_walkers: int | None = None,
    n_steps: int = 2000,
    n_burn: int = 500,
    seed: int = 0,
    checkpoint=None,
    resume: bool = False,
    progress: bool = True,
    moves=None,
    thin: int = 1,
) -> Samples:
    """Sample ``density`` with emcee's affine-invariant ensemble sampler.

    References:
        Goodman & Weare (2010), "Ensemble samplers with affine invariance", CAMCoS 5, 65.
        Foreman-Mackey et al. (2013), "emcee: The MCMC Hammer", arXiv:1202.3665.

    Each step evaluates all walkers in one batched ``density.log_prob`` call (emcee's
    ``vectorize=True``); points outside ``[lower, upper]`` get ``-inf`` without being evaluated.
    The sampler works in the constrained space, so no Jacobian is involved. Periodic parameters
    (angles) move on their unwrapped line (:class:`~skyfit.inference.UnwrappedAngles`), so a
    walker crosses the ends of the range as it would any other point of the circle; the
    draws are returned wrapped into the canonical range, with circular summaries.

    The walkers are the :class:`~skyfit.inference.Samples`' "chains", but *not* independent
    chains: R-hat and ESS across them are only indicative; ``info["autocorr_time"]`` (per
    parameter, in steps) and ``info["ess_autocorr"]`` (``n_walkers * n_steps / tau``) are the
    ensemble's own measures. Fewer than ~50 autocorrelation times give a ConvergenceWarning.

    Arguments:
        density: any :class:`~skyfit.inference.LogDensity`.
        init: where walkers start, resolved by :func:`~skyfit.inference.resolve_start` (the
            same rules as every sampler; no fit is run). ``None``: ``density.initial()``. A
            vector, a ``{name: value}`` dict or a :class:`MAPResult`: a small ball (1e-3 of
            each bound width or of ``max(|x|, 1)``) around it. A Gaussian result (Laplace,
            VI): walkers drawn from it inside the support. An array ``(n_walkers, dim)``: the
            walkers themselves. Or an ``init_to_*`` strategy.
        n_walkers: ensemble size (default ``max(32, 4 dim)``, even); at least ``2 dim``.
        n_steps: stored steps after burn-in; n_burn: steps discarded first.
        seed: seeds a ``numpy.random.Generator`` that draws the start and seeds emcee's random
            state, so a run is reproducible.
        checkpoint: path of an HDF5 file (``emcee.backends.HDFBackend``) written every step,
            with a checksum extended at each step.
        resume: continue the run stored in ``checkpoint`` (same walkers, same random state)
            until ``n_burn + n_steps`` steps are stored; without ``resume`` the file is reset.
            A file that is empty, not emcee's, or fails its checksum raises
            :class:`~skyfit.errors.CorruptFileError` (a missing file starts a new run).
        progress: tqdm progress bar.
        moves: emcee moves (default ``StretchMove``), e.g. ``[(DEMove(), 0.8), ...]``.
        thin: keep every ``thin``-th step.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)
        >>> s = sample_emcee(d, init=torch.zeros(2), n_steps=200, n_burn=100, progress=False)
        >>> s.draws.shape
        (32, 200, 2)
    """
    t_start, walkers_given = time.perf_counter(), n_walkers is not None
    n_walkers = _walker_count(density.dim, init, n_walkers)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint file to resume from")
    counts = {"evals": 0, "nan": 0}
    # angles move on their unbounded unwrapped line (no wall at the ends of their range)
    target = UnwrappedAngles(density) if bool(density.periodic.any()) else density
    sampler, resuming = _run_ensemble(target, init, n_walkers, walkers_given,
                                      _numpy_log_prob(target, counts), n_burn + n_steps, seed,
                                      checkpoint, resume, progress, moves, _ball_scale(density))
    chain = sampler.get_chain(discard=n_burn, thin=thin)  # (step, walker, dim)
    logp = sampler.get_log_prob(discard=n_burn, thin=thin)
    periodic = {}
    if target is not density:
        chain, logp, periodic = _wrapped(target, chain, logp)
    if chain.shape[0] == 0:
        raise ValueError(f"no draws kept: n_steps={n_steps} after n_burn={n_burn}")
    info = _run_info(sampler, counts, t_start, dict(
        n_burn=n_burn, thin=thin, seed=seed,
        moves=repr(moves) if moves is not None else "StretchMove",
        checkpoint=None if checkpoint is None else str(checkpoint), resumed=bool(resuming),
        **({"periodic": periodic} if periodic else {})))
    return Samples(draws=np.ascontiguousarray(chain.transpose(1, 0, 2)),
                   names=list(density.names), log_density=np.ascontiguousarray(logp.T),
                   sampler="emcee", info=info, units=dict(density.units))
