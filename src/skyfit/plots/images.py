"""Image stacks (data / model / residuals) and light curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._arrays import _np

__all__ = ["plot_image_stack", "plot_light_curve"]


def plot_image_stack(data, model, sigma=None, extent=None, titles: Sequence[str] | None = None,
                     cmap: str = "magma", units: str = "flux / pixel"):
    """Data, model and residual panels, one column per image.

    Arguments:
        data, model: ``(n, ny, nx)`` or ``(ny, nx)`` images (flux per pixel).
        sigma: per-pixel noise; residuals are then ``(data - model) / sigma`` (else data - model).
        extent: ``grid.extent`` for axes in arcsec. titles: one per image.
        units: of the images, shown on the colour bars.

    Example:
        >>> import numpy as np
        >>> fig = plot_image_stack(np.ones((4, 4)), np.zeros((4, 4)), sigma=np.full((4, 4), 0.5))
        >>> [ax.get_ylabel() for ax in fig.axes[:3]]
        ['data', 'model', '(data - model) / sigma']
        >>> float(fig.axes[2].images[0].get_array().max())  # (1 - 0) / 0.5
        2.0
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data, model = _np(data), _np(model)
    if data.ndim == 2:  # one image: one column (np.atleast_3d would append the axis instead)
        data, model = data[None], model[None]
    if sigma is not None and np.ndim(_np(sigma)) == 2:
        sigma = _np(sigma)[None]
    if data.shape != model.shape:
        raise ValueError(f"data {data.shape} and model {model.shape} differ in shape")
    resid = data - model
    label, resid_units = "data - model", units
    if sigma is not None:
        resid = resid / np.broadcast_to(_np(sigma), resid.shape)
        label, resid_units = "(data - model) / sigma", "sigma"
    n = data.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(2.4 * n + 0.6, 7.2), squeeze=False)
    vmin, vmax = np.percentile(model, [1, 99.7])
    rmax = max(np.abs(resid).max(), 1e-12) if sigma is None else 4.0
    for i in range(n):
        kw = dict(origin="lower", extent=extent)
        im0 = axes[0, i].imshow(data[i], cmap=cmap, vmin=vmin, vmax=vmax, **kw)
        im1 = axes[1, i].imshow(model[i], cmap=cmap, vmin=vmin, vmax=vmax, **kw)
        im2 = axes[2, i].imshow(resid[i], cmap="RdBu_r", vmin=-rmax, vmax=rmax, **kw)
        if titles:
            axes[0, i].set_title(titles[i], fontsize=9)
        for row, ax in enumerate(axes[:, i]):
            # ticks inside the panel edges, labels on the outer panels only: no label runs
            # into the neighbour's
            ax.xaxis.set_major_locator(MaxNLocator(4, prune="both"))
            ax.yaxis.set_major_locator(MaxNLocator(4, prune="both"))
            ax.tick_params(labelsize=7, labelleft=i == 0, labelbottom=row == 2)
        if extent is not None:
            axes[2, i].set_xlabel("x [arcsec]", fontsize=8)
    for row, (name, im, unit) in enumerate((("data", im0, units), ("model", im1, units),
                                            (label, im2, resid_units))):
        axes[row, 0].set_ylabel(name + ("\ny [arcsec]" if extent is not None else ""), fontsize=9)
        bar = fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.8, pad=0.01)
        bar.set_label(unit, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def plot_light_curve(times, points: Mapping[str, Sequence] | None = None, curve=None,
                     truth=None, ax=None, ylabel: str = "flux [e-/s]"):
    """A light curve: per-epoch flux estimates, a fitted model with its 1-sigma band, the truth.

    Arguments:
        times: epochs (days) of the ``points``.
        points: ``{label: [(value, error), ...]}``, one pair per epoch.
        curve: ``(t, flux, flux_err)`` of the fitted model (``flux_err`` may be None).
        truth: ``(t, flux)`` of the true light curve.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(-5, 5, 11)
        >>> flux = np.exp(-t**2 / 8)
        >>> fig = plot_light_curve(t, points={"epochs": np.stack([flux, 0.1 * flux + 0.01], 1)},
        ...                        truth=(t, flux))
        >>> [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
        ['truth', 'epochs']
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    times = _np(times)
    offsets = np.linspace(-0.15, 0.15, max(len(points or {}), 1))
    for off, (label, rows) in zip(offsets, (points or {}).items()):
        rows = np.asarray(rows, dtype=float)
        ax.errorbar(times + off, rows[:, 0], rows[:, 1], fmt="o", ms=4, capsize=2, label=label)
    if curve is not None:
        t, f, e = curve
        t, f = _np(t), _np(f)
        ax.plot(t, f, color="C3", label="light-curve model (MAP)")
        if e is not None:
            e = _np(e)
            ax.fill_between(t, f - e, f + e, color="C3", alpha=0.25, lw=0, label="1-sigma")
    if truth is not None:
        ax.plot(_np(truth[0]), _np(truth[1]), "k--", lw=1, label="truth")
    ax.set_xlabel("time [days]")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig
