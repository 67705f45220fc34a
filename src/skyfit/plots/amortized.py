"""Diagnostic plots of amortised posteriors (seed 000's figures): predicted vs true values with the
diagonal, per-parameter RMSE, SBC rank histograms and expected coverage. Each function takes
plain arrays (or a calibration dict) and returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["standardised_rmse", "predicted_vs_true_plot", "rmse_plot", "sbc_rank_plot",
           "coverage_plot", "posterior_overlay_plot"]


def standardised_rmse(truths, predictions) -> np.ndarray:
    """Per-parameter RMSE of ``predictions`` against ``truths`` (both ``(object, parameter)``),
    in units of each parameter's spread among the truths (seed 000's "standardised" RMSE)."""
    truths = np.asarray(truths, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    return np.sqrt(np.mean((predictions - truths) ** 2, axis=0)) / truths.std(0)


def predicted_vs_true_plot(truths, predictions, names: Sequence[str], errors=None):
    """One panel per parameter: posterior mean (``predictions``, with ``errors`` as error bars if
    given) against the true value, with the diagonal ``y = x``."""
    import matplotlib.pyplot as plt

    truths, predictions = np.asarray(truths), np.asarray(predictions)
    n = truths.shape[1]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    rmse = standardised_rmse(truths, predictions)
    for j, ax in enumerate(axes[0]):
        yerr = None if errors is None else np.asarray(errors)[:, j]
        ax.errorbar(truths[:, j], predictions[:, j], yerr=yerr, fmt=".", ms=3, alpha=0.6,
                    elinewidth=0.5)
        lo, hi = truths[:, j].min(), truths[:, j].max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel("posterior mean")
        ax.set_title(f"standardised RMSE {rmse[j]:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def rmse_plot(truths, predictions, names: Sequence[str], reference=None,
              reference_label: str = "reference"):
    """Bar chart of :func:`standardised_rmse` per parameter (and of a ``reference`` set of
    RMSEs, e.g. the original paper's, next to it)."""
    import matplotlib.pyplot as plt

    rmse = standardised_rmse(truths, predictions)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3))
    width = 0.4 if reference is not None else 0.6
    ax.bar(x, rmse, width, label="this network")
    if reference is not None:
        ax.bar(x + width, reference, width, label=reference_label)
        ax.legend()
    ax.set_xticks(x + (width / 2 if reference is not None else 0), names)
    ax.set_ylabel("standardised RMSE")
    fig.tight_layout()
    return fig


def sbc_rank_plot(calibration: dict, names: Sequence[str], bins: int = 20):
    """Histogram of SBC ranks per parameter with the uniform expectation and its 99% band."""
    import matplotlib.pyplot as plt
    from scipy import stats

    ranks = np.asarray(calibration["ranks"])
    n_sims, n = ranks.shape
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.6), squeeze=False)
    expected = n_sims / bins
    lo, hi = stats.binom.ppf([0.005, 0.995], n_sims, 1 / bins)
    for j, ax in enumerate(axes[0]):
        ax.axhspan(lo, hi, color="0.85")
        ax.axhline(expected, color="k", lw=1)
        ax.hist(ranks[:, j], bins=bins, range=(0, calibration["n_draws"] + 1), histtype="step")
        ax.set_title(f"{names[j]} (p={calibration['sbc_pvalue'][j]:.2f})", fontsize=9)
        ax.set_xlabel("rank")
    fig.tight_layout()
    return fig


def coverage_plot(calibration: dict):
    """Empirical vs nominal coverage of the HPD regions, with the diagonal."""
    import matplotlib.pyplot as plt

    levels = sorted(calibration["coverage"])
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(levels, [calibration["coverage"][c] for c in levels], "o-")
    ax.set_xlabel("nominal credibility")
    ax.set_ylabel("empirical coverage")
    fig.tight_layout()
    return fig


def posterior_overlay_plot(draws_a, draws_b, names: Sequence[str], labels=("a", "b"),
                           pair=(0, 1), truth=None):
    """Scatter of two posteriors' draws in one parameter pair (e.g. amortised vs NUTS), to show
    that both find the same (degenerate) shape."""
    import matplotlib.pyplot as plt

    i, j = pair
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    for draws, label, colour in ((draws_a, labels[0], "C0"), (draws_b, labels[1], "C1")):
        d = np.asarray(draws).reshape(-1, len(names))
        ax.scatter(d[:, i], d[:, j], s=2, alpha=0.3, color=colour, label=label)
    if truth is not None:
        ax.plot(truth[i], truth[j], "k*", ms=10, label="truth")
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    return fig
