"""Light-curve models built from a :class:`~skyfit.data.Photometry`: data-driven starts and
weakly-informative default priors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributions import HalfCauchy, LogNormal, Normal

from ..errors import DataError
from .bazin import Bazin
from .gaussian import GaussianLightCurve
from .villar import Villar

__all__ = ["light_curve_scales", "from_photometry", "default_priors", "SHARED_DEFAULT",
           "villar_half_peak_plateau"]

MODELS = {"gaussian": GaussianLightCurve, "bazin": Bazin, "villar": Villar}
# parameters shared by all bands unless asked otherwise: what a band seen only after the peak
# cannot constrain on its own (its rise; for Villar also the plateau length and the plateau
# slope relative to the amplitude, see Villar); each band keeps its amplitude and decline
SHARED_DEFAULT = {"gaussian": ["t0"], "bazin": ["t0", "tau_rise"],
                  "villar": ["t0", "tau_rise", "gamma", "beta"]}


def light_curve_scales(phot) -> dict:
    """Peak, rise and decline of a photometry table, from its detections (no fit).

    Returns ``{"t_peak", "t_peak_band" (n_bands,), "peak_flux" (n_bands,), "rise", "fall",
    "span", "flux_err"}``: the peak time of the best-sampled band and each band's, each band's
    brightest flux (its median flux error where it has no detection), the rise time, a third of
    the time from the first detection to the peak (days, at least 1), the e-folding decline
    time from the points after the peak (median of ``-(t - t_peak) / ln(f / f_peak)``; 30 days
    without such points), the time span of the data, the median flux error of the
    detections and ``"t_half"``, the first time after the peak at which the best-sampled band
    is detected below half its peak flux (NaN if never).

    Example:
        >>> import torch
        >>> from skyfit.data import Photometry
        >>> t = torch.arange(0.0, 40.0, 4.0, dtype=torch.float64)
        >>> flux = 10 * torch.exp(-0.5 * ((t - 12.0) / 4.0) ** 2)
        >>> scales = light_curve_scales(Photometry(t, flux=flux, flux_err=0.1 * torch.ones(10)))
        >>> scales["t_peak"], scales["span"], scales["rise"]  # rise: (12 - 0) / 3
        (12.0, 36.0, 4.0)
    """
    det = phot.detected & torch.isfinite(phot.flux)
    if not det.any():
        raise DataError(f"no detections: all {len(phot)} rows are upper limits, from which no "
                        f"light curve can be started or fitted")
    band = phot.band if phot.band is not None else torch.zeros(len(phot), dtype=torch.long)
    t, f = phot.time, phot.flux
    median_err = float(phot.flux_err[det].median())
    counts = torch.bincount(band[det], minlength=phot.n_bands)
    t_peak_band, peak_flux, falls = [], [], []
    for b in range(phot.n_bands):
        rows = det & (band == b)
        if not rows.any():
            t_peak_band.append(math.nan)
            peak_flux.append(median_err)
            continue
        i = torch.nonzero(rows).flatten()[f[rows].argmax()]
        t_peak_band.append(float(t[i]))
        peak_flux.append(max(float(f[i]), median_err))
        after = rows & (t > t[i] + 1.0) & (f > 0) & (f < 0.9 * f[i])
        falls += (-(t[after] - t[i]) / torch.log(f[after] / f[i])).tolist()
    best = int(counts.argmax())
    t_peak = t_peak_band[best]
    t_peak_band = [t_peak if math.isnan(x) else x for x in t_peak_band]
    first = float(t[det].min())
    below_half = det & (band == best) & (t > t_peak) & (f < 0.5 * peak_flux[best])
    return dict(t_peak=t_peak, t_peak_band=t_peak_band, peak_flux=peak_flux,
                rise=max(1.0, (t_peak - first) / 3), fall=float(torch.tensor(falls).median())
                if falls else 30.0, span=float(t.max() - t.min()), flux_err=median_err,
                t_half=float(t[below_half].min()) if below_half.any() else math.nan)


def _starts(kind: str, s: dict, z: float) -> dict:
    """Start values of each model's parameters from :func:`light_curve_scales` (rest frame)."""
    rise, fall = s["rise"] / (1 + z), max(s["fall"], 3 * s["rise"]) / (1 + z)
    peak = torch.tensor(s["peak_flux"], dtype=torch.float64)
    if kind == "gaussian":
        return dict(t0=s["t_peak"], sigma=0.5 * (rise * 3 + fall), peak_flux=peak)
    if kind == "bazin":
        dt_peak = rise * math.log(fall / rise - 1)
        shape_at_peak = math.exp(-dt_peak / fall) / (1 + math.exp(-dt_peak / rise))
        return dict(t0=s["t_peak"] - dt_peak * (1 + z), A=peak / shape_at_peak,
                    tau_rise=rise, tau_fall=fall)
    # the rise sigmoid is 0.98 at the peak and 0.12 at the first detection; the plateau ends at
    # the peak (gamma = 2 rise). The former start (and LogNormal prior centre) of 0.1 fall,
    # ~3.5 days on LSQ12dlf, lay below the blend width and the plateau lengths its data prefer
    # (MAP 12-18 days), so the prior pulled against the data
    return dict(t0=s["t_peak"] - 2 * rise * (1 + z), A=peak * 1.02, beta=0.0,
                gamma=2 * rise, tau_rise=rise / 2, tau_fall=fall)


