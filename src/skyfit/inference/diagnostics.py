"""Convergence diagnostics (thin wrappers over ArviZ) and calibration checks (KS, SBC ranks).

R-hat is the rank-normalised split R-hat and ESS the bulk / tail ESS of Vehtari et al. (2021),
"Rank-normalization, folding, and localization: an improved R-hat", arXiv:1903.08008, as
computed by ArviZ. Simulation-based calibration follows Talts et al. (2018), arXiv:1804.06788.

Every function takes draws shaped ``(chain, draw)`` or ``(chain, draw, parameter)`` and returns
one value per parameter (a scalar for 2-D input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "rhat",
    "ess",
    "mcse",
    "diagnostics_table",
    "ks_uniform",
    "sbc_ranks",
    "sbc_chi2",
]


def _as_3d(draws) -> tuple[np.ndarray, bool]:
    a = np.asarray(draws, dtype=np.float64)
    if a.ndim == 2:
        return a[..., None], True
    if a.ndim != 3:
        raise ValueError(f"draws must be (chain, draw) or (chain, draw, parameter), got {a.shape}")
    return a, False


def _dataset(a: np.ndarray, names: Sequence[str] | None = None):
    import arviz as az
    names = list(names) if names is not None else [f"x{i}" for i in range(a.shape[-1])]
    if len(set(names)) != len(names):  # arviz needs unique variable names
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return az.convert_to_dataset({n: a[..., i] for i, n in enumerate(names)}), names


def _per_param(ds, names, squeeze):
    out = np.array([float(ds[n].values) for n in names])
    return out[0] if squeeze else out


def rhat(draws) -> np.ndarray:
    """Rank-normalised split R-hat per parameter (``arviz.rhat(method="rank")``).

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000, 1))  # (chain, draw, parameter)
        >>> rhat(draws).round(2)
        array([1.])
    """
    import arviz as az
    a, squeeze = _as_3d(draws)
    ds, names = _dataset(a)
    return _per_param(az.rhat(ds, method="rank"), names, squeeze)


def ess(draws, method: str = "bulk") -> np.ndarray:
    """Effective sample size per parameter: ``"bulk"`` (rank-normalised), ``"tail"`` (5% / 95%
    quantiles) or any other ``arviz.ess`` method (``"mean"``, ``"sd"``, ...).

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000, 1))  # independent draws
        >>> bool(3000 < ess(draws)[0] < 5000)
        True
    """
    import arviz as az
    a, squeeze = _as_3d(draws)
    ds, names = _dataset(a)
    return _per_param(az.ess(ds, method=method), names, squeeze)


def mcse(draws, method: str = "mean") -> np.ndarray:
    """Monte Carlo standard error per parameter of the posterior ``"mean"`` or ``"sd"``.

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000, 1))
        >>> mcse(draws).round(2)  # about sd / sqrt(4000)
        array([0.02])
    """
    import arviz as az
    a, squeeze = _as_3d(draws)
    ds, names = _dataset(a)
    if method == "sd":  # arviz.mcse(method="sd") breaks under numba + numpy 2; summary's does not
        table = az.summary(ds, kind="diagnostics", round_to="none")
        out = table["mcse_sd"].to_numpy(dtype=float)
        return out[0] if squeeze else out
    return _per_param(az.mcse(ds, method=method), names, squeeze)


def diagnostics_table(draws, names: Sequence[str] | None = None,
                      quantiles: Sequence[float] = (0.05, 0.5, 0.95)):
    """A ``pandas.DataFrame`` with one row per parameter: mean, sd, the given quantiles,
    ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat`` (ArviZ's ``summary``).

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(4, 1000, 1))
        >>> list(diagnostics_table(draws, ["a"]).columns)  # doctest: +NORMALIZE_WHITESPACE
        ['mean', 'sd', 'q5%', 'q50%', 'q95%', 'mcse_mean', 'mcse_sd', 'ess_bulk', 'ess_tail',
         'r_hat']
    """
    import arviz as az
    a, _ = _as_3d(draws)
    ds, keys = _dataset(a, names)
    table = az.summary(ds, kind="diagnostics", round_to="none")
    table.index = list(names) if names is not None else keys
    flat = a.reshape(-1, a.shape[-1])
    table.insert(0, "mean", flat.mean(0))
    table.insert(1, "sd", flat.std(0, ddof=1))
    for j, q in enumerate(quantiles):
        table.insert(2 + j, f"q{100 * q:g}%", np.quantile(flat, q, axis=0))
    return table


def ks_uniform(x, lower: float = 0.0, upper: float = 1.0) -> float:
    """p-value of the Kolmogorov-Smirnov test that ``x`` is uniform on ``[lower, upper]``.

    The test assumes independent draws: thin MCMC output by its autocorrelation time first.

    Example:
        >>> import numpy as np
        >>> u = np.linspace(0.0005, 0.9995, 1000)
        >>> ks_uniform(u) > 0.99, ks_uniform(u**2) < 1e-6
        (True, True)
    """
    from scipy import stats
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(stats.kstest(x, "uniform", args=(lower, upper - lower)).pvalue)


def sbc_ranks(truths, draws) -> np.ndarray:
    """SBC rank statistics: for each replication and parameter, how many posterior draws lie
    below the true value.

    Arguments:
        truths: ``(replication, parameter)`` values drawn from the prior.
        draws: ``(replication, draw, parameter)`` (roughly independent, i.e. thinned) posterior
            draws given data simulated from each truth.

    Returns integer ranks ``(replication, parameter)`` in ``0 .. n_draw``; for a calibrated
    posterior they are uniform on those ``n_draw + 1`` values.

    Example:
        >>> import numpy as np
        >>> truths = np.array([[0.5], [2.5]])  # (replication, parameter)
        >>> draws = np.arange(4.0).reshape(1, 4, 1).repeat(2, axis=0)  # (replication, draw, param)
        >>> sbc_ranks(truths, draws)
        array([[1],
               [3]])
    """
    truths = np.asarray(truths, dtype=np.float64)
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 3 or truths.shape != (draws.shape[0], draws.shape[2]):
        raise ValueError(f"truths {truths.shape} and draws {draws.shape} must be (rep, param) "
                         "and (rep, draw, param)")
    return (draws < truths[:, None, :]).sum(axis=1)


def sbc_chi2(ranks, n_draws: int, n_bins: int = 10) -> np.ndarray:
    """Chi-square p-value per parameter that SBC ``ranks`` are uniform on ``0 .. n_draws``.

    The ``n_draws + 1`` rank values are split into ``n_bins`` contiguous bins; each bin's
    expected count is proportional to the number of rank values it holds (exact also when
    ``n_bins`` does not divide ``n_draws + 1``). Keep the expected count per bin >= 5.

    Example:
        >>> import numpy as np
        >>> ranks = (np.arange(100) % 10).reshape(100, 1)  # each rank 0..9 ten times: uniform
        >>> sbc_chi2(ranks, n_draws=9, n_bins=5)
        array([1.])
    """
    from scipy import stats
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    if ranks.min() < 0 or ranks.max() > n_draws:
        raise ValueError(f"ranks must lie in 0..{n_draws}, got {ranks.min()}..{ranks.max()}")
    groups = np.array_split(np.arange(n_draws + 1), n_bins)
    bin_of = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    expected = np.array([len(g) for g in groups], dtype=float) / (n_draws + 1) * ranks.shape[0]
    pvalues = []
    for j in range(ranks.shape[1]):
        observed = np.bincount(bin_of[ranks[:, j]], minlength=n_bins)
        pvalues.append(stats.chisquare(observed, expected).pvalue)
    return np.array(pvalues)
