"""Villar (2019) light curve: rise, sloped plateau, exponential decline."""

from __future__ import annotations

from .._forward import forward
from ..params import Param
from .base import LightCurve
from .functions import _time_scale, villar_light_curve

__all__ = ["Villar"]


class Villar(LightCurve):
    """Rise (time scale ``tau_rise`` from ``t0``), a plateau of slope ``beta`` lasting ``gamma``,
    then an exponential decline (``tau_fall``); the plateau end is a smooth sigmoid blend of
    ``transition_width`` days (see :func:`villar_light_curve` for the formula and why).

    Per band and batched parameters as explained in :class:`LightCurve`.

    ``relative_slope=True`` makes ``beta`` the plateau slope as a fraction of ``A`` per day
    (units 1/day): the plateau is ``A (1 + beta (t - t0))`` and the plateau end
    ``A (1 + beta gamma)``, as in Superphot (Hosseinzadeh et al. 2020, ApJ 905, 93). A slope
    relative to the amplitude means the same thing in every band, so it can be ``shared``:
    with a band sampled only after the peak, a per-band plateau length and slope are not
    identifiable (a short flat plateau and a long declining one fit the same decline), while a
    relative slope and a plateau length shared by all bands are set by the best-sampled band.
    :func:`~skyfit.lightcurves.from_photometry` builds Villar models this way.

    ``transition_fraction`` makes the blend width ``transition_fraction * tau_fall`` (per band,
    rest frame) instead of the fixed ``transition_width``. A real light curve has no corner at
    the plateau end (Villar's piecewise form is a convenience); a width fixed in days is not
    scale-free (a light curve stretched in time keeps a 3-day corner, sharp next to a 40-day
    decline), while a width proportional to the decline time is: stretching every time scale
    and ``t`` by a factor (and dividing ``beta`` by it) stretches the light curve. The corner
    then departs from the piecewise model by at most 6.2% in flux (0.07 mag) at fraction 0.2
    (flat plateau; 9.9% at 0.3), less than 0.1% more than 10 widths from ``t1``. On the SLSN
    LSQ12dlf (benchmark row ``lightcurve_real_slsn_villar``) the 3-day corner made a second
    posterior mode (plateau ending just before the first points of four bands, ~5% of the
    mass by Laplace evidence); with fraction 0.2 it holds ~0.14%.

    References:
        Villar et al. (2019), ApJ 884, 83, eq. 1 (arXiv:1905.07422).
        Sanchez-Saez et al. (2021), AJ 161, 141 (arXiv:2008.03311): the sigmoid blend.

    Arguments:
        t0: start time (day). A: amplitude (flux). beta: plateau slope (flux / day, usually
        negative). gamma: plateau duration (day). tau_rise, tau_fall: rise and decline time scales
        (day). transition_width: fixed width of the plateau-end blend (day; not a parameter).
        transition_fraction: the blend width as this fraction of ``tau_fall``, in (0, 1)
            (None: the fixed ``transition_width``).
        B: baseline flux per band (None: no baseline Param; 0.0 to fit one).
        relative_slope: ``beta`` in units of ``A`` per day instead of flux per day.
        bands: band names, or None for one band. shared: parameters common to all bands (or to
        a band subset). redshift, dimming: see :class:`LightCurve`.

    Default priors (:func:`~skyfit.lightcurves.default_priors`): ``t0`` normal around the
    data-driven start (sd: a third of the data's time span), ``tau_rise``, ``tau_fall`` and
    ``gamma`` log-normal around the data's scales (sd 1 in ln), ``A`` log-normal around the
    start (sd 1), ``beta`` normal around 0 (sd: A / 100 days), ``B`` normal around 0 (sd: 3
    median flux errors); with ``relative_slope``: ``beta`` normal around 0 (sd 0.01 per day).

    Example:
        >>> import torch
        >>> lc = Villar(t0=0.0, A=1.0, beta=-0.01, gamma=30.0, tau_rise=2.0, tau_fall=15.0)
        >>> t1 = torch.tensor(30.0, dtype=torch.float64)  # plateau end: (A + beta gamma) s(t1)
        >>> round(lc.flux(t1).item(), 6), round(0.7 / (1 + torch.exp(t1 / -2.0)).item(), 6)
        (0.7, 0.7)
    """

    def __init__(self, name: str | None = None, t0=0.0, A=1.0, beta=0.0, gamma=30.0, tau_rise=3.0,
                 tau_fall=30.0, B=None, transition_width: float = 3.0, bands=None, shared=(),
                 redshift=None, dimming: bool = False, relative_slope: bool = False,
                 transition_fraction: float | None = None):
        super().__init__(name, bands, shared, redshift, dimming)
        self.relative_slope = bool(relative_slope)
        if not transition_width > 0:
            raise ValueError(f"transition_width must be positive (days), got {transition_width}")
        self.transition_width = float(transition_width)
        if transition_fraction is not None and not 0 < transition_fraction < 1:
            raise ValueError(f"transition_fraction must lie in (0, 1) (of tau_fall), got "
                             f"{transition_fraction}")
        self.transition_fraction = None if transition_fraction is None else float(
            transition_fraction)
        self.t0 = Param("t0", *self._per_band("t0", t0),
                        units="day", description="start time of the rise")
        self.A = Param("A", *self._per_band("A", A),
                       valid=(0.0, None), units="flux", description="amplitude")
        self.beta = Param("beta", *self._per_band("beta", beta),
                          units="1/day" if relative_slope else "flux/day",
                          description="plateau slope" + (" / A" if relative_slope else ""))
        self.gamma = Param("gamma", *self._per_band("gamma", gamma),
                           valid=(0.0, None), units="day", description="plateau duration")
        self.tau_rise = Param("tau_rise", *self._per_band("tau_rise", tau_rise),
                              valid=(0.0, None), units="day", description="rise time scale")
        self.tau_fall = Param("tau_fall", *self._per_band("tau_fall", tau_fall),
                              valid=(0.0, None), units="day", description="decline time scale")
        if B is not None:
            self.B = Param("B", *self._per_band("B", B), units="flux", description="baseline flux")
        self._check_shared(("t0", "A", "beta", "gamma", "tau_rise", "tau_fall")
                           + (("B",) if B is not None else ()))

    def blend_width(self, tau_fall):
        """The plateau-end blend's width (rest-frame days): ``transition_fraction * tau_fall``,
        or the fixed ``transition_width`` without a fraction."""
        if self.transition_fraction is None:
            return self.transition_width
        return self.transition_fraction * _time_scale(tau_fall)

    @forward
    def flux(self, t, band=None, t0=None, A=None, beta=None, gamma=None, tau_rise=None,
             tau_fall=None):
        """Flux at times ``t`` (days) in bands ``band``; shape: batch + broadcast(t, band)."""
        B, redshift = self._optional("B"), self._optional("redshift")
        baseline = {} if B is None else {"B": B}
        t, p = self._inputs(t, band, redshift, t0=t0, A=A, beta=beta, gamma=gamma,
                            tau_rise=tau_rise, tau_fall=tau_fall, **baseline)
        B = p.pop("B", 0.0)
        if self.relative_slope:
            p["beta"] = p["beta"] * p["A"]
        flux = villar_light_curve(t, transition_width=self.blend_width(p["tau_fall"]), **p)
        return self._observed(flux, redshift) + B
