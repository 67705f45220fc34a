"""Make a source's flux follow a light curve: one flux per epoch."""

from __future__ import annotations

import caskade as ck
import torch

from ..errors import ShapeError
from ..params import Param
from .base import LightCurve

__all__ = ["LightCurveFlux", "link_flux_to_light_curve"]


class LightCurveFlux:
    """The pointer function of a linked flux: ``lightcurve.flux(times, band)``.

    A named callable rather than a lambda, so that a model holding it can be saved
    (:func:`skyfit.save_model` stores ``spec()``) and pickled.

    Arguments:
        band: band index of each epoch (an integer tensor), or None for a single band.
    """

    def __init__(self, band=None):
        self.band = band

    def __call__(self, p):
        return p.lightcurve.flux(p.times.value, band=self.band)

    def spec(self) -> dict:
        """The arguments that rebuild this function: ``LightCurveFlux(**spec())``."""
        return {"band": self.band}


def link_flux_to_light_curve(source: ck.Module, lightcurve: LightCurve, times, band=None):
    """Turn ``source.flux`` into a caskade pointer: ``lightcurve.flux(times, band)``.

    The source's flux becomes a vector with one value per epoch, so its image gains a leading
    epoch dimension (sources broadcast leading parameter dimensions; see
    :func:`skyfit.sources.profiles.batch_param`). The light curve's dynamic parameters join the
    source's parameter vector; this is caskade's function-pointer pattern::

        source.flux = LightCurveFlux(band)  # p.lightcurve.flux(p.times.value, band)
        source.flux.link("lightcurve", lightcurve); source.flux.link("times", times)

    Arguments:
        source: any Module with a ``flux`` Param (:class:`~skyfit.PointSource`,
            :class:`~skyfit.Gaussian`, :class:`~skyfit.Sersic`, ...).
        lightcurve: a :class:`LightCurve`, or any Module with ``@forward flux(t, band=None)``.
        times: epochs (days), shape ``(n_epochs,)``: a tensor (made a static Param ``times``;
            float64 unless already a floating tensor) or an existing ``ck.Param`` (to share one
            set of epochs between sources, or to make the times dynamic).
        band: band of each epoch (indices or names) for a multi-band light curve, broadcastable
            to ``times``; None for a single band.

    Returns:
        The ``times`` Param.

    Example:
        >>> import torch
        >>> from skyfit import PointSource, GaussianLightCurve
        >>> sn = PointSource(x0=0.1, y0=0.0)
        >>> lc = GaussianLightCurve(t0=10.0, sigma=5.0, peak_flux=2.0)
        >>> _ = link_flux_to_light_curve(sn, lc, torch.tensor([5.0, 10.0, 15.0]))
        >>> [round(f, 4) for f in sn.flux.value.tolist()]
        [1.2131, 2.0, 1.2131]
    """
    flux = source.children.get("flux")
    if not isinstance(flux, ck.Param):
        raise TypeError(f"{source.name} has no `flux` Param to link to a light curve")
    if not (isinstance(lightcurve, ck.Module) and callable(getattr(type(lightcurve), "flux", 0))):
        raise TypeError(f"lightcurve must be a Module with a @forward flux(t, band=None) method "
                        f"(a LightCurve), got {type(lightcurve).__name__}")
    if not isinstance(times, ck.Param):
        t = times if torch.is_tensor(times) else torch.as_tensor(times, dtype=torch.float64)
        if not t.is_floating_point():
            t = t.to(torch.float64)
        if t.ndim != 1:
            raise ShapeError(f"times must be a vector (n_epochs,), got shape {tuple(t.shape)}")
        times = Param("times", t, units="day", description="epoch of each observation")
    if band is not None and isinstance(lightcurve, LightCurve):
        band = lightcurve.band_index(band)
        n = band.shape[-1] if times.value is None else times.value.shape[-1]  # unknown: no check
        if band.ndim > 0 and band.shape[-1] not in (1, n):
            raise ShapeError(f"band has shape {tuple(band.shape)}, which does not broadcast with "
                             f"{n} epochs")
    if flux.pointer and flux.children:
        flux.unlink()  # replace an earlier pointer
    source.flux = LightCurveFlux(band)
    source.flux.link("lightcurve", lightcurve)
    source.flux.link("times", times)
    return times
