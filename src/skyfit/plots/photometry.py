"""``plot_photometry``: a multi-band light curve with its fitted model, limits and residuals."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["plot_photometry", "model_flux_draws"]

_BAND_COLOURS = {"NUV": "#7b3294", "FUV": "#40004b", "U": "#8e44ad", "u": "#8e44ad",
                 "B": "#2166ac", "g": "#1a9850", "V": "#66a61e", "r": "#d73027",
                 "R": "#e66101", "i": "#8c510a", "I": "#b35806", "z": "#543005", "y": "#333333"}
_MAG_PER_LN = 2.5 / math.log(10.0)


def _draws_of(result, posterior, n_draws: int, seed: int) -> torch.Tensor:
    """Parameter vectors ``(n, dim)`` from a MAP result, samples, a Laplace result or a tensor."""
    gen = torch.Generator().manual_seed(seed)
    if result is None:
        return posterior.initial()[None]
    if torch.is_tensor(result) or isinstance(result, np.ndarray):
        return torch.as_tensor(result, dtype=torch.float64).reshape(-1, posterior.dim)
    if hasattr(result, "draws"):  # Samples: (chain, draw, dim)
        flat = torch.as_tensor(np.asarray(result.draws), dtype=torch.float64)
        flat = flat.reshape(-1, flat.shape[-1])
        pick = torch.randperm(flat.shape[0], generator=gen)[:n_draws]
        return flat[pick]
    if hasattr(result, "covariance"):  # Laplace: draws inside the bounds
        mean, cov = result.mean.to(torch.float64), result.covariance.to(torch.float64)
        z = torch.randn(8 * n_draws, mean.shape[0], generator=gen, dtype=torch.float64)
        x = mean + z @ torch.linalg.cholesky(cov).T
        # draws outside are left out (a truncated Gaussian): clamped onto a bound such as
        # tau_fall = 0 they drew step-shaped curves, infinite before t0, into the band;
        # clamped only when too few fall inside
        inside = ((x > posterior.lower) & (x < posterior.upper)).all(-1)
        x = torch.cat([x[inside], torch.clamp(x[~inside], posterior.lower, posterior.upper)])
        return x[:n_draws]
    return torch.as_tensor(result.x, dtype=torch.float64)[None]  # MAP


def model_flux_draws(posterior, x: torch.Tensor, t: torch.Tensor, band) -> torch.Tensor:
    """The light curve of ``posterior.likelihood`` at times ``t`` in ``band`` for each parameter
    vector of ``x (n, dim)``: ``(n, len(t))``."""
    lc = posterior.likelihood.lightcurve
    values = posterior.unpack(x)
    by_param = {p: values[label] for label, (_, _, p) in posterior.slices.items()}
    params = [by_param[p] for p in lc.dynamic_params]
    with torch.no_grad():
        return lc.flux(t, band=band, params=params) if params else lc.flux(t, band=band)[None]


def _jitter(posterior, draws: torch.Tensor, b: int, mag: bool) -> float:
    """Band ``b``'s median fitted jitter where the likelihood fits one in the plotted space
    (magnitudes or fluxes), else 0: the residuals are then in the units the fit judged them."""
    like = posterior.likelihood
    jitter = getattr(like, "jitter", None) if getattr(like, "has_jitter", False) else None
    if jitter is None or not jitter.dynamic or like.space != ("mag" if mag else "flux"):
        return 0.0
    label = next(k for k, (_, _, p) in posterior.slices.items() if p is jitter)
    j = posterior.unpack(draws)[label].median(0).values
    return float(j[b]) if j.ndim else float(j)


def _to_space(flux, zero_point: float, mag: bool):
    if not mag:
        return flux
    flux = np.asarray(flux, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, zero_point - _MAG_PER_LN * np.log(flux), np.nan)


def _arrow(y_detected: np.ndarray, mag: bool) -> float:
    """Length of an upper limit's arrow: 0.3 mag, or 8% of the largest |flux| detected."""
    if mag:
        return 0.3
    y = np.abs(y_detected[np.isfinite(y_detected)])
    return 0.08 * y.max() if y.size else 1.0


