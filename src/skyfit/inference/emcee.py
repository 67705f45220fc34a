"""Affine-invariant ensemble sampling with emcee, all walkers evaluated in one batched call."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import emcee
import numpy as np
import torch

from ..errors import ConvergenceWarning, LogDensityError, ParameterVectorError
from .density import LogDensity
from .emcee_backend import CheckedHDFBackend, verify_emcee_checkpoint
from .results import Samples

__all__ = ["sample_emcee"]


_VI_START_DRAWS = 4096
# a run shorter than this many autocorrelation times gives unreliable tau and draws (emcee docs,
# "Autocorrelation analysis & convergence"; Sokal 1997)
AUTOCORR_TIMES_MIN = 50


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_start(density: LogDensity, x: np.ndarray) -> None:
    """The start point must be inside the support with a finite log-density."""
    xt = torch.as_tensor(x, dtype=density.dtype, device=density.device)
    getattr(density, "check_valid", density.check_inside)(xt)
    with torch.no_grad():
        logp = float(density.log_prob(xt))
    if not math.isfinite(logp):
        values = ", ".join(f"{n}={v:g}" for n, v in zip(density.names, x.tolist()))
        raise LogDensityError(
            f"log-density is {logp} at the start point ({values}); start inside the support "
            "where the model is defined (for instance from fit_map)")


def _start_center(density: LogDensity, init):
    """(center, covariance or None, explicit walker positions or None) from ``init``."""
    if init is None:
        if not hasattr(density, "initial"):
            raise ValueError("give init (a vector, a MAPResult or a LaplaceResult): this density "
                             "has no initial() values to start from")
        from .laplace import laplace
        from .optimize import fit_map
        x0 = density.initial()
        _check_start(density, _numpy(x0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                init = laplace(density, fit_map(density, x0).x)
            except Exception:  # noqa: BLE001 -- fall back to a ball around initial()
                return _numpy(x0), None, None
    if hasattr(init, "elbo_history"):  # a VIResult: its Gaussian lives in the unconstrained space
        walkers = init.sample(_VI_START_DRAWS, seed=0).draws[0]
        return walkers.mean(0), np.cov(walkers, rowvar=False).reshape(walkers.shape[1], -1), None
    if hasattr(init, "mean") and hasattr(init, "covariance") and not callable(init.mean):
        return _numpy(init.mean).reshape(-1), _numpy(init.covariance), None
    if hasattr(init, "x"):  # MAPResult
        return _numpy(init.x).reshape(-1), None, None
    x = _numpy(init)
    if x.ndim == 2:
        return x.mean(0), None, x
    return x.reshape(-1), None, None


def _initial_walkers(density, center, cov, n_walkers, rng, log_prob_np) -> np.ndarray:
    """Walkers from N(center, cov) (or a small ball), redrawn until inside the support with a
    finite log-density; stragglers are pulled towards the center."""
    dim = center.shape[0]
    lo, hi = _numpy(density.lower), _numpy(density.upper)
    if cov is not None:
        cov = 0.5 * (cov + cov.T)
        evals, evecs = np.linalg.eigh(cov)
        root = evecs * np.sqrt(np.clip(evals, 0.0, None))
    else:
        width = np.where(np.isfinite(hi - lo), hi - lo, np.maximum(np.abs(center), 1.0))
        root = np.diag(1e-3 * width)
    pos = center + rng.standard_normal((n_walkers, dim)) @ root.T
    ok = np.isfinite(log_prob_np(pos))
    for _ in range(50):
        if ok.all():
            break
        bad = ~ok
        pos[bad] = center + rng.standard_normal((int(bad.sum()), dim)) @ root.T
        ok[bad] = np.isfinite(log_prob_np(pos[bad]))
    shrink = 0.5
    while not ok.all() and shrink > 1e-8:
        bad = ~ok
        pos[bad] = center + shrink * (pos[bad] - center)
        ok[bad] = np.isfinite(log_prob_np(pos[bad]))
        shrink *= 0.5
    if not ok.all():
        raise LogDensityError(f"could not place {int((~ok).sum())} walkers where the "
                              "log-density is finite around the start point")
    return pos


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
    The sampler works in the constrained space, so no Jacobian is involved.

    The returned :class:`~skyfit.inference.Samples` has the walkers as its "chains". Walkers of
    one ensemble are *not* independent chains: R-hat and ESS across them are only indicative;
    ``info["autocorr_time"]`` (emcee's integrated autocorrelation time, in steps, per parameter)
    and ``info["ess_autocorr"]`` (``n_walkers * n_steps / tau``) are the ensemble's own measures.
    emcee asks for ``n_steps`` of at least ~50 autocorrelation times; fewer gives a
    :class:`~skyfit.errors.ConvergenceWarning`.

    Arguments:
        density: any :class:`~skyfit.inference.LogDensity`.
        init: where walkers start. ``None``: MAP (:func:`fit_map` from ``density.initial()``)
            then its Laplace covariance. Anything with ``.mean`` and ``.covariance`` (a
            :class:`LaplaceResult`, or a :class:`VIResult` via its draws): walkers drawn from
            ``N(mean, covariance)`` truncated to the support. A vector or a
            :class:`MAPResult`: a small ball (1e-3 of each bound width or of ``max(|x|, 1)``)
            around it. An array ``(n_walkers, dim)``: the walkers themselves.
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
        moves: emcee moves (default ``StretchMove``), e.g. ``[(emcee.moves.DEMove(), 0.8),
            (emcee.moves.DESnookerMove(), 0.2)]``.
        thin: keep every ``thin``-th step.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)
        >>> s = sample_emcee(d, init=torch.zeros(2), n_steps=200, n_burn=100, progress=False)
        >>> s.draws.shape
        (32, 200, 2)
    """
    t_start = time.perf_counter()
    dim = density.dim
    walkers_given = n_walkers is not None
    if n_walkers is None:
        n_walkers = max(32, 4 * dim)
        n_walkers += n_walkers % 2
    if n_walkers < 2 * dim:
        raise ValueError(f"emcee needs at least 2 * dim = {2 * dim} walkers, got {n_walkers}; "
                         "pass n_walkers >= 2 * dim")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint file to resume from")
    dtype, device = density.dtype, density.device
    lo, hi = _numpy(density.lower), _numpy(density.upper)
    counts = {"evals": 0, "nan": 0}
    safe = None  # a point inside the support, evaluated in place of points outside it

    def log_prob_np(x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        inside = np.all((x >= lo) & (x <= hi), axis=-1) & np.all(np.isfinite(x), axis=-1)
        out = np.full(x.shape[0], -np.inf)
        if not inside.any():
            return out
        xe = np.where(inside[:, None], x, safe)
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

    backend = None
    if checkpoint is not None:
        if resume and Path(checkpoint).exists():
            verify_emcee_checkpoint(checkpoint)  # an empty or damaged file must not start over
        backend = CheckedHDFBackend(str(checkpoint))
    resuming = resume and backend.initialized and backend.iteration > 0
    if resuming:
        if not walkers_given:
            n_walkers = int(backend.shape[0])
        if backend.shape != (n_walkers, dim):
            raise ValueError(f"checkpoint {checkpoint} holds {backend.shape} (walkers, dim), "
                             f"asked for ({n_walkers}, {dim})")
        safe = backend.get_last_sample().coords[
            int(np.argmax(backend.get_last_sample().log_prob))]
    else:
        rng = np.random.default_rng(seed)
        center, cov, walkers = _start_center(density, init)
        if center.shape[0] != dim:
            raise ParameterVectorError(f"init has {center.shape[0]} entries, expected {dim} "
                                       f"({', '.join(density.names)})")
        if walkers is not None:
            if not walkers_given:
                n_walkers = walkers.shape[0]
            if walkers.shape != (n_walkers, dim):
                raise ParameterVectorError(f"walker positions {walkers.shape}, expected "
                                           f"({n_walkers}, {dim})")
            getattr(density, "check_valid", density.check_inside)(
                torch.as_tensor(walkers, dtype=dtype, device=device))
            safe = walkers[0]
            p0 = walkers.copy()
            finite = np.isfinite(log_prob_np(p0))
            if not finite.all():
                _check_start(density, p0[~finite][0])
        else:
            _check_start(density, center)
            safe = center
            p0 = _initial_walkers(density, center, cov, n_walkers, rng, log_prob_np)
        if backend is not None:
            backend.reset(n_walkers, dim)

    sampler = emcee.EnsembleSampler(n_walkers, dim, log_prob_np, moves=moves, backend=backend,
                                    vectorize=True)
    total = n_burn + n_steps
    if resuming:
        todo = total - backend.iteration
        if todo > 0:
            sampler.run_mcmc(None, todo, progress=progress)
    else:
        sampler.random_state = np.random.RandomState(
            int(rng.integers(2**32 - 1))).get_state()
        sampler.run_mcmc(p0, total, progress=progress)

    chain = sampler.get_chain(discard=n_burn, thin=thin)  # (step, walker, dim)
    logp = sampler.get_log_prob(discard=n_burn, thin=thin)
    if chain.shape[0] == 0:
        raise ValueError(f"no draws kept: n_steps={n_steps} after n_burn={n_burn}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = np.asarray(sampler.get_autocorr_time(discard=n_burn, tol=0), dtype=float)
    n_kept = sampler.iteration - n_burn
    tau_max = float(np.max(tau)) if np.all(np.isfinite(tau)) else float("nan")
    if not n_kept >= AUTOCORR_TIMES_MIN * tau_max:  # also when tau is nan (too few steps)
        warnings.warn(ConvergenceWarning(
            f"emcee: {n_kept} steps are fewer than {AUTOCORR_TIMES_MIN} autocorrelation times "
            f"(max tau = "
            f"{tau_max:.1f} steps); the estimate of tau and the draws are unreliable: run "
            "longer (n_steps)"), stacklevel=2)
    if counts["nan"]:
        warnings.warn(ConvergenceWarning(
            f"emcee: log-density was NaN at {counts['nan']} proposals (treated as -inf)"),
            stacklevel=2)
    info = {
        "wall_time": time.perf_counter() - t_start,
        "n_evals": counts["evals"],
        "n_walkers": n_walkers,
        "n_steps": int(n_kept),
        "n_burn": n_burn,
        "thin": thin,
        "seed": seed,
        "autocorr_time": tau,
        "ess_autocorr": n_walkers * n_kept / tau,
        "acceptance_fraction": np.asarray(sampler.acceptance_fraction, dtype=float),
        "n_nan": counts["nan"],
        "moves": repr(moves) if moves is not None else "StretchMove",
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "resumed": bool(resuming),
    }
    return Samples(draws=np.ascontiguousarray(chain.transpose(1, 0, 2)),
                   names=list(density.names),
                   log_density=np.ascontiguousarray(logp.T),
                   sampler="emcee", info=info)