def villar_half_peak_plateau(scales: dict, tau_rise: float, z: float) -> dict | None:
    """A second start for a Villar light curve with a relative slope (rest-frame ``tau_rise``
    given): the rise centred at ``t0 = t_peak - rise`` (two thirds of the way from the first
    detection to the peak), then a sloped plateau through the best-sampled band's peak that
    ends where the band first falls to half its peak (``t_half``; :func:`light_curve_scales`
    gives all three). A tidal disruption event looks like this: its early decline is a power
    law, which a Villar fit takes up with a long declining plateau and a slow exponential tail.
    The default start (:func:`from_photometry`) ends the plateau at the peak, as for LSQ12dlf;
    from it L-BFGS-B stops on PS1-10jh in a local optimum with a rising plateau (log p 89 to
    122 below the best). Returns ``{"t0", "gamma", "beta", "amplitude_factor"}`` (multiply the
    peak fluxes by the factor; ``beta`` per rest-frame day) or None when the band never falls
    to half its peak, or the line is not a declining plateau of positive level.

    Example:
        >>> scales = dict(t_peak=30.0, rise=10.0, t_half=80.0)
        >>> out = villar_half_peak_plateau(scales, tau_rise=2.0, z=0.0)
        >>> out["t0"], round(out["gamma"], 1), out["beta"] < 0
        (20.0, 60.0, True)
    """
    t_half = scales.get("t_half", math.nan)
    if math.isnan(t_half):
        return None
    t0 = scales["t_peak"] - scales["rise"]
    gamma, dt_peak = (t_half - t0) / (1 + z), scales["rise"] / (1 + z)
    if not 0 < dt_peak < gamma:
        return None
    # A (1 + beta dt) s(dt) through (dt_peak, peak) and (gamma, peak / 2): two linear equations
    at_peak = 1 + math.exp(-dt_peak / tau_rise)  # 1 / s(dt_peak)
    at_end = 0.5 * (1 + math.exp(-gamma / tau_rise))
    beta = (at_end - at_peak) / (at_peak * gamma - at_end * dt_peak)
    factor = at_peak / (1 + beta * dt_peak)
    if not (beta < 0 and factor > 0 and 1 + beta * gamma > 0):
        return None
    return dict(t0=t0, gamma=gamma, beta=beta, amplitude_factor=factor)