def _plot_band(ax, phot, b: int, colour, mag: bool, label: str):
    rows = (phot.band == b) if phot.band is not None else torch.ones(len(phot), dtype=torch.bool)
    det, lim = rows & phot.detected, rows & phot.upper_limit
    t = phot.time.numpy()
    if mag:
        y, err = phot.mag.numpy(), phot.mag_err.numpy()
    else:
        y, err = phot.flux.numpy(), phot.flux_err.numpy()
    d = det.numpy()
    ax.errorbar(t[d], y[d], err[d], fmt="o", ms=3.5, color=colour, label=label, zorder=3)
    if lim.any():
        l_ = lim.numpy()
        y_lim = phot.limit_mag.numpy()[l_] if mag else phot.limit.numpy()[l_]
        arrow = _arrow(y[d], mag)
        # an upper limit on flux points to fainter values: larger magnitudes, smaller fluxes
        ax.errorbar(t[l_], y_lim, yerr=arrow, lolims=mag, uplims=not mag, fmt="v", ms=4,
                    color=colour, alpha=0.6, zorder=2, mfc="none")
    return d


def plot_photometry(photometry, result=None, posterior=None, *, mag: bool = True,
                    panels: bool = False, n_draws: int = 40, band_interval: float = 0.68,
                    residuals: bool = True, seed: int = 0, figsize=None):
    """Plot a :class:`~skyfit.data.Photometry` with the fitted light curve, per band.

    Detections are points with error bars, upper limits open triangles with arrows towards
    fainter values. With a fit, each band gets its model: the median over the draws and the
    central ``band_interval`` credible band (from NUTS samples, Laplace draws inside the
    bounds, or one MAP curve). The axes are scaled to the data and to the median model between
    each band's first and last detections (at most the data's range beyond the data),
    never to the band, so a parameter the data do not constrain cannot flatten the plot. A
    residual panel shows ``(data - model) / error`` of the median model (the error with the
    fitted ``jitter`` of a likelihood in the plotted space added in quadrature).

    Arguments:
        photometry: the data. result: a MAP result, NUTS ``Samples``, a Laplace result (its
            draws outside the bounds left out), or parameter vectors ``(n, dim)``; None for
            the data alone.
        posterior: the :class:`~skyfit.Posterior` of a :class:`~skyfit.PhotometryLikelihood`
            (default ``result.density``). mag: magnitudes (inverted axis) or fluxes.
        panels: one panel per band instead of one colour per band on one panel.

    Returns:
        The matplotlib Figure.

    Example:
        >>> from skyfit.data import Photometry
        >>> phot = Photometry([0.0, 1.0], ["g", "r"], flux=[100.0, 10.0], flux_err=[1.0, 1.0])
        >>> fig = plot_photometry(phot)  # m_AB = 25 - 2.5 log10(flux)
        >>> [line.get_ydata().tolist() for line in fig.axes[0].lines], fig.axes[0].get_ylabel()
        ([[20.0], [22.5]], 'AB mag (zp 25)')
    """
    import matplotlib.pyplot as plt

    posterior = posterior if posterior is not None else getattr(result, "density", None)
    names = photometry.bands or ("",)
    n_rows = len(names) if panels else 1
    heights = [3] * n_rows + ([1.3] if residuals and posterior is not None else [])
    fig, axes = plt.subplots(len(heights), 1, sharex=True, squeeze=False, height_ratios=heights,
                             layout="constrained",
                             figsize=figsize or (7, 0.75 * sum(heights) + 1.0))
    axes = axes[:, 0]
    if mag:  # inverted before errorbar, which points the limits' arrowheads by the axis then
        for ax in axes[:n_rows]:
            ax.invert_yaxis()
    draws = _draws_of(result, posterior, n_draws, seed) if posterior is not None else None
    t = photometry.time
    grid = torch.linspace(float(t.min()) - 5, float(t.max()) + 5, 300, dtype=torch.float64)
    interpolated = [[] for _ in axes]  # each axis's model between its bands' detections
    for b, name in enumerate(names):
        ax = axes[b if panels else 0]
        colour = _BAND_COLOURS.get(name, f"C{b % 10}")
        d = _plot_band(ax, photometry, b, colour, mag, name)
        if draws is None:
            continue
        band = None if photometry.bands is None else name
        curves = _to_space(model_flux_draws(posterior, draws, grid, band).numpy(),
                           photometry.zero_point, mag)
        lo, mid, hi = np.nanquantile(curves, [(1 - band_interval) / 2, 0.5,
                                              (1 + band_interval) / 2], axis=0)
        ax.plot(grid, mid, color=colour, lw=1.3)
        if d.any():  # a peak between two points is the data's, not an extrapolation
            t_d = t.numpy()[d]
            interpolated[b if panels else 0].append(
                mid[(grid.numpy() >= t_d.min()) & (grid.numpy() <= t_d.max())])
        if draws.shape[0] > 1:
            ax.fill_between(grid.numpy(), lo, hi, color=colour, alpha=0.25, lw=0)
        if residuals:
            at_data = _to_space(model_flux_draws(posterior, draws, t, band).numpy(),
                                photometry.zero_point, mag)
            y, err = ((photometry.mag, photometry.mag_err) if mag else
                      (photometry.flux, photometry.flux_err))
            scale = np.hypot(err.numpy(), _jitter(posterior, draws, b, mag))
            res = (y.numpy() - np.nanmedian(at_data, axis=0)) / scale
            axes[-1].plot(t.numpy()[d], res[d], "o", ms=3, color=colour)
    _finish_axes(axes, photometry, mag, panels, names, residuals and draws is not None,
                 interpolated)
    return fig


