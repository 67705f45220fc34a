"""One result type for every sampler: draws shaped (chain, draw, parameter) with names."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConvergenceWarning, CorruptFileError
from .circular import circular_mean, circular_std, unwrap_around, wrap
from .hdf5_tree import read_tree, write_tree

__all__ = ["Samples"]

RHAT_MAX = 1.01
ESS_MIN = 400
# a run shorter than this many autocorrelation times gives unreliable tau and draws (emcee docs,
# "Autocorrelation analysis & convergence"; Sokal 1997)
AUTOCORR_TIMES_MIN = 50
_FORMAT = "skyfit.Samples"


@dataclass
class Samples:
    """Posterior draws from any skyfit sampler (NUTS, HMC, emcee, VI).

    Attributes:
        draws: ``(chain, draw, parameter)`` array in the constrained (physical) space.
        names: one name per parameter.
        log_density: ``(chain, draw)`` log-density of each draw (constrained space, no Jacobian).
        sample_stats: per-draw diagnostics, each ``(chain, draw)`` (for NUTS: ``diverging``,
            ``tree_depth``, ``energy``, ``step_size``, ``accept_prob``, ``n_steps``).
        sampler: the sampler's name.
        info: run-level facts (``wall_time`` s incl. warm-up, ``n_evals``, step size, mass matrix,
            autocorrelation times, ...). ``info["periodic"]``: ``{name: [lower, upper]}`` of the
            periodic parameters (angles): :meth:`mean`, :meth:`std`, :meth:`quantile` and
            :meth:`summary` treat them on the circle (circular mean and sd, quantiles of the
            draws unwrapped around the circular mean, wrapped back into range).
        units: ``{name: units}`` of the parameters whose units the density declared
            (:attr:`LogDensity.units`); :meth:`quantity` returns draws in them.

    Diagnostics (:meth:`summary`, :meth:`rhat`, :meth:`ess`, :meth:`mcse`) are ArviZ's
    rank-normalised R-hat and bulk / tail ESS. For emcee the "chains" are the walkers of one
    ensemble, which are not independent: R-hat across walkers is only indicative.

    Example:
        >>> import numpy as np
        >>> s = Samples(np.zeros((2, 5, 1)), ["a"], np.zeros((2, 5)), "demo")
        >>> s.n_chains, s.n_draws, s["a"].shape
        (2, 5, (2, 5))
    """

    draws: np.ndarray
    names: list[str]
    log_density: np.ndarray
    sampler: str
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.draws = np.asarray(self.draws)
        self.log_density = np.asarray(self.log_density)
        self.names = list(self.names)
        if self.draws.ndim != 3:
            raise ValueError(
                f"draws must be (chain, draw, parameter), got shape {self.draws.shape}")
        if self.draws.shape[-1] != len(self.names):
            raise ValueError(
                f"draws have {self.draws.shape[-1]} parameters but {len(self.names)} names"
            )

    def __repr__(self) -> str:
        stats = ", ".join(self.sample_stats) or "none"
        return (f"Samples(sampler={self.sampler!r}, chains={self.n_chains}, draws={self.n_draws}, "
                f"parameters={self.names}, sample_stats=[{stats}], "
                f"divergent={self.n_divergent})")

    def _repr_html_(self) -> str:
        """The notebook's display: per-parameter mean, std and 5-95% interval, no draws."""
        from .._display import Table, tensor_rows

        q05, q95 = self.quantile([0.05, 0.95])
        rows = tensor_rows(self.names, {"mean": self.mean(), "std": self.std(), "5%": q05,
                                        "95%": q95})
        return Table(f"Samples ({self.sampler}): {self.n_chains} chains x {self.n_draws} draws, "
                     f"{self.n_divergent} divergent", ["parameter", "mean", "std", "5%", "95%"],
                     rows).html()

    @property
    def n_chains(self) -> int:
        """Number of chains (walkers for emcee)."""
        return self.draws.shape[0]

    @property
    def n_draws(self) -> int:
        """Draws per chain."""
        return self.draws.shape[1]

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return self.draws.shape[2]

    def flat(self) -> np.ndarray:
        """Draws of all chains concatenated: ``(chain * draw, parameter)``."""
        return self.draws.reshape(-1, self.draws.shape[-1])

    def __getitem__(self, name: str) -> np.ndarray:
        """Draws of one parameter, ``(chain, draw)``."""
        try:
            return self.draws[..., self.names.index(name)]
        except ValueError:
            raise KeyError(f"no parameter {name!r}; parameters are {self.names}") from None

    def quantity(self, name: str):
        """Draws of parameter ``name``, ``(chain, draw)``, as an astropy Quantity in its
        declared units (dimensionless where none were declared).

        Example:
            >>> import numpy as np
            >>> s = Samples(np.ones((1, 3, 1)), ["host.Re"], np.zeros((1, 3)), "demo",
            ...             units={"host.Re": "arcsec"})
            >>> s.quantity("host.Re").to("mas")
            <Quantity [[1000., 1000., 1000.]] mas>
        """
        from ..units import to_quantity

        return to_quantity(self[name], self.units.get(name, ""))

    # -- moments ---------------------------------------------------------------------------
    def _periodic(self) -> list[tuple[int, float, float]]:
        bounds = self.info.get("periodic") or {}
        return [(self.names.index(n), float(lo), float(hi)) for n, (lo, hi) in bounds.items()
                if n in self.names]

    def _unwrapped(self) -> np.ndarray:
        """The draws with each periodic parameter unwrapped around its circular mean."""
        draws = self.draws.astype(np.float64, copy=True)
        for i, lo, hi in self._periodic():
            draws[..., i] = unwrap_around(draws[..., i], circular_mean(draws[..., i].ravel(),
                                                                       lo, hi), lo, hi)
        return draws

    def _wrap_columns(self, values: np.ndarray) -> np.ndarray:
        values = np.array(values, dtype=np.float64)
        for i, lo, hi in self._periodic():
            values[..., i] = wrap(values[..., i], lo, hi)
        return values

    def mean(self) -> np.ndarray:
        """Posterior mean per parameter, ``(parameter,)`` (circular mean for periodic ones)."""
        return self._wrap_columns(self._unwrapped().reshape(-1, self.n_params).mean(0))

    def std(self) -> np.ndarray:
        """Posterior standard deviation per parameter, ``(parameter,)`` (circular sd
        ``sqrt(-2 ln R)`` for periodic ones)."""
        sd = self.flat().std(0, ddof=1)
        for i, lo, hi in self._periodic():
            sd[i] = circular_std(self.flat()[:, i], lo, hi)
        return sd

    def covariance(self) -> np.ndarray:
        """Posterior covariance, ``(parameter, parameter)``."""
        return np.atleast_2d(np.cov(self.flat(), rowvar=False))

    def quantile(self, q) -> np.ndarray:
        """Posterior quantile(s) per parameter (``numpy.quantile`` over all draws)."""
        return self._wrap_columns(np.quantile(self._unwrapped().reshape(-1, self.n_params), q,
                                              axis=0))

    # -- diagnostics -----------------------------------------------------------------------
    @property
    def n_divergent(self) -> int:
        """Number of divergent transitions (0 for samplers that have none)."""
        div = self.sample_stats.get("diverging")
        return 0 if div is None else int(np.count_nonzero(div))

    def rhat(self) -> np.ndarray:
        """Rank-normalised split R-hat per parameter (ArviZ); nan for a single short chain."""
        from .diagnostics import rhat
        return rhat(self.draws)

    def ess(self, method: str = "bulk") -> np.ndarray:
        """Bulk (default) or tail effective sample size per parameter (ArviZ)."""
        from .diagnostics import ess
        return ess(self.draws, method=method)

    def mcse(self, method: str = "mean") -> np.ndarray:
        """Monte Carlo standard error of the posterior mean (or ``"sd"``) per parameter."""
        from .diagnostics import mcse
        return mcse(self.draws, method=method)

    def check(self, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN,
              warn: bool = True) -> list[str]:
        """Convergence problems as messages, each also emitted as a
        :class:`~skyfit.errors.ConvergenceWarning` (unless ``warn=False``).

        Flags R-hat > ``rhat_max`` (1.01), bulk or tail ESS < ``ess_min`` (400), any divergent
        transition and, where ``info["autocorr_time"]`` is known (emcee), a run shorter than
        ``AUTOCORR_TIMES_MIN`` (50) autocorrelation times. Returns ``[]`` when nothing is flagged.
        """
        from .diagnostics import diagnostics_table
        table = diagnostics_table(self._unwrapped(), self.names, quantiles=())
        return self._check_table(table, rhat_max, ess_min, warn)

    def _check_table(self, table, rhat_max, ess_min, warn) -> list[str]:
        problems = []
        r = table["r_hat"]
        bad = r[r > rhat_max]
        if len(bad):
            problems.append(f"R-hat > {rhat_max} for " + ", ".join(
                f"{n} ({v:.3f})" for n, v in bad.items()))
        ess_low = np.minimum(table["ess_bulk"], table["ess_tail"])
        low = ess_low[ess_low < ess_min]
        if len(low):
            problems.append(f"ESS < {ess_min} for " + ", ".join(
                f"{n} ({v:.0f})" for n, v in low.items()) + ": run longer chains")
        if self.n_divergent:
            problems.append(f"{self.n_divergent} divergent transitions (of "
                            f"{self.n_chains * self.n_draws}): the posterior has regions the "
                            "sampler cannot resolve; reparametrise or raise target_accept")
        tau = self.info.get("autocorr_time")
        if tau is not None:
            need = AUTOCORR_TIMES_MIN * float(np.max(tau))
            if not self.n_draws >= need:  # also when tau is nan (too few steps to estimate it)
                problems.append(f"{self.n_draws} steps < {AUTOCORR_TIMES_MIN} autocorrelation "
                                f"times ({need:.0f}): run longer")
        if problems and self.sampler.startswith("emcee"):
            problems.append("(emcee walkers are not independent chains: R-hat across them is "
                            "only indicative; check info['autocorr_time'])")
        if warn:
            for msg in problems:
                warnings.warn(ConvergenceWarning(f"{self.sampler}: {msg}"), stacklevel=3)
        return problems

    def summary(self, quantiles: Sequence[float] = (0.05, 0.5, 0.95), warn: bool = True):
        """A ``pandas.DataFrame``, one row per parameter: mean, sd, quantiles, ``mcse_mean``,
        ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat``. Emits the warnings of :meth:`check`.
        """
        from .diagnostics import diagnostics_table
        table = diagnostics_table(self._unwrapped(), self.names, quantiles=quantiles)
        if self._periodic():
            table["mean"], table["sd"] = self.mean(), self.std()
            for q in quantiles:
                table[f"q{100 * q:g}%"] = self.quantile(q)
        self._check_table(table, RHAT_MAX, ESS_MIN, warn)
        return table

    # -- conversion -----------------------------------------------------------------------
    def to_arviz(self):
        """An ``arviz.InferenceData`` with ``posterior`` (one variable per parameter) and
        ``sample_stats`` (``lp`` = log-density, plus every ``(chain, draw)`` statistic)."""
        import arviz as az
        posterior = {n: self.draws[..., i] for i, n in enumerate(self.names)}
        stats = {"lp": self.log_density}
        for key, value in self.sample_stats.items():
            value = np.asarray(value)
            if value.shape[:2] == self.draws.shape[:2]:
                stats[key] = value.astype(bool) if key == "diverging" else value
        return az.from_dict(posterior=posterior, sample_stats=stats,
                            attrs={"sampler": self.sampler})

    # -- combining -------------------------------------------------------------------------
    @classmethod
    def concatenate(cls, parts: Sequence[Samples]) -> Samples:
        """Chains of several runs of the same parameters, stacked along the chain axis.

        Sample statistics present in every part are kept; ``info["parts"]`` holds each part's
        ``info``.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.names != first.names:
                raise ValueError(f"parameter names differ: {first.names} vs {p.names}")
            if p.n_draws != first.n_draws:
                raise ValueError(f"draws per chain differ: {first.n_draws} vs {p.n_draws}; "
                                 "trim the longer runs first")
        keys = [k for k in first.sample_stats if all(k in p.sample_stats for p in parts)]
        units: dict[str, str] = {}
        for p in parts:
            for name, unit in p.units.items():
                if units.setdefault(name, unit) != unit:
                    raise ValueError(f"units of {name} differ: {units[name]!r} vs {unit!r}")
        samplers = list(dict.fromkeys(p.sampler for p in parts))
        return cls(
            draws=np.concatenate([p.draws for p in parts], axis=0),
            names=list(first.names),
            log_density=np.concatenate([p.log_density for p in parts], axis=0),
            sampler="+".join(samplers),
            sample_stats={k: np.concatenate([np.asarray(p.sample_stats[k]) for p in parts], 0)
                          for k in keys},
            info={"parts": [p.info for p in parts]},
            units=units,
        )

    # -- storage ---------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write to an HDF5 file (h5py): draws, names, log-density, sample stats and ``info``
        (arrays as datasets, other values as JSON attributes; anything else as its repr), then a
        SHA-256 of all of it, which :meth:`load` checks."""
        import h5py

        from .files import seal_hdf5
        with h5py.File(path, "w") as f:
            f.attrs["format"] = _FORMAT
            f.attrs["version"] = 1
            f.attrs["sampler"] = self.sampler
            f.attrs["names"] = json.dumps(self.names)
            f.attrs["units"] = json.dumps(self.units)
            f.create_dataset("draws", data=self.draws)
            f.create_dataset("log_density", data=self.log_density)
            write_tree(f.create_group("sample_stats"), self.sample_stats)
            write_tree(f.create_group("info"), self.info)
            seal_hdf5(f)

    @classmethod
    def load(cls, path) -> Samples:
        """Read a file written by :meth:`save`.

        Raises:
            CorruptFileError: the file is empty, not HDF5, not a Samples file, truncated, or its
                content does not match the checksum written with it.
        """
        from .files import open_hdf5, reading, verify_hdf5
        what = "a skyfit Samples file"
        with reading(path, what), open_hdf5(path, what) as f:
            if f.attrs.get("format") != _FORMAT:
                raise CorruptFileError(f"{path} is not {what} "
                                       f"(format attribute {f.attrs.get('format')!r})")
            verify_hdf5(f, path, what)
            return cls(draws=f["draws"][()], names=json.loads(f.attrs["names"]),
                       log_density=f["log_density"][()], sampler=str(f.attrs["sampler"]),
                       sample_stats=read_tree(f["sample_stats"]), info=read_tree(f["info"]),
                       units=json.loads(f.attrs.get("units", "{}")))
