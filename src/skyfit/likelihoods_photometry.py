"""``PhotometryLikelihood``: light-curve models against photometric points and upper limits."""

from __future__ import annotations

import math

import caskade as ck
import numpy as np
import torch

from ._display import ModuleDisplay
from ._forward import forward
from .data.photometry import _MAG_PER_LN, Photometry, _array
from .errors import DataError, ShapeError
from .params import Param

__all__ = ["PhotometryLikelihood", "censored_log_likelihood"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """``log Phi(x)``, finite far into the lower tail (``log Phi(-40) = -804.6``): below 0 from
    the scaled ``erfcx``, ``Phi(x) = erfcx(-x / sqrt 2) exp(-x^2 / 2) / 2``. Equal to
    ``torch.special.log_ndtr``, which has no ``torch.vmap`` rule (a Posterior vmaps batches)."""
    neg, pos = x.clamp(max=0.0), x.clamp(min=0.0)  # each branch sees only safe values
    lower = math.log(0.5) + torch.log(torch.special.erfcx(-neg / math.sqrt(2))) - 0.5 * neg**2
    upper = torch.log1p(-0.5 * torch.special.erfc(pos / math.sqrt(2)))
    return torch.where(x < 0, lower, upper)


def censored_log_likelihood(limit, model, sigma) -> torch.Tensor:
    """``log P(measured < limit) = log Phi((limit - model) / sigma)`` of a non-detection whose
    measurement would be Gaussian around ``model`` with standard deviation ``sigma`` (a censored
    term).

    Example:
        >>> import torch
        >>> censored_log_likelihood(torch.tensor([1.0, 3.0]), torch.tensor(1.0), torch.tensor(1.0))
        tensor([-0.6931, -0.0230])
    """
    return log_normal_cdf((limit - model) / sigma)


def _gaussian_terms(r, s):
    return -0.5 * r**2 - torch.log(s) - _LOG_SQRT_2PI


def _student_t_terms(r, s, dof: float):
    norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    return norm - torch.log(s) - 0.5 * (dof + 1) * torch.log1p(r**2 / dof)


def _rows(name: str, value, n: int | None, mask) -> torch.Tensor:
    if not torch.is_tensor(value):  # lists, numpy, pandas Series (by position), astropy Columns
        value = np.array(_array(value, name))  # a writable copy
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim != 1 or (n is not None and t.shape[0] != n):
        raise ShapeError(f"{name} must be one value per row, shape ({n},), got {tuple(t.shape)}")
    bad = ~torch.isfinite(t) & mask
    if bad.any():
        where = torch.nonzero(bad).flatten()[:5].tolist()
        raise DataError(f"{name} has {int(bad.sum())} NaN or inf values (first at rows {where}); "
                        f"exclude those rows with mask=... (False = not used) or fix the data")
    return t


class PhotometryLikelihood(ModuleDisplay, ck.Module):
    """Log-likelihood of photometric points ``(time, flux, flux_err[, band])`` and upper limits.

    ``lightcurve.flux(time, band=band)`` is compared with each detection, in flux (default,
    ``space="flux"``: Gaussian in flux, right for forced photometry whose flux errors are
    Gaussian, negative fluxes included) or in magnitudes (``space="mag"``: Gaussian in
    ``m = zero_point - 2.5 log10 flux``, as catalogues quote; the model's flux must stay
    positive). ``noise="student_t"`` replaces the Gaussian by a Student-t of ``dof`` degrees of
    freedom and the same scale (robust to outliers). Non-detections of a :class:`Photometry` are
    censored terms, ``log Phi((limit - model) / sigma)`` (see :func:`censored_log_likelihood`),
    always in flux.

    ``jitter=True`` adds a fitted extra scatter per band in quadrature to every error (a dynamic
    Param ``jitter``, shape ``(n_bands,)``, in flux units, or in magnitudes for
    ``space="mag"``; it starts at the band's median error). ``mask`` (boolean per row, True =
    used) leaves rows out; their values may be NaN.

    The model's output must have the data's shape ``(n,)`` exactly: batch parameter vectors
    through :class:`~skyfit.Posterior` (which vmaps), not by batching the light curve's Params.

    Arguments:
        lightcurve: a :class:`~skyfit.LightCurve` (or Module with ``@forward flux(t, band)``).
        time: a :class:`Photometry` (then flux, flux_err, band come from it), or times (days).
        flux, flux_err, band: arrays, when ``time`` is not a Photometry (band: indices or
            names of the light curve's bands).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve
        >>> from skyfit.data import Photometry
        >>> phot = Photometry([-1.0, 0.0, 1.0, 9.0], flux=[0.5, 1.0, 0.5, 0.2],
        ...                   flux_err=[0.1, 0.1, 0.1, 0.1], upper_limit=[0, 0, 0, 1])
        >>> lc = GaussianLightCurve(t0=0.0, sigma=1.0, peak_flux=1.0)
        >>> like = PhotometryLikelihood(lc, phot)
        >>> like.n_detections, like.n_limits
        (3, 1)
    """

    def __init__(self, lightcurve: ck.Module, time, flux=None, flux_err=None, band=None, *,
                 space: str = "flux", noise: str = "gaussian", dof: float = 4.0,
                 jitter: bool = False, mask=None, zero_point: float = 25.0,
                 name: str | None = None):
        super().__init__(name)
        if space not in ("flux", "mag"):
            raise ValueError(f"space must be 'flux' or 'mag', got {space!r}")
        if noise not in ("gaussian", "student_t"):
            raise ValueError(f"noise must be 'gaussian' or 'student_t', got {noise!r}")
        if not dof > 0:
            raise ValueError(f"dof must be positive, got {dof}")
        if not callable(getattr(lightcurve, "flux", None)):
            # found only at the first evaluation otherwise, as an AttributeError deep in a fit
            raise TypeError(f"{type(lightcurve).__name__} has no flux(time) method: "
                            f"PhotometryLikelihood needs a light curve; for a Module whose "
                            f"__call__() returns the model values use GaussianLikelihood")
        self.lightcurve, self.space, self.noise, self.dof = lightcurve, space, noise, float(dof)
        if isinstance(time, Photometry):
            if flux is not None or flux_err is not None or band is not None:
                raise ValueError("give a Photometry alone, or arrays time, flux, flux_err, band")
            self._from_photometry(time, mask)
        else:
            self._from_arrays(time, flux, flux_err, band, mask, zero_point)
        self._set_values_of_space()
        self._set_jitter(jitter)

    # -- data -----------------------------------------------------------------------------
    def _rows_used(self, mask, n: int) -> torch.Tensor:
        if n == 0:
            raise DataError("the photometry is empty (0 rows): there is nothing to fit")
        if mask is None:
            return torch.ones(n, dtype=torch.bool)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (n,):
            raise ShapeError(f"mask has shape {tuple(mask.shape)}, expected one per row ({n},)")
        if not mask.any():
            raise DataError("mask excludes every row: nothing left to fit")
        return mask

    def _from_photometry(self, phot: Photometry, mask) -> None:
        self.photometry, self.zero_point = phot, phot.zero_point
        self.used = self._rows_used(mask, len(phot))
        self.time, self.upper_limit = phot.time, phot.upper_limit.clone()
        self.flux, self.flux_err, self.limit = phot.flux, phot.flux_err, phot.limit
        self._mag = (phot.mag, phot.mag_err)
        self.band = self._band_indices(None if phot.bands is None else phot.band_names())

    def _from_arrays(self, time, flux, flux_err, band, mask, zero_point) -> None:
        self.photometry, self.zero_point = None, float(zero_point)
        n = len(time)
        self.used = self._rows_used(mask, n)
        self.time = _rows("time", time, n, self.used)
        self.flux = _rows("flux", flux, n, self.used)
        self.flux_err = _rows("flux_err", flux_err, n, self.used)
        bad = self.used & ~(self.flux_err > 0)
        if bad.any():
            raise DataError(f"flux_err must be positive; not at rows "
                            f"{torch.nonzero(bad).flatten()[:5].tolist()}")
        self.upper_limit = torch.zeros(n, dtype=torch.bool)
        self.limit = torch.full((n,), math.nan, dtype=torch.float64)
        positive = self.flux > 0
        self._mag = (torch.where(positive, self.zero_point - _MAG_PER_LN * self.flux.log(),
                                 math.nan),
                     torch.where(positive, _MAG_PER_LN * self.flux_err / self.flux, math.nan))
        if band is not None and not torch.is_tensor(band):
            values = np.asarray(band.to_numpy() if hasattr(band, "to_numpy") else band)
            # names (str, bytes, object) as a list; integer indices as a tensor
            band = (_array(values, "band", dtype=None).tolist() if values.dtype.kind in "OUS"
                    else torch.as_tensor(values))
        if torch.is_tensor(band):
            if band.is_floating_point() or band.is_complex() or band.dtype == torch.bool:
                raise TypeError(f"band must hold integer band indices or names, got {band.dtype}")
            band = band.long()
        self.band = self._band_indices(band)
        if self.band is not None and self.band.shape != (n,):
            raise ShapeError(f"band has shape {tuple(self.band.shape)}, time has ({n},)")

    def _band_indices(self, band) -> torch.Tensor | None:
        if band is None:
            return None
        if callable(getattr(self.lightcurve, "band_index", None)):
            if getattr(self.lightcurve, "bands", ()) is None:
                names = set(band) if isinstance(band, list) else None
                if names is not None and len(names) == 1:
                    return None  # one band of data for a single-band light curve
            return self.lightcurve.band_index(band).long()
        return torch.as_tensor(band).long()

    def _set_values_of_space(self) -> None:
        detected = self.used & ~self.upper_limit
        self.detected = detected
        self.limited = self.used & self.upper_limit
        if self.space == "mag":
            mag, mag_err = self._mag
            bad = detected & ~torch.isfinite(mag)
            if bad.any():
                raise DataError(f"{int(bad.sum())} detections have no magnitude (flux <= 0; rows "
                                f"{torch.nonzero(bad).flatten()[:5].tolist()}): fit in "
                                f"space='flux', or mask them")
            value, error = mag, mag_err
        else:
            value, error = self.flux, self.flux_err
        self.value, self.error = value, error
        self._det = torch.nonzero(detected).flatten()
        self._lim = torch.nonzero(self.limited).flatten()
        self._value_d, self._error_d = value[self._det], error[self._det]
        self._limit_l, self._limit_noise_l = self.limit[self._lim], self.flux_err[self._lim]

    def _set_jitter(self, jitter) -> None:
        self.has_jitter = bool(jitter)
        if not self.has_jitter:
            return
        nb = 1 if self.band is None else len(getattr(self.lightcurve, "bands", None) or [0])
        band = torch.zeros_like(self.time, dtype=torch.long) if self.band is None else self.band
        start = []
        for b in range(nb):
            rows = self.detected & (band == b)
            start.append(float(self.error[rows].median()) if rows.any() else 1.0)
        self.jitter = Param("jitter", start if nb > 1 else start[0], shape=(nb,) if nb > 1 else (),
                            valid=(0.0, None), units="mag" if self.space == "mag" else "flux",
                            description="extra scatter added in quadrature, per band")
        self.jitter.to_dynamic()

    @property
    def n_detections(self) -> int:
        """Number of points used as detections (not upper limits, not masked)."""
        return int(self.detected.sum())

    @property
    def n_limits(self) -> int:
        """Number of points used as upper limits (censored terms)."""
        return int(self.limited.sum())

    # -- model ----------------------------------------------------------------------------
    def _model_flux(self) -> torch.Tensor:
        # bands by keyword: a positional second argument would be taken as a parameter vector
        if self.band is None:
            model = self.lightcurve.flux(self.time)
        else:
            model = self.lightcurve.flux(self.time, band=self.band)
        if tuple(model.shape) != tuple(self.time.shape):
            raise ShapeError(f"{type(self).__name__}: the light curve returned shape "
                             f"{tuple(model.shape)} for {self.time.shape[0]} rows; it must "
                             f"return one flux per row (batch parameter vectors through a "
                             f"Posterior, which vmaps, not through the light curve's Params)")
        return model

    def _scales(self, jitter):
        """Standard deviations of the used detections and of the used limits."""
        if jitter is None:
            return self._error_d, self._limit_noise_l
        jd = jl = jitter
        if jitter.ndim and self.band is not None:
            jd, jl = jitter[..., self.band[self._det]], jitter[..., self.band[self._lim]]
        if self.space == "mag":  # a scatter in magnitudes says nothing of a limit's flux noise
            jl = torch.zeros_like(jl)
        return ((self._error_d**2 + jd**2).sqrt(), (self._limit_noise_l**2 + jl**2).sqrt())

    def _model_in_space(self, model: torch.Tensor) -> torch.Tensor:
        if self.space == "flux":
            return model
        tiny = torch.finfo(model.dtype).tiny
        return self.zero_point - _MAG_PER_LN * model.clamp(min=tiny).log()

    @forward
    def residuals(self, jitter=None) -> torch.Tensor:
        """``(data - model) / sigma`` per row in the fitted space (NaN for limits, unused rows)."""
        model = self._model_flux()
        scale, _ = self._scales(jitter)
        r = (self._value_d - self._model_in_space(model[..., self._det])) / scale
        out = torch.full(model.shape, math.nan, dtype=r.dtype, device=r.device)
        return out.index_copy(-1, self._det, r)

    @forward
    def chi2(self, jitter=None) -> torch.Tensor:
        """Sum of squared residuals of the used detections (limits not included)."""
        model = self._model_flux()
        scale, _ = self._scales(jitter)
        r = (self._value_d - self._model_in_space(model[..., self._det])) / scale
        return r.pow(2).sum(-1)

    @forward
    def __call__(self, jitter=None) -> torch.Tensor:
        # the used detections and limits by index (fixed at construction, so vmap-safe): the
        # terms of other rows are never computed
        model = self._model_flux()
        scale, limit_scale = self._scales(jitter)
        r = (self._value_d - self._model_in_space(model[..., self._det])) / scale
        if self.noise == "gaussian":
            total = _gaussian_terms(r, scale).sum(-1)
        else:
            total = _student_t_terms(r, scale, self.dof).sum(-1)
        if self._lim.numel():
            cens = censored_log_likelihood(self._limit_l, model[..., self._lim], limit_scale)
            total = total + cens.sum(-1)
        return total
