"""Strong lensing: critical curves, caustics and the lens-model figure."""

from __future__ import annotations

import numpy as np

from ._arrays import _np

__all__ = ["plot_critical_curves", "plot_lens_model"]


def plot_critical_curves(lens, extent=(-3.0, 3.0, -3.0, 3.0), axes=None, n: int = 400,
                         images=None, source_position=None):
    """Critical curves (image plane, left) and caustics (source plane, right) of ``lens``.

    Arguments:
        lens: any :class:`~skyfit.lenses.ThinLens`.
        extent: image-plane region ``(l, r, b, t)``, arcsec.
        axes: two matplotlib axes to draw on (default: a new figure).
        images: a :class:`~skyfit.lenses.LensImages` to mark (sized by magnification).
        source_position: ``(x, y)`` of a point source to mark in the source plane.

    Example:
        >>> from skyfit import SIS
        >>> fig = plot_critical_curves(SIS(theta_E=1.0), extent=(-2, 2, -2, 2), n=100)
        >>> [ax.get_title() for ax in fig.axes]
        ['image plane', 'source plane']
    """
    import matplotlib.pyplot as plt

    from ..lenses import critical_curves

    new = axes is None
    if new:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.4))
    fig = axes[0].figure
    critical, caustics = critical_curves(lens, extent, n)
    for k, ((cx, cy), (sx, sy)) in enumerate(zip(critical, caustics)):
        axes[0].plot(_np(cx), _np(cy), color="C0", lw=1, label="critical curve" if k == 0 else None)
        axes[1].plot(_np(sx), _np(sy), color="C1", lw=1, label="caustic" if k == 0 else None)
    if images is not None:
        mu = np.abs(_np(images.magnification))
        axes[0].scatter(_np(images.x), _np(images.y), s=20 + 15 * np.sqrt(mu), c="C3", zorder=3,
                        label="images")
    if source_position is not None:
        axes[1].plot(*source_position, "*", color="C3", ms=10, label="source")
    for ax, title in zip(axes, ("image plane", "source plane")):
        ax.set_aspect("equal")
        ax.set_xlabel("x [arcsec]")
        ax.set_ylabel("y [arcsec]")
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    if new:
        fig.tight_layout()
    return fig


def plot_lens_model(data, model, lens, grid, sigma=None, n: int = 300, cmap: str = "magma"):
    """Data and model with the critical curves, normalised residuals, and the caustics.

    Arguments:
        data, model: ``(ny, nx)`` images (flux per pixel). lens: the fitted mass model.
        grid: the :class:`~skyfit.PixelGrid` of the data. sigma: per-pixel noise (residuals are
            then ``(data - model) / sigma``).

    Example:
        >>> import numpy as np
        >>> from skyfit import SIS, PixelGrid
        >>> image = np.zeros((8, 8))
        >>> fig = plot_lens_model(image, image, SIS(theta_E=1.0), PixelGrid((8, 8), 0.5), n=50)
        >>> xy = fig.axes[1].lines[0].get_xydata()  # an SIS's critical curve: the Einstein ring
        >>> round(float(np.hypot(xy[:, 0], xy[:, 1]).mean()), 2)
        1.0
    """
    import matplotlib.pyplot as plt

    data, model = _np(data), _np(model)
    resid = data - model if sigma is None else (data - model) / np.broadcast_to(_np(sigma),
                                                                                 data.shape)
    fig, axes = plt.subplots(1, 4, figsize=(15.0, 3.8))
    extent = grid.extent
    vmin, vmax = np.percentile(model, [1, 99.7])
    kw = dict(origin="lower", extent=extent)
    for ax, img, title in ((axes[0], data, "data"), (axes[1], model, "model")):
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, **kw)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    rmax = 4.0 if sigma is not None else max(np.abs(resid).max(), 1e-12)
    im = axes[2].imshow(resid, cmap="RdBu_r", vmin=-rmax, vmax=rmax, **kw)
    axes[2].set_title("(data - model) / sigma" if sigma is not None else "data - model",
                      fontsize=10)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    plot_critical_curves(lens, extent, axes=[axes[1], axes[3]], n=n)
    axes[1].set_title("model + critical curves", fontsize=10)
    axes[1].set_xlim(extent[:2])
    axes[1].set_ylim(extent[2:])
    fig.tight_layout()
    return fig
