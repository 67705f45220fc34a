"""Plots: image stacks (data / model / residuals), light curves, lensing and posterior figures.

Plots read results and arrays; they never run a fit. Each returns a matplotlib Figure.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_image_stack", "plot_light_curve", "save_model_graph", "save"]


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` and close it; returns the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_image_stack(data, model, sigma=None, extent=None, titles: Sequence[str] | None = None,
                     cmap: str = "magma"):
    """Data, model and residual panels, one column per image.

    Arguments:
        data, model: ``(n, ny, nx)`` or ``(ny, nx)`` images (flux per pixel).
        sigma: per-pixel noise; residuals are then ``(data - model) / sigma`` (else data - model).
        extent: ``grid.extent`` for axes in arcsec. titles: one per image.
    """
    data, model = _np(data), _np(model)
    if data.ndim == 2:  # one image: one column (np.atleast_3d would append the axis instead)
        data, model = data[None], model[None]
    if sigma is not None and np.ndim(_np(sigma)) == 2:
        sigma = _np(sigma)[None]
    if data.shape != model.shape:
        raise ValueError(f"data {data.shape} and model {model.shape} differ in shape")
    resid = data - model
    label = "data - model"
    if sigma is not None:
        resid = resid / np.broadcast_to(_np(sigma), resid.shape)
        label = "(data - model) / sigma"
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
        for ax in axes[:, i]:
            ax.tick_params(labelsize=7)
    for row, (name, im) in enumerate((("data", im0), ("model", im1), (label, im2))):
        axes[row, 0].set_ylabel(name + ("\n[arcsec]" if extent is not None else ""), fontsize=9)
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.8, pad=0.01)
    return fig


def plot_light_curve(times, points: Mapping[str, Sequence] | None = None, curve=None,
                     truth=None, ax=None, ylabel: str = "flux [e-/s]"):
    """A light curve: per-epoch flux estimates, a fitted model with its 1-sigma band, the truth.

    Arguments:
        times: epochs (days) of the ``points``.
        points: ``{label: [(value, error), ...]}``, one pair per epoch.
        curve: ``(t, flux, flux_err)`` of the fitted model (``flux_err`` may be None).
        truth: ``(t, flux)`` of the true light curve.
    """
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


def save_model_graph(module, path: str | Path) -> Path | None:
    """Render a caskade module's graph with graphviz to ``path`` + ``.png``.

    Needs the graphviz ``dot`` program; without it the DOT source is written to ``path.gv``
    and a warning says how to install graphviz.
    """
    path = Path(path)
    dot = module.graphviz()
    if shutil.which("dot") is None:
        gv = path.with_suffix(".gv")
        gv.write_text(dot.source)
        warnings.warn(f"graphviz 'dot' not found: wrote the DOT source to {gv}; install graphviz "
                      "(apt-get install graphviz / conda install graphviz) to get a PNG",
                      stacklevel=2)
        return gv
    return Path(dot.render(filename=path.name, directory=str(path.parent), format="png",
                           cleanup=True))


# -- posterior draws: corner and trace plots (any skyfit Samples) --------------------------------
def _draws_and_names(samples, names=None):
    import numpy as np
    if hasattr(samples, "draws"):
        draws, all_names = np.asarray(samples.draws), list(samples.names)
    else:
        draws = np.asarray(samples, dtype=float)
        draws = draws[None] if draws.ndim == 2 else draws
        all_names = [f"x{i}" for i in range(draws.shape[-1])]
    if names is None:
        return draws, all_names
    missing = [n for n in names if n not in all_names]
    if missing:
        raise KeyError(f"no parameters {missing}; parameters are {all_names}")
    idx = [all_names.index(n) for n in names]
    return draws[..., idx], list(names)


def corner_plot(samples, truths=None, names=None, **kwargs):
    """Corner plot (``corner.corner``) of posterior draws: 1-D and 2-D marginals.

    Arguments:
        samples: :class:`~skyfit.inference.Samples`, or an array ``(n, parameter)`` or
            ``(chain, draw, parameter)``.
        truths: true values, a sequence (one per plotted parameter) or ``{name: value}``.
        names: parameters to show (default all).
        kwargs: passed to ``corner.corner`` (``fig=`` overlays a second posterior on a figure,
            ``color=``, ``bins=``, ...).

    Returns the matplotlib figure.
    """
    import corner
    import numpy as np
    draws, names = _draws_and_names(samples, names)
    if isinstance(truths, dict):
        truths = [truths.get(n) for n in names]
    elif truths is not None:
        truths = list(np.asarray(truths, dtype=float).ravel())
        if len(truths) != len(names):
            raise ValueError(f"{len(truths)} truths for {len(names)} parameters {names}")
    kwargs.setdefault("labels", names)
    kwargs.setdefault("show_titles", True)
    kwargs.setdefault("title_fmt", ".3g")
    kwargs.setdefault("quantiles", [0.16, 0.5, 0.84])
    return corner.corner(draws.reshape(-1, draws.shape[-1]), truths=truths, **kwargs)


def trace_plot(samples, names=None, max_chains: int = 16, figsize=None):
    """Trace (value per draw, one line per chain) and marginal histogram per parameter.

    Arguments:
        samples: :class:`~skyfit.inference.Samples` or an array ``(chain, draw, parameter)``.
        names: parameters to show (default all).
        max_chains: at most this many chains are drawn (emcee runs have many walkers).

    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    draws, names = _draws_and_names(samples, names)
    n = len(names)
    fig, axes = plt.subplots(n, 2, figsize=figsize or (10, 1.8 * n + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    chains = draws[:max_chains]
    alpha = 0.8 if chains.shape[0] <= 4 else 0.4
    for j, name in enumerate(names):
        ax_t, ax_h = axes[j]
        for c in range(chains.shape[0]):
            ax_t.plot(chains[c, :, j], lw=0.5, alpha=alpha)
            ax_h.hist(chains[c, :, j], bins=30, histtype="step", density=True,
                      orientation="horizontal", alpha=alpha)
        ax_t.set_ylabel(name)
        ax_h.sharey(ax_t)
        ax_h.tick_params(labelleft=False)
        if j < n - 1:
            ax_t.tick_params(labelbottom=False)
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("density")
    title = getattr(samples, "sampler", None)
    if title:
        fig.suptitle(f"{title}: {draws.shape[0]} chains x {draws.shape[1]} draws"
                     + (f" (first {max_chains} shown)" if draws.shape[0] > max_chains else ""))
    fig.tight_layout()
    return fig


__all__ += ["corner_plot", "trace_plot"]


# -- strong lensing: critical curves, caustics, lens-model figure --------------------------------
def plot_critical_curves(lens, extent=(-3.0, 3.0, -3.0, 3.0), axes=None, n: int = 400,
                         images=None, source_position=None):
    """Critical curves (image plane, left) and caustics (source plane, right) of ``lens``.

    Arguments:
        lens: any :class:`~skyfit.ThinLens`. extent: image-plane region ``(l, r, b, t)``, arcsec.
        axes: two matplotlib axes to draw on (default: a new figure).
        images: a :class:`~skyfit.LensImages` to mark (sized by magnification).
        source_position: ``(x, y)`` of a point source to mark in the source plane.
    """
    from .lenses import critical_curves

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
    """
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


__all__ += ["plot_critical_curves", "plot_lens_model"]
