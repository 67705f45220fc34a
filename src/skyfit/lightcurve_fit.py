"""``skyfit lightcurve FILE``: fit a photometry table (multi-start MAP, Laplace, NUTS)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .data.photometry import Photometry
from .errors import ConvergenceWarning, DataError, LogDensityError, ParameterVectorError
from .inference import fit_map, laplace, sample_nuts
from .lightcurve_anchored import VillarAnchoredDensity
from .lightcurve_report import (
    _json_ready,
    _labels,
    _map_summary,
    _print_table,
    _write_plot,
    light_curve_peaks,
)
from .lightcurves import Villar
from .lightcurves.starts import (
    MODELS,
    SHARED_DEFAULT,
    default_priors,
    from_photometry,
    light_curve_scales,
    villar_half_peak_plateau,
)
from .likelihoods_photometry import PhotometryLikelihood
from .posterior import Posterior

__all__ = ["fit_photometry", "read_photometry", "light_curve_peaks", "fit_map_continued",
           "multistart_map", "SHARED_DEFAULT", "data_starts", "nuts_start",
           "sample_light_curve_nuts", "check_fit_options"]


def data_starts(post: Posterior) -> list[torch.Tensor]:
    """The data-driven starts of a light-curve posterior: ``post.initial()`` (the values of
    :func:`~skyfit.lightcurves.from_photometry`) and, for a Villar light curve with a relative
    slope and shared ``t0``, ``tau_rise``, ``gamma`` and ``beta``, the same start with the
    plateau ending at half the peak (:func:`~skyfit.lightcurves.villar_half_peak_plateau`):
    the two shapes real transients take (an SLSN's plateau ends near the peak, a TDE's covers
    its early decline), neither reachable by L-BFGS-B from the other on PS1-10jh."""
    x0 = post.initial()
    like = post.likelihood
    lc, phot = getattr(like, "lightcurve", None), getattr(like, "photometry", None)
    if not isinstance(lc, Villar) or not lc.relative_slope or phot is None:
        return [x0]
    where = {id(p): sl for sl, shape, p in post.slices.values()}
    index = {name: where.get(id(getattr(lc, name))) for name in ("t0", "tau_rise", "gamma",
                                                                   "beta", "A")}
    sizes = {name: None if sl is None else sl.stop - sl.start for name, sl in index.items()}
    if (any(sizes[n] != 1 for n in ("t0", "tau_rise", "gamma", "beta"))
            or sizes["A"] != lc.n_bands):  # one amplitude per band, scaled from its peak flux
        return [x0]
    redshift = getattr(lc, "redshift", None)
    z = 0.0 if redshift is None else float(redshift.value)
    scales = light_curve_scales(phot)
    late = villar_half_peak_plateau(scales, float(x0[index["tau_rise"]]), z)
    if late is None:
        return [x0]
    x = x0.clone()
    for name in ("t0", "gamma", "beta"):
        x[index[name]] = late[name]
    peak = torch.as_tensor(scales["peak_flux"], dtype=x.dtype)
    x[index["A"]] = peak * late["amplitude_factor"]
    return [x0, torch.clamp(x, post.lower, post.upper)]


def fit_map_continued(post: Posterior, x0=None):
    """``fit_map`` (L-BFGS-B) from ``x0``, continued with ``trust-exact`` where it stalls;
    without ``x0``, from each of :func:`data_starts`, keeping the best converged fit.

    From starts far from the data (e.g. draws of the default priors, with ``t0`` weeks off),
    a light-curve posterior in magnitudes has curved valleys between ``t0``, the amplitudes and
    the time scales; L-BFGS-B then stops on scipy's relative-reduction test with the gradient
    still large (max |grad| 1e2 to 1e5 on LSQ12dlf and PS1-10jh). An exact-Hessian trust region
    from that point follows the valley to the optimum. Convergence warnings of the first stage
    are not shown; the returned result carries the verdict of the stage that produced it.

    Arguments:
        post: the posterior (or any :class:`~skyfit.inference.LogDensity`).
        x0: the start, as :func:`~skyfit.inference.fit_map` takes it (None: each of
            :func:`data_starts`).
    """
    if x0 is None:
        first, *others = data_starts(post)
        fits = [fit_map_continued(post, first)]
        for x in others:  # an extra start where the model cannot be evaluated adds nothing
            try:
                fits.append(fit_map_continued(post, x))
            except (LogDensityError, ParameterVectorError):
                continue
        return max(fits, key=lambda f: (f.converged, f.log_density))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_map(post, x0)
    if not fit.converged:
        fit = fit_map(post, fit.x, method="trust-exact")
    return fit


def multistart_map(post: Posterior, n_starts: int = 8, seed: int = 0):
    """The best converged MAP fit (:func:`fit_map_continued`) from the data's starts
    (:func:`data_starts`) and others drawn around the first, ``n_starts`` in all (at least the
    data starts; each entry times ``exp(N(0, 0.5))`` if positive, else plus
    ``N(0, 0.5 |x|+1)``, clamped into the bounds). Only the kept fit's warnings are shown.
    Returns ``(best result, number of converged fits within 1 of the best log p, all results)``.
    """
    gen = torch.Generator().manual_seed(seed)
    starts = data_starts(post)
    x0 = starts[0]
    for _ in range(n_starts - len(starts)):
        noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        x = torch.where(x0 > 0, x0 * torch.exp(0.5 * noise), x0 + noise * (0.5 * x0.abs() + 1))
        starts.append(torch.clamp(x, post.lower, post.upper))
    fits, said = [], []
    for x in starts:
        # each start's warnings are kept for its fit: a random start that wanders to the
        # bounds (A = 0, tau_fall = 0) warned of non-finite points on every run, though its
        # fit was not the one kept
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                fits.append(fit_map_continued(post, x))
            except (ValueError, RuntimeError):  # a start where the model cannot be evaluated
                continue
        said.append(caught)
    if not fits:
        raise RuntimeError("no MAP fit could start: check the data and the model")
    converged = [f for f in fits if f.converged]
    best = max(converged or fits, key=lambda f: f.log_density)
    for w in said[next(i for i, f in enumerate(fits) if f is best)]:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    at_best = sum(f.log_density > best.log_density - 1.0 for f in converged)
    return best, at_best, fits


def nuts_start(fit, lap):
    """``init=`` for :func:`~skyfit.inference.sample_nuts` after a MAP fit and its Laplace
    approximation: the Laplace result (starts drawn from it, its covariance the first dense
    metric, so warm-up need not learn the correlations of t0, amplitudes and time scales) when
    its standard deviations are finite and positive, else the MAP point."""
    std = lap.std
    if bool(torch.isfinite(std).all()) and bool((std > 0).all()):
        return lap
    return fit.x


def sample_light_curve_nuts(post: Posterior, fit, lap, anchored: bool = False,
                            **nuts_options):
    """NUTS after a MAP fit and its Laplace approximation, as ``skyfit lightcurve`` runs it
    (4 chains, dense metric, started from :func:`nuts_start`).

    With ``anchored=True`` a Villar posterior is sampled in the coordinates of
    :class:`~skyfit.lightcurve_anchored.VillarAnchoredDensity` (the same posterior; fluxes at
    fixed times instead of ``t0``, ``tau_rise`` and the amplitudes) and the draws are returned
    as the model's parameters. Not the default: on LSQ12dlf it removes the curved ridge of the
    bulk (2.7x fewer leapfrog steps per draw) but not all divergences, and on a synthetic
    two-band light curve with a sparse rise it diverged more than the model's own parameters
    (benchmarks/RESULTS.md, ``lightcurve_real_slsn_villar``). On LSQ12dlf it works best with
    a plateau-end blend of 0.2 ``tau_fall`` (``from_photometry(..., transition_fraction=0.2)``,
    see :class:`~skyfit.lightcurves.Villar`) and ``target_accept=0.9``: R-hat 1.007 or less
    but still 6, 4 and 6 divergent transitions in 1,400 draws with seeds 0, 1, 2 (9, 1 and 0
    at 0.95, for 1.15-1.3x the leapfrog steps), most of them trajectories that reach the wall
    of those coordinates (7 of 9 at seed 0; see :mod:`~skyfit.lightcurve_anchored`).
    ``skyfit lightcurve --transition-fraction 0.2 --anchored --target-accept 0.9`` runs it so.

    Arguments:
        post: the light-curve posterior.
        fit: its MAP result.
        lap: the Laplace result at ``fit``.
        anchored: sample a Villar posterior in anchored coordinates (needs ``t0`` and
            ``tau_rise`` shared, per-band amplitudes and a relative slope, as
            :func:`~skyfit.lightcurves.from_photometry` builds it).
        nuts_options: more keywords for :func:`~skyfit.inference.sample_nuts`.
    """
    options = dict(n_chains=4, mass="dense") | nuts_options
    if not anchored:
        return sample_nuts(post, init=nuts_start(fit, lap), **options)
    density = VillarAnchoredDensity(post, anchor=fit.x)
    start = nuts_start(fit, lap)
    init = density.gaussian(start) if start is lap else density.from_original(fit.x)
    # the Newton solve inside the density has a data-dependent number of iterations and
    # nested gradients: not something torch.compile traces, so it runs eagerly
    samples = sample_nuts(density, init=init, compile=False, **options)
    return density.original_samples(samples)


def check_fit_options(model: str, nuts: bool, transition_fraction: float | None,
                      anchored: bool, target_accept: float, shared=None) -> None:
    """Refuse, before any fit runs, options that the model or the run cannot use (``shared``:
    names that are not the model's parameters)."""
    if transition_fraction is not None and model != "villar":
        raise ValueError(f"transition_fraction is an option of the villar model, not {model!r}")
    if anchored and model != "villar":
        raise ValueError(f"anchored coordinates are for the villar model, not {model!r}")
    if anchored and not nuts:
        raise ValueError("anchored coordinates are NUTS's: they do nothing without NUTS")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    if shared and model in MODELS:  # a two-band model refuses names it does not have
        MODELS[model](bands=("a", "b"), shared=list(shared))


def read_photometry(path, mag: bool = False, zero_point: float = 25.0,
                    redshift: float | None = None,
                    vega_offsets: dict[str, float] | None = None,
                    columns: dict[str, str] | None = None) -> Photometry:
    """The table ``fit_photometry`` fits (:meth:`Photometry.read` with Vega magnitudes where
    ``vega_offsets`` are given), refused up front when a fit in magnitudes (``mag``) would
    meet detections of zero or negative flux (forced photometry: fit those in flux)."""
    system = dict(system="Vega", vega_offsets=vega_offsets) if vega_offsets else {}
    phot = Photometry.read(path, columns=columns, zero_point=zero_point, redshift=redshift,
                           **system)
    light_curve_scales(phot)  # refuses a table without detections
    bad = phot.detected & ~(phot.flux > 0)
    if mag and bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise DataError(f"{int(bad.sum())} detections have zero or negative flux (rows {rows}), "
                        f"which have no magnitude: fit in flux (without --mag), or drop them")
    return phot


def fit_photometry(path, model: str = "bazin", shared=None, mag: bool = False,
                   out="skyfit-lightcurve", n_starts: int = 8, n_warmup: int = 500,
                   n_draws: int = 500, nuts: bool = True, zero_point: float = 25.0,
                   progress: bool = True, transition_fraction: float | None = None,
                   anchored: bool = False, target_accept: float = 0.8,
                   redshift: float | None = None,
                   vega_offsets: dict[str, float] | None = None,
                   columns: dict[str, str] | None = None, jitter: bool = False) -> dict:
    """Read ``path`` (CSV, ECSV, FITS table; :meth:`Photometry.read` columns), fit ``model``,
    write ``summary.json`` and ``lightcurve.png`` under ``out`` and return the summary.
    ``shared=None``: :data:`SHARED_DEFAULT` of the model. NUTS (4 chains, dense metric) starts
    from the Laplace approximation at the best MAP fit (:func:`sample_light_curve_nuts`, with
    ``anchored`` and ``target_accept``). ``transition_fraction``: Villar's plateau-end blend
    as a fraction of ``tau_fall`` (:class:`~skyfit.lightcurves.Villar`; None: 3 days).
    ``redshift``: the source's (rest-frame time scales, :func:`from_photometry`; None: none).
    ``vega_offsets``: ``{band: m_AB - m_Vega}`` when the magnitudes are Vega (None: AB).
    ``columns``: the table's column of each role (:meth:`Photometry.from_table`).
    ``jitter``: fit an extra scatter per band (:class:`PhotometryLikelihood`); without it, a
    fit whose chi2 is improbable (p < 0.001) is said to have too small uncertainties."""
    check_fit_options(model, nuts, transition_fraction, anchored, target_accept, shared)
    say = print if progress else (lambda *a, **k: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    phot = read_photometry(path, mag, zero_point, redshift, vega_offsets, columns)
    say(phot)
    # an unknown model is refused by from_photometry
    shared = list(SHARED_DEFAULT.get(model, ()) if shared is None else shared)
    options = {} if transition_fraction is None else dict(transition_fraction=transition_fraction)
    lc = from_photometry(model, phot, shared=shared, **options)
    like = PhotometryLikelihood(lc, phot, space="mag" if mag else "flux", jitter=jitter)
    post = Posterior(like, priors=default_priors(like))
    best, n_ok, fits = multistart_map(post, n_starts)
    post.set(best.x)
    summary = dict(file=str(path), model=model, shared=list(shared), space=like.space,
                   transition_fraction=transition_fraction, anchored=anchored,
                   target_accept=target_accept, redshift=redshift, vega_offsets=vega_offsets,
                   columns=columns, jitter=jitter,
                   bands=None if phot.bands is None else list(phot.bands),  # A[i]: bands[i]
                   reference_mjd=phot.reference, n_rows=len(phot), n_limits=like.n_limits,
                   map=_map_summary(post, best, n_ok, fits, say))
    lap = laplace(post, best.x)
    summary["laplace_std"] = dict(zip(post.names, lap.std.tolist()))
    result = lap
    if nuts:
        samples = sample_light_curve_nuts(post, best, lap, n_warmup=n_warmup, n_draws=n_draws,
                                          anchored=anchored, target_accept=target_accept,
                                          progress=progress)
        problems = samples.check(warn=False)
        table = samples.summary(warn=False)
        summary["nuts"] = dict(converged=not problems, problems=problems,
                               divergent=samples.n_divergent,
                               max_rhat=float(np.nanmax(samples.rhat())),
                               wall_time=samples.info.get("wall_time"),
                               table=json.loads(table.to_json(orient="index")))
        result = samples
        _print_table(say, _labels(post.names, phot.bands), samples.mean(), samples.std(),
                     samples.rhat(), samples.ess(), problems)
    else:
        _print_table(say, _labels(post.names, phot.bands), best.x.numpy(), lap.std.numpy(),
                     None, None, [])
    _write_plot(phot, result, post, mag, out / "lightcurve.png")
    summary["converged"] = best.converged and summary.get("nuts", {}).get("converged", True)
    (out / "summary.json").write_text(json.dumps(_json_ready(summary), indent=2, allow_nan=False))
    say(f"wrote {out / 'summary.json'} and {out / 'lightcurve.png'}")
    return summary
