"""``Photometry``: a transient's photometric table (time, band, flux or magnitude, limits)."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, ShapeError
from ._columns import _MISSING, _array, _bad_rows, _columns_of, _vega_rows

__all__ = ["Photometry", "AB_MINUS_VEGA_BLANTON_ROWEIS_2007"]

#: ``m_AB - m_Vega`` for Johnson-Cousins and 2MASS bands, Blanton & Roweis (2007, AJ 133, 734),
#: Table 1. A documented example for ``vega_offsets=``: check the values for your own filters.
AB_MINUS_VEGA_BLANTON_ROWEIS_2007 = {"U": 0.79, "B": -0.09, "V": 0.02, "R": 0.21, "I": 0.45,
                                     "J": 0.91, "H": 1.39, "Ks": 1.85}
"""AB minus Vega magnitude per band, mag (Blanton & Roweis 2007, AJ 133, 734, table 1)."""

_DEFAULT_COLUMNS = dict(time="mjd", band="band", flux="flux", flux_err="flux_err", mag="mag",
                        mag_err="mag_err", upper_limit="upper_limit", limit="limit",
                        system="system", zp="zp")
_JD_LIKE = 2_400_000.0  # MJD = JD - 2400000.5: an "MJD" above this is a Julian Date
_MAG_PER_LN = 2.5 / math.log(10.0)  # d mag / d ln(flux)


def checked_redshift(redshift: float | None) -> float | None:
    """``redshift`` as a float (None stays None); a ValueError unless finite and above -1,
    since ``1 + z`` scales every time and flux."""
    if redshift is None:
        return None
    if not (math.isfinite(redshift) and redshift > -1.0):
        raise ValueError(f"redshift must be finite and above -1, got {redshift}")
    return float(redshift)


class Photometry:
    """A transient's photometry: one row per observation, in flux units fixed by a zero point.

    Rows hold a time (MJD, float64), a band name, and either a detection (flux and its error) or
    a non-detection (an upper limit). Fluxes are in the units that make
    ``m_AB = zero_point - 2.5 log10(flux)`` (``zero_point=25``: the convention of ZTF/ATLAS
    forced photometry). Magnitudes given instead are converted to such fluxes, with errors
    ``flux_err = flux mag_err ln(10) / 2.5`` (first order). Vega magnitudes (``system="Vega"``)
    need ``vega_offsets={band: m_AB - m_Vega}``: no table is looked up for you
    (:data:`AB_MINUS_VEGA_BLANTON_ROWEIS_2007` is one documented example).

    Times: ``time`` holds days since ``reference`` (an MJD, kept in float64), so models never see
    ``5e4``-sized times, where float32 resolves only ~0.004 day and exponentials underflow. By
    default ``reference`` is the floor of the earliest time when the times are MJD-sized
    (|t| > 1000), otherwise 0. ``mjd`` gives the absolute times back.

    Non-detections: flagged by ``upper_limit`` (True = not detected), or by a ``limit`` given
    where the flux (or magnitude) is missing. The limit is a flux (or a limiting magnitude when
    ``mag`` is given); its 1-sigma noise is the row's error where given, else
    ``limit / limit_sigma`` (an n-sigma limit, 5 by default).

    Arguments:
        time: observation times (MJD or days). band: band name per row (strings; None for one
            band). flux, flux_err: fluxes and errors, or mag, mag_err: AB (or Vega) magnitudes.
        upper_limit: True where the row is a non-detection. limit: the non-detection's limit.
        zp: the AB (or Vega) zero point of each row's flux, error and limit, when they differ
            (e.g. fluxes in counts of each image); rescaled to ``zero_point`` (default: all
            ``zero_point``).
        zero_point: AB magnitude of unit flux. system: ``"AB"`` or ``"Vega"``, or one of them
            per row (``self.system`` is then ``"mixed"`` where both occur).
        vega_offsets: ``{band: m_AB - m_Vega}`` for the bands of the Vega rows.
        bands: the band names allowed, in this order (default: the bands met, in order of
            first appearance); a band outside it is a :class:`~skyfit.errors.DataError`.
        reference: the MJD subtracted from ``time``. redshift: the source's redshift, if known.

    Example:
        >>> phot = Photometry([59000.2, 59001.7, 59003.1], ["g", "r", "g"], mag=[19.0, 18.5, 21.0],
        ...                   mag_err=[0.05, 0.05, 0.1], upper_limit=[False, False, True])
        >>> phot.reference, [round(t, 6) for t in phot.time.tolist()], phot.bands
        (59000.0, [0.2, 1.7, 3.1], ('g', 'r'))
        >>> round(phot.flux[0].item(), 3), phot.upper_limit.tolist()  # 10^(-0.4 (19 - 25))
        (251.189, [False, False, True])
    """

    def __init__(self, time, band=None, flux=None, flux_err=None, mag=None, mag_err=None,
                 upper_limit=None, limit=None, zp=None, *, zero_point: float = 25.0,
                 system: str | Sequence[str] = "AB",
                 vega_offsets: Mapping[str, float] | None = None,
                 bands: Sequence[str] | None = None, reference: float | None = None,
                 limit_sigma: float = 5.0, redshift: float | None = None):
        mjd = _array(time, "time")
        if mjd.size == 0:
            raise DataError("the photometry table is empty: no rows to fit")
        if not np.isfinite(mjd).all():
            raise DataError(f"time is NaN or inf in {_bad_rows(~np.isfinite(mjd))}")
        if (flux is None) == (mag is None):
            raise ValueError("give either flux (with flux_err) or mag (with mag_err)")
        self._vega = _vega_rows(system, mjd.size)
        if not limit_sigma > 0:
            raise ValueError(f"limit_sigma must be positive, got {limit_sigma}")
        redshift = checked_redshift(redshift)
        self.system = system if isinstance(system, str) else (
            "Vega" if self._vega.all() else "mixed" if self._vega.any() else "AB")
        self.zero_point, self.redshift = float(zero_point), redshift
        self._set_bands(band, bands, mjd.size)
        if zp is not None and mag is not None:
            raise ValueError("zp is the zero point of given fluxes; magnitudes need none")
        self._set_values(mjd.size, flux, flux_err, mag, mag_err, upper_limit, limit,
                         limit_sigma, vega_offsets, zp)
        self._warn_duplicates(mjd)
        if mjd.min() > _JD_LIKE:
            warnings.warn(f"times start at {mjd.min():.2f}: Julian Dates, not MJDs? (MJD = JD - "
                          f"2400000.5) They are used as given, so reference and mjd are JDs",
                          stacklevel=2)
        if reference is None:
            reference = math.floor(mjd.min()) if np.abs(mjd).max() > 1000 else 0.0
        self.reference = float(reference)
        self.time = torch.as_tensor(mjd - self.reference, dtype=torch.float64)

    # -- construction ---------------------------------------------------------------------
    def _set_bands(self, band, bands, n: int) -> None:
        if band is None:
            self.bands, self.band = None, None
            return
        names = _array(band, "band", dtype=None)
        if names.shape != (n,):
            raise ShapeError(f"band has {names.size} rows, time has {n}")
        met = list(dict.fromkeys(names.tolist()))  # distinct, in order of first appearance
        if bands is None:
            bands = met
        bands = tuple(str(b) for b in bands)
        unknown = [b for b in met if b not in bands]
        if unknown:
            raise DataError(f"unknown band(s) {unknown} ({int(np.isin(names, unknown).sum())} "
                            f"rows); the bands allowed are {list(bands)}")
        self.bands = bands
        lookup = {b: i for i, b in enumerate(bands)}
        self.band = torch.as_tensor([lookup[b] for b in names.tolist()], dtype=torch.long)

    def _set_values(self, n, flux, flux_err, mag, mag_err, upper_limit, limit, limit_sigma,
                    vega_offsets, zp) -> None:
        value = _array(flux if mag is None else mag, "flux" if mag is None else "mag")
        error = _array(flux_err if mag is None else mag_err,
                       "flux_err" if mag is None else "mag_err")
        if error is None:
            error = np.full(n, np.nan)
        upper = _array(upper_limit, "upper_limit", bool)
        upper = np.zeros(n, bool) if upper is None else upper
        lim = _array(limit, "limit")
        zp = np.full(n, self.zero_point) if zp is None else _array(zp, "zp")
        for label, arr in (("value", value), ("error", error), ("upper_limit", upper),
                           ("limit", lim), ("zp", zp)):
            if arr is not None and arr.shape != (n,):
                raise ShapeError(f"{label} column has {arr.size} rows, time has {n}")
        if lim is None:
            lim = np.where(upper, value, np.nan)  # the limit sits in the flux or mag column
        else:
            upper = upper | (np.isnan(value) & np.isfinite(lim))
            lim = np.where(upper & np.isnan(lim), value, lim)
        det = ~upper
        self._validate(value, error, lim, det, "mag" if mag is not None else "flux")
        offset = self._ab_offsets(vega_offsets, n)
        if mag is not None:  # magnitudes -> fluxes of the zero point
            flux_v = 10.0 ** (-0.4 * (value + offset - self.zero_point))
            err_v = flux_v * error / _MAG_PER_LN
            lim = 10.0 ** (-0.4 * (lim + offset - self.zero_point))
        else:  # fluxes of each row's zero point -> fluxes of self.zero_point
            if not np.isfinite(zp).all():
                raise DataError(f"zp is NaN or inf in {_bad_rows(~np.isfinite(zp))}")
            scale = 10.0 ** (-0.4 * (offset + zp - self.zero_point))
            flux_v, err_v, lim = value * scale, error * scale, lim * scale
        noise_of_limit = np.where(np.isfinite(err_v) & (err_v > 0), err_v, lim / limit_sigma)
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        self.upper_limit = torch.as_tensor(upper)
        self.flux = as_t(np.where(det, flux_v, np.nan))
        self.flux_err = as_t(np.where(det, err_v, noise_of_limit))
        self.limit = as_t(np.where(det, np.nan, lim))
        self._given_mag = (as_t(value + offset), as_t(error)) if mag is not None else None

    def _warn_duplicates(self, mjd: np.ndarray) -> None:
        """Warn of rows that repeat another (time, band, value, error): merged catalogues list
        one measurement twice, and a fit would count it twice."""
        band = np.zeros(mjd.size) if self.band is None else self.band.numpy()
        value = torch.where(self.upper_limit, self.limit, self.flux).numpy()
        key = np.column_stack([mjd, band, value, self.flux_err.numpy()])
        repeats = mjd.size - np.unique(key, axis=0).shape[0]
        if repeats:
            warnings.warn(f"{repeats} rows repeat another row (same time, band, value and "
                          f"error): each is fitted as a separate measurement; drop the copies "
                          f"if they are one measurement listed twice", stacklevel=3)

    @staticmethod
    def _validate(value, error, lim, det, kind: str) -> None:
        bad = det & ~np.isfinite(value)
        if bad.any():
            raise DataError(f"{kind} is NaN or inf in {_bad_rows(bad)} that are not flagged as "
                            f"upper limits; drop them, or flag them (upper_limit=...)")
        bad = det & ~(np.isfinite(error) & (error > 0))
        if bad.any():
            raise DataError(f"{kind}_err must be positive and finite; it is not in "
                            f"{_bad_rows(bad)}")
        bad = ~det & ~np.isfinite(lim)
        if bad.any():
            raise DataError(f"upper limits without a finite limit in {_bad_rows(bad)}")

    def _ab_offsets(self, vega_offsets, n: int) -> np.ndarray:
        """``m_AB - m_given`` per row: 0 for AB rows, the band's offset for Vega rows."""
        if not self._vega.any():
            if vega_offsets:  # offsets alone do not make the magnitudes Vega
                warnings.warn("vega_offsets are given but no row is in Vega magnitudes "
                              "(system='AB'), so they are not used: pass system='Vega' (or a "
                              "system column) if the magnitudes are Vega", stacklevel=4)
            return np.zeros(n)
        if vega_offsets is None:
            raise ValueError("system='Vega' needs vega_offsets={band: m_AB - m_Vega} (e.g. "
                             "skyfit.data.AB_MINUS_VEGA_BLANTON_ROWEIS_2007 for Johnson bands)")
        if self.band is None:
            raise ValueError("vega_offsets has no entry for band(s) ['(no band)']")
        names = self.bands
        used = sorted(set(self.band[torch.as_tensor(self._vega)].tolist()))  # bands in Vega
        missing = [names[b] for b in used if names[b] not in vega_offsets]
        if missing:
            raise ValueError(f"vega_offsets has no entry for band(s) {missing}")
        per_band = np.asarray([float(vega_offsets.get(b, 0.0)) for b in names])
        return np.where(self._vega, per_band[self.band.numpy()], 0.0)

    @classmethod
    def from_table(cls, table, columns: Mapping[str, str] | None = None, **kwargs) -> Photometry:
        """From an astropy Table, a pandas DataFrame, a dict of columns or a record array.

        ``columns`` maps the roles ``time, band, flux, flux_err, mag, mag_err, upper_limit,
        limit, system, zp`` to column names (defaults: the role names, ``mjd`` for time); a
        role whose column is absent (or mapped to None) is not used. Fluxes are read when the
        flux column exists, else magnitudes; the error column of the one read must exist. A
        ``zp`` column (as sncosmo's tables have) gives the zero point of each row's flux,
        error and limit; they are rescaled to ``zero_point``. A ``system`` column gives each
        row's magnitude system (``AB`` or ``Vega``, as catalogues that mix instruments list
        them); its empty cells take the ``system`` keyword (default ``"AB"``). Other keywords
        go to :class:`Photometry`.
        """
        names = dict(_DEFAULT_COLUMNS, **(columns or {}))
        unknown_roles = set(columns or {}) - set(_DEFAULT_COLUMNS)
        if unknown_roles:
            raise ValueError(f"unknown column roles {sorted(unknown_roles)}; roles are "
                             f"{list(_DEFAULT_COLUMNS)}")
        cols = _columns_of(table)
        if names["time"] not in cols:
            raise KeyError(f"no time column {names['time']!r} in the table; columns are "
                           f"{list(cols)} (pass columns={{'time': ...}})")
        use_flux = names["flux"] in cols
        if not use_flux and names["mag"] not in cols:
            raise KeyError(f"neither a flux column {names['flux']!r} nor a magnitude column "
                           f"{names['mag']!r} in the table; columns are {list(cols)}")
        error = "flux_err" if use_flux else "mag_err"
        if names[error] not in cols:
            raise KeyError(f"no {error} column {names[error]!r} in the table; columns are "
                           f"{list(cols)} (pass columns={{'{error}': ...}})")
        roles = ("band", "flux" if use_flux else "mag", error, "upper_limit", "limit", "system",
                 *(("zp",) if use_flux else ()))
        found = {role: cols[names[role]] for role in roles if names[role] in cols}
        if "system" in found:  # per-row systems; empty cells take the system keyword
            default = kwargs.pop("system", "AB")
            kwargs["system"] = [default if s.strip().lower() in _MISSING else s
                                for s in _array(found.pop("system"), "system", dtype=None)]
        return cls(cols[names["time"]], **found, **kwargs)

    @classmethod
    def read(cls, path, columns: Mapping[str, str] | None = None, **kwargs) -> Photometry:
        """From a file: CSV (read here), or ECSV / FITS / anything astropy's ``Table.read`` reads.

        Arguments as :meth:`from_table`. Example: ``Photometry.read("sn.csv", zero_point=27.5)``.
        """
        path = Path(path)
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
            if not rows:
                raise DataError(f"{path} has no header row")
            header, body = [h.strip() for h in rows[0]], rows[1:]
            table = {h: [r[i].strip() if i < len(r) else "" for r in body]
                     for i, h in enumerate(header)}
            return cls.from_table(table, columns, **kwargs)
        try:
            from astropy.table import Table
        except ImportError as exc:
            raise ImportError(f"reading {path.suffix} files needs astropy (pip install astropy); "
                              f"CSV files are read without it") from exc
        return cls.from_table(Table.read(path), columns, **kwargs)

    # -- views ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.time.shape[0]

    @property
    def n_bands(self) -> int:
        """Number of distinct bands (1 for single-band photometry)."""
        return 1 if self.bands is None else len(self.bands)

    @property
    def mjd(self) -> np.ndarray:
        """Absolute times (MJD, float64)."""
        return self.time.numpy() + self.reference

    @property
    def detected(self) -> torch.Tensor:
        """Boolean mask, True for detections (rows that are not upper limits)."""
        return ~self.upper_limit

    @property
    def mag(self) -> torch.Tensor:
        """AB magnitudes of the detections (the given ones if magnitudes were read; NaN where
        the flux is not positive or the row is an upper limit)."""
        if self._given_mag is not None:
            return torch.where(self.detected, self._given_mag[0], math.nan)
        positive = self.detected & (self.flux > 0)
        return torch.where(positive, self.zero_point - _MAG_PER_LN * self.flux.log(), math.nan)

    @property
    def mag_err(self) -> torch.Tensor:
        """1-sigma magnitude errors of the detections (``2.5 / ln 10 flux_err / flux``)."""
        if self._given_mag is not None:
            return torch.where(self.detected, self._given_mag[1], math.nan)
        return torch.where(self.detected & (self.flux > 0), _MAG_PER_LN * self.flux_err /
                           self.flux, math.nan)

    @property
    def limit_mag(self) -> torch.Tensor:
        """Limiting AB magnitudes of the upper limits (NaN for detections)."""
        return self.zero_point - _MAG_PER_LN * self.limit.log()

    def band_names(self) -> list[str]:
        """The band name of each row."""
        return [""] * len(self) if self.bands is None else [self.bands[i] for i in self.band]

    def __repr__(self) -> str:
        n_up = int(self.upper_limit.sum())
        bands = "one band" if self.bands is None else f"bands {','.join(self.bands)}"
        return (f"Photometry({len(self)} rows in {bands}, {n_up} upper limits, times in days "
                f"since MJD {self.reference:.12g}, zero point {self.zero_point:g} AB)")
