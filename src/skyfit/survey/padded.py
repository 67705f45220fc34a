"""A Gaussian photometry likelihood of fixed-shape, masked rows: batchable across objects."""

from __future__ import annotations

import math

import caskade as ck
import torch

from .._forward import forward
from ..errors import DataError, ShapeError

__all__ = ["PaddedPhotometry"]


class PaddedPhotometry(ck.Module):
    """Gaussian log-likelihood of padded photometry for :class:`ManyObjects`: every row is
    computed and the rows with ``mask`` False contribute exactly 0 (``torch.where``), so the
    shapes are the same for every object and objects with different masks share one ``vmap``.

    :class:`~skyfit.PhotometryLikelihood` selects its rows by index and derives its working
    arrays at construction, so swapping one object's arrays for another's does not reach
    them; :class:`ManyObjects` checks this and refuses such a likelihood. Use this one (keys
    ``time``, ``flux``, ``flux_err``, ``band``, ``mask``; ragged data: :func:`stack_ragged`).

    Arguments:
        lightcurve: a light curve with ``flux(time, band=...)``.
        time, flux, flux_err: ``(L,)``; flux_err positive at the rows used.
        band: ``(L,)`` integer band indices, or None for a one-band light curve.
        mask: ``(L,)`` bool, True at the rows used (None: all).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> t = torch.linspace(-5, 5, 4, dtype=torch.float64)
        >>> full = PaddedPhotometry(lc, t, torch.ones(4), torch.ones(4))()
        >>> half = PaddedPhotometry(lc, t, torch.ones(4), torch.ones(4),
        ...                         mask=torch.tensor([True, True, False, False]))()
        >>> bool(half > full)  # two terms fewer, each negative
        True
    """

    def __init__(self, lightcurve, time, flux, flux_err, band=None, mask=None):
        super().__init__("photometry")
        self.lightcurve = lightcurve
        as64 = dict(dtype=torch.float64)
        self.time, self.flux = torch.as_tensor(time, **as64), torch.as_tensor(flux, **as64)
        self.flux_err = torch.as_tensor(flux_err, **as64)
        self.band = None if band is None else torch.as_tensor(band).long()
        self.mask = torch.ones_like(self.time, dtype=torch.bool) if mask is None else (
            torch.as_tensor(mask, dtype=torch.bool))
        shapes = {k: tuple(getattr(self, k).shape) for k in ("time", "flux", "flux_err", "mask")}
        if self.band is not None:
            shapes["band"] = tuple(self.band.shape)
        if len(set(shapes.values())) != 1 or self.time.ndim != 1:
            raise ShapeError(f"time, flux, flux_err, band and mask must share one shape (L,): "
                             f"{shapes}")
        bad = self.mask & ~((self.flux_err > 0) & torch.isfinite(self.flux))
        if bad.any():
            raise DataError(f"flux must be finite and flux_err positive at the rows used; not "
                            f"at rows {torch.nonzero(bad).flatten()[:5].tolist()}")

    @forward
    def __call__(self):
        if self.band is None:
            model = self.lightcurve.flux(self.time)
        else:
            model = self.lightcurve.flux(self.time, band=self.band)
        # whitened residuals: a product with the data's reciprocal errors, not a division of
        # the model (whose derivatives would cost several products more per point)
        r = (self.flux - model) * self.flux_err.reciprocal()
        terms = r * r + torch.log(2 * math.pi * self.flux_err**2)
        return -0.5 * torch.where(self.mask, terms, torch.zeros_like(terms)).sum()