def _finish_axes(axes, phot, mag: bool, panels: bool, names, residuals: bool,
                 interpolated) -> None:
    y = (phot.mag if mag else phot.flux).numpy()
    err = (phot.mag_err if mag else phot.flux_err).numpy()
    lim = (phot.limit_mag if mag else phot.limit).numpy()
    band = phot.band.numpy() if phot.band is not None else np.zeros(len(phot), int)
    det = phot.detected.numpy()
    for i, ax in enumerate(axes[: len(axes) - residuals]):
        rows = band == i if panels else np.ones(len(phot), bool)
        # the limits' arrows inside the axes too: cut off, a limit looks like a detection
        arrow_end = lim + _arrow(y[rows & det], mag) * (1 if mag else -1)
        values = np.concatenate([(y - err)[rows], (y + err)[rows], lim[rows], arrow_end[rows]])
        values = values[np.isfinite(values)]
        if values.size:  # the data set the limits: an unconstrained model band cannot
            lo, hi = values.min(), values.max()
            # the model between a band's detections too (a peak between two points was cut
            # off), at most the data's range beyond them
            model = np.concatenate([np.ravel(m) for m in interpolated[i]] or [np.empty(0)])
            model = np.clip(model[np.isfinite(model)], 2 * lo - hi, 2 * hi - lo)
            lo, hi = min(lo, model.min(initial=lo)), max(hi, model.max(initial=hi))
            pad = 0.08 * (hi - lo) + (0.05 if mag else 1e-9)
            ax.set_ylim((hi + pad, lo - pad) if mag else (lo - pad, hi + pad))
        ax.set_ylabel(f"AB mag (zp {phot.zero_point:g})" if mag else "flux")
        if panels:
            ax.text(0.98, 0.9, names[i], transform=ax.transAxes, ha="right", va="top")
        elif any(names):  # one unnamed band: no legend to show
            ax.legend(fontsize="small", ncol=min(len(names), 6))
    if residuals:
        axes[-1].axhline(0.0, color="0.5", lw=0.8)
        axes[-1].set_ylabel("resid. / sigma")
    axes[-1].set_xlabel(f"days since MJD {phot.reference:.12g}")
