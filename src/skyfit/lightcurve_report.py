"""What ``skyfit lightcurve`` says and writes about a fit: the MAP summary and its warnings,
each band's peak, the parameter table, the plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .data.photometry import Photometry
from .posterior import Posterior

__all__ = ["light_curve_peaks"]


def _map_summary(post: Posterior, best, n_ok: int, fits: list, say) -> dict:
    """The MAP part of ``summary.json`` (at ``best``, set in ``post``), said as it is made."""
    like = post.likelihood
    dof = max(like.n_detections - post.dim, 1)
    chi2 = float(like.chi2())
    from scipy.stats import chi2 as chi2_distribution

    p_value = float(chi2_distribution.sf(chi2, dof))
    out = dict(converged=best.converged, log_density=best.log_density, starts=len(fits),
               starts_at_best=n_ok, chi2_per_dof=chi2 / dof, chi2_p_value=p_value,
               values=best.values, peaks=light_curve_peaks(like.lightcurve, like.photometry))
    say(f"MAP: {n_ok}/{len(fits)} starts at the best optimum (converged, within 1 in log p); "
        f"best log p {best.log_density:.2f}, chi2/dof {chi2 / dof:.2f}")
    for band, (n_det, own) in _per_band_counts(post).items():
        if n_det <= len(own):  # upper limits bound them from one side only
            say(f"warning: band {band}: {n_det} detection(s) for its own {', '.join(own)}: "
                f"the priors set them (within its upper limits); share them (--shared) or "
                f"leave the band out")
    if like.n_detections <= post.dim:
        say(f"warning: {like.n_detections} detections for {post.dim} parameters: the priors, "
            f"not the data, set some of them")
    elif p_value < 1e-3 and not like.has_jitter:
        # errors too small for the model (or the model too simple for the data): every
        # uncertainty below is then too small, by about sqrt(chi2/dof)
        say(f"warning: chi2/dof {chi2 / dof:.2f} over {dof} degrees of freedom (p = "
            f"{p_value:.1g}): the model does not fit within the errors, so the uncertainties "
            f"below are too small; --jitter fits an extra scatter per band")
    say("MAP peak per band (MJD, AB mag): " + ", ".join(
        f"{b} {p['mjd']:.2f} {p['mag']:.2f}" + ("" if p["inside"] else " (at the data's edge)")
        for b, p in out["peaks"].items()))
    return out


def light_curve_peaks(lc, phot: Photometry, step: float = 0.01) -> dict[str, dict]:
    """Each band's peak of ``lc`` at its current values, on a ``step``-day grid over the time
    span of ``phot``: ``{band: {"mjd", "mag" (AB, NaN if the flux is not positive), "flux",
    "inside"}}``, ``inside`` False where the maximum is at an end of the span (the light curve
    peaks outside the data). Bazin's ``t0`` and Villar's are not the peak time; this is.

    Example:
        >>> from skyfit import GaussianLightCurve
        >>> phot = Photometry([59000.0, 59010.0, 59020.0], flux=[1.0, 3.0, 1.0],
        ...                   flux_err=[0.1, 0.1, 0.1])
        >>> light_curve_peaks(GaussianLightCurve(t0=12.5, sigma=4.0, peak_flux=100.0), phot)
        {'': {'mjd': 59012.5, 'mag': 20.0, 'flux': 100.0, 'inside': True}}
    """
    t = torch.arange(float(phot.time.min()), float(phot.time.max()) + step / 2, step,
                     dtype=torch.float64)
    out = {}
    for name in phot.bands or ("",):
        with torch.no_grad():
            flux = lc.flux(t, band=name) if phot.bands else lc.flux(t)
        i = int(flux.argmax())
        f = float(flux[i])
        mag = phot.zero_point - 2.5 * math.log10(f) if f > 0 else math.nan
        out[name] = dict(mjd=round(float(t[i]) + phot.reference, 6), mag=round(mag, 6),
                         flux=f, inside=0 < i < len(t) - 1)
    return out


def _per_band_counts(post: Posterior) -> dict[str, tuple[int, list[str]]]:
    """``{band: (detections, [its own parameters])}``: the entries ``name[k]`` of band ``k``
    (every parameter the command does not share has one per band)."""
    like = post.likelihood
    bands = like.photometry.bands
    if not bands:
        return {}
    out = {}
    for k, band in enumerate(bands):
        own = [name.rpartition(".")[2].partition("[")[0] for name in post.names
               if name.endswith(f"[{k}]")]
        out[band] = (int((like.detected & (like.band == k)).sum()), own)
    return out


def _labels(names, bands) -> list[str]:
    """``"Bazin.A[0] (g)"``: the band of each per-band entry (every parameter the command does
    not share has one entry per band, in the order of ``bands``)."""
    if not bands:
        return list(names)
    out = []
    for name in names:
        head, _, index = name.rpartition("[")
        k = index[:-1] if head and index.endswith("]") else ""
        out.append(f"{name} ({bands[int(k)]})" if k.isdigit() and int(k) < len(bands)
                   else name)
    return out


def _print_table(say, names, mean, std, rhat, ess, problems) -> None:
    width = max(24, max(len(n) for n in names) + 2)  # long names must not run into the values
    say(f"{'parameter':<{width}}{'value':>12}{'sd':>11}" + ("   R-hat   ESS" if rhat is not None
                                                            else ""))
    for i, name in enumerate(names):
        row = f"{name:<{width}}{mean[i]:>12.4g}{std[i]:>11.3g}"
        if rhat is not None:
            verdict = "ok" if rhat[i] < 1.01 and ess[i] > 400 else "NOT CONVERGED"
            row += f"  {rhat[i]:6.3f} {ess[i]:5.0f}  {verdict}"
        say(row)
    for p in problems:
        say(f"warning: {p}")


def _write_plot(phot, result, post, mag: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import plot_photometry

    fig = plot_photometry(phot, result, post, mag=mag)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_ready(value):
    """``value`` with numpy scalars as Python numbers and every non-finite float as None
    (``null``): ``json`` writes a NaN float as a bare ``NaN``, which is not JSON (strict
    readers, e.g. JavaScript's and jq, refuse the whole file)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
