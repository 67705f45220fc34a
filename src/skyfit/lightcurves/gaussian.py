"""Gaussian light curve: a symmetric rise and fall around the peak time."""

from __future__ import annotations

from .._forward import forward
from ..params import Param
from .base import LightCurve
from .functions import gaussian_light_curve

__all__ = ["GaussianLightCurve"]


class GaussianLightCurve(LightCurve):
    """``flux(t) = peak_flux exp(-(t - t0)^2 / (2 sigma^2))``: peaks at ``t0`` with ``peak_flux``.

    The simplest transient: a toy supernova, a microlensing-like bump. Per band and batched
    parameters as explained in :class:`LightCurve`.

    Arguments:
        t0: peak time (day). sigma: width, standard deviation (day). peak_flux: flux at ``t0``.
        B: baseline flux per band (None: no baseline Param; 0.0 to fit one).
        bands: band names, or None for one band. shared: parameters common to all bands (or to
        a band subset). redshift, dimming: see :class:`LightCurve`.

    Default priors (:func:`~skyfit.lightcurves.default_priors`): ``t0`` normal around the
    brightest point (sd: a third of the data's time span), ``sigma`` log-normal around the
    data's time scale (sd 1 in ln), ``peak_flux`` log-normal around each band's brightest flux
    (sd 1), ``B`` normal around 0 (sd: 3 median flux errors).

    Example:
        >>> import torch
        >>> lc = GaussianLightCurve(t0=[0.0, 2.0], sigma=5.0, peak_flux=[1.0, 3.0], bands="gr")
        >>> lc.flux(torch.tensor([0.0, 2.0]), band=torch.tensor([0, 1])).tolist()
        [1.0, 3.0]
    """

    def __init__(self, name: str | None = None, t0=0.0, sigma=10.0, peak_flux=1.0, B=None,
                 bands=None, shared=(), redshift=None, dimming: bool = False):
        super().__init__(name, bands, shared, redshift, dimming)
        self.t0 = Param("t0", *self._per_band("t0", t0), units="day", description="peak time")
        self.sigma = Param("sigma", *self._per_band("sigma", sigma),
                           valid=(0.0, None), units="day", description="standard deviation in time")
        self.peak_flux = Param("peak_flux", *self._per_band("peak_flux", peak_flux),
                               valid=(0.0, None), units="flux", description="flux at the peak")
        if B is not None:
            self.B = Param("B", *self._per_band("B", B), units="flux", description="baseline flux")
        self._check_shared(("t0", "sigma", "peak_flux") + (("B",) if B is not None else ()))

    @forward
    def flux(self, t, band=None, t0=None, sigma=None, peak_flux=None):
        """Flux at times ``t`` (days) in bands ``band``; shape: batch + broadcast(t, band)."""
        B, redshift = self._optional("B"), self._optional("redshift")
        baseline = {} if B is None else {"B": B}
        t, p = self._inputs(t, band, redshift, t0=t0, sigma=sigma, peak_flux=peak_flux,
                            **baseline)
        B = p.pop("B", 0.0)
        return self._observed(gaussian_light_curve(t, **p), redshift) + B
