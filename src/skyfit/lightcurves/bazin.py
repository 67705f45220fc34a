"""Bazin (2009) light curve: sigmoid rise times exponential decline, plus a baseline."""

from __future__ import annotations

from .._forward import forward
from ..params import Param
from .base import LightCurve
from .functions import bazin_light_curve

__all__ = ["Bazin"]


class Bazin(LightCurve):
    """``flux(t) = A exp(-(t - t0) / tau_fall) / (1 + exp(-(t - t0) / tau_rise)) + B``.

    A phenomenological supernova light curve. For ``tau_fall > tau_rise`` it peaks at
    ``t0 + tau_rise ln(tau_fall / tau_rise - 1)`` (``t0`` itself is not the peak time) and tends to
    the baseline ``B`` long before and after. Per band and batched parameters as explained in
    :class:`LightCurve`.

    References:
        Bazin et al. (2009), A&A 499, 653, eq. 1 (arXiv:0904.1066).

    Arguments:
        t0: reference time (day). A: amplitude (flux). tau_rise, tau_fall: rise and decline
        time scales (day). B: baseline flux (may be negative on difference images).
        bands: band names, or None for one band. shared: parameters common to all bands (or to
        a band subset). redshift, dimming: see :class:`LightCurve`.

    Default priors (:func:`~skyfit.lightcurves.default_priors`): ``t0`` normal around the
    data-driven start (sd: a third of the data's time span), ``tau_rise`` and ``tau_fall``
    log-normal around the data's rise and decline scales (sd 1 in ln), ``A`` log-normal around
    the start (sd 1), ``B`` normal around 0 (sd: 3 median flux errors).

    Example:
        >>> import math, torch
        >>> lc = Bazin(t0=0.0, A=2.0, tau_rise=2.0, tau_fall=20.0, B=0.0)
        >>> t_peak = 2.0 * math.log(20.0 / 2.0 - 1)
        >>> round(lc.flux(torch.tensor(t_peak, dtype=torch.float64)).item(), 4)
        1.4449
    """

    def __init__(self, name: str | None = None, t0=0.0, A=1.0, tau_rise=3.0, tau_fall=20.0,
                 B=0.0, bands=None, shared=(), redshift=None, dimming: bool = False):
        super().__init__(name, bands, shared, redshift, dimming)
        self.t0 = Param("t0", *self._per_band("t0", t0),
                        units="day", description="reference time of the rise")
        self.A = Param("A", *self._per_band("A", A),
                       valid=(0.0, None), units="flux", description="amplitude")
        self.tau_rise = Param("tau_rise", *self._per_band("tau_rise", tau_rise),
                              valid=(0.0, None), units="day", description="rise time scale")
        self.tau_fall = Param("tau_fall", *self._per_band("tau_fall", tau_fall),
                              valid=(0.0, None), units="day", description="decline time scale")
        self.B = Param("B", *self._per_band("B", B), units="flux", description="baseline flux")
        self._check_shared(("t0", "A", "tau_rise", "tau_fall", "B"))

    @forward
    def flux(self, t, band=None, t0=None, A=None, tau_rise=None, tau_fall=None, B=None):
        """Flux at times ``t`` (days) in bands ``band``; shape: batch + broadcast(t, band)."""
        redshift = self._optional("redshift")
        t, p = self._inputs(t, band, redshift, t0=t0, A=A, tau_rise=tau_rise, tau_fall=tau_fall,
                            B=B)
        if not self.dimming:
            return bazin_light_curve(t, **p)
        B = p.pop("B")
        return self._observed(bazin_light_curve(t, **p, B=0.0), redshift) + B