def from_photometry(model: str, phot, shared: Sequence | None = None, baseline: bool = False,
                    redshift: float | None = None, **options):
    """A light-curve model for ``phot``'s bands, started from the data, its Params dynamic.

    Arguments:
        model: ``"gaussian"``, ``"bazin"`` or ``"villar"``.
        phot: a :class:`~skyfit.data.Photometry` (times relative to its reference).
        shared: parameters shared by all bands, or ``(name, bands)`` pairs (default
            ``SHARED_DEFAULT[model]``: ``t0`` and ``tau_rise`` for Bazin; ``t0``, ``tau_rise``,
            ``gamma`` and ``beta`` for Villar; ``t0`` for the Gaussian).
        baseline: add a per-band baseline ``B`` (Bazin always has one).
        redshift: the source's redshift (default ``phot.redshift``; rest-frame time scales);
            kept static. options: more keywords for the model (e.g. ``dimming``; for Villar
            ``transition_fraction``, a plateau-end blend scaled to the decline). A Villar model
            is built with ``relative_slope=True`` unless ``options`` say otherwise, so its
            plateau slope can be shared by bands (:class:`~skyfit.lightcurves.Villar`).

    Example:
        >>> from skyfit.data import load_example
        >>> phot = load_example("PS1-10jh")
        >>> lc = from_photometry("bazin", phot)
        >>> lc.bands, tuple(lc.tau_fall.shape), lc.t0.shape, lc.tau_rise.shape
        (('NUV', 'g', 'r', 'i', 'z'), (5,), (), ())
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    shared = SHARED_DEFAULT[model] if shared is None else shared
    z = phot.redshift if redshift is None else redshift
    starts = _starts(model, light_curve_scales(phot), z or 0.0)
    if model == "bazin" and not baseline:
        starts["B"] = 0.0  # declared, and held at 0 below
    elif baseline:
        starts["B"] = 0.0
    if model == "villar":
        options.setdefault("relative_slope", True)  # a slope that can be shared (Villar doc)
    lc = MODELS[model](bands=phot.bands, shared=shared, redshift=z, **starts, **options)
    lc.to_dynamic()
    if z is not None:
        lc.redshift.to_static()
    if model == "bazin" and not baseline:
        lc.B.to_static()
    return lc


def default_priors(likelihood) -> dict:
    """Weakly-informative priors for a photometric fit, ``{Param: Distribution}`` for
    :class:`~skyfit.Posterior` (``priors=``), centred on the light curve's current values
    (the data-driven starts of :func:`from_photometry`):

    - ``t0``: Normal(start, span / 3), the span of the data's times;
    - time scales (``tau_rise``, ``tau_fall``, ``sigma``, ``gamma``): LogNormal(ln start, 1), a
      factor e either way at 1 sd (flat priors leave a rise without data unconstrained);
    - amplitudes (``A``, ``peak_flux``): LogNormal(ln start, 1);
    - ``beta``: Normal(0, A / 100 per day), or Normal(0, 0.01 per day) for a slope relative to
      ``A`` (the plateau loses 1% of ``A`` per day at 1 sd); ``B``: Normal(0, 3 median flux errors);
    - the likelihood's ``jitter``: HalfCauchy(median error): likely below the errors, but
      free to reach several times them, which is when a jitter is needed (a HalfNormal of
      that scale held it at 0.6x the scatter of data whose errors were quoted 5x too small).

    Only dynamic Params get one; others are left out.

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood
        >>> t = torch.arange(0.0, 40.0, 4.0, dtype=torch.float64)
        >>> lc = GaussianLightCurve(t0=12.0, sigma=4.0, peak_flux=10.0)
        >>> flux = lc.flux(t).detach()
        >>> lc.to_dynamic()
        >>> priors = default_priors(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(10)))
        >>> {p.name: type(d).__name__ for p, d in priors.items()}
        {'t0': 'Normal', 'sigma': 'LogNormal', 'peak_flux': 'LogNormal'}
    """
    lc = likelihood.lightcurve
    span = float(likelihood.time.max() - likelihood.time.min())
    err = float(likelihood.error[likelihood.detected].median())
    priors: dict = {}

    def value(name):
        return torch.as_tensor(getattr(lc, name).value, dtype=torch.float64)

    rules = {
        "t0": lambda v: Normal(v, span / 3),
        "B": lambda v: Normal(torch.zeros_like(v), 3 * err),
        "beta": lambda v: Normal(torch.zeros_like(v), 0.01 if getattr(lc, "relative_slope", False)
                                 else value("A").mean() / 100),
    }
    for name in ("tau_rise", "tau_fall", "sigma", "gamma", "A", "peak_flux"):
        rules[name] = lambda v: LogNormal(v.log(), 1.0)
    for name, rule in rules.items():
        param = getattr(lc, name, None)
        if param is not None and param.dynamic:
            priors[param] = rule(value(name))
    if likelihood.has_jitter and likelihood.jitter.dynamic:
        priors[likelihood.jitter] = HalfCauchy(torch.full(likelihood.jitter.shape, err,
                                                          dtype=torch.float64))
    return priors
