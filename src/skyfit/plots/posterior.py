"""Posterior draws: corner and trace plots of any skyfit Samples (or a plain array)."""

from __future__ import annotations

import logging
import warnings

import numpy as np

__all__ = ["corner_plot", "trace_plot"]


def _draws_and_names(samples, names=None):
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

    Example:
        >>> import numpy as np
        >>> from skyfit.inference import Samples
        >>> draws = np.random.default_rng(0).normal(size=(2, 500, 2))  # (chain, draw, parameter)
        >>> samples = Samples(draws, ["a", "b"], np.zeros((2, 500)), "demo")
        >>> fig = corner_plot(samples, truths={"a": 0.0, "b": 0.0})
        >>> len(fig.axes)  # 2 x 2 panels
        4
    """
    import corner

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
    kwargs.setdefault("title_kwargs", {"fontsize": 9})  # long names and values: no overlap
    kwargs.setdefault("label_kwargs", {"fontsize": 9})
    kwargs.setdefault("max_n_ticks", 3)
    # corner logs one line per 2-D panel whose draws are too few for contours (short chains):
    # counted here and reported in one sentence
    too_few = _CountTooFewPoints()
    root = logging.getLogger()
    root.addFilter(too_few)
    try:
        fig = corner.corner(draws.reshape(-1, draws.shape[-1]), truths=truths, **kwargs)
    finally:
        root.removeFilter(too_few)
    if too_few.count:
        warnings.warn(f"corner_plot: {too_few.count} of the 2-D panels had too few distinct "
                      f"draws for contours ({draws.shape[0] * draws.shape[1]} draws in all), "
                      f"so they show points only; run longer chains for contours", stacklevel=2)
    return fig


class _CountTooFewPoints(logging.Filter):
    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Too few points to create valid contours" in record.getMessage():
            self.count += 1
            return False
        return True


def trace_plot(samples, names=None, max_chains: int = 16, figsize=None):
    """Trace (value per draw, one line per chain) and marginal histogram per parameter.

    Arguments:
        samples: :class:`~skyfit.inference.Samples` or an array ``(chain, draw, parameter)``.
        names: parameters to show (default all).
        max_chains: at most this many chains are drawn (emcee runs have many walkers).

    Returns the matplotlib figure.

    Example:
        >>> import numpy as np
        >>> from skyfit.inference import Samples
        >>> draws = np.random.default_rng(0).normal(size=(2, 500, 2))  # (chain, draw, parameter)
        >>> samples = Samples(draws, ["a", "b"], np.zeros((2, 500)), "demo")
        >>> fig = trace_plot(samples)
        >>> len(fig.axes)  # a trace and a histogram per parameter
        4
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
