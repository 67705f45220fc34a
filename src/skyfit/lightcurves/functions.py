"""Pure torch light-curve functions; the Modules of this package are thin layers over them.

Conventions (for all of :mod:`skyfit.lightcurves`): times in days, fluxes in the image's flux
units. Every argument is a tensor; they broadcast together, so parameters with leading batch
dimensions give a batch of light curves. The formulas are written in log space where they
multiply a growing by a decaying exponential, so no intermediate overflows (float32 included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_light_curve", "bazin_light_curve", "villar_light_curve"]


def gaussian_light_curve(t, t0, sigma, peak_flux):
    """``peak_flux * exp(-(t - t0)^2 / (2 sigma^2))``: peaks at ``t0`` with ``peak_flux``.

    Example:
        >>> import torch
        >>> gaussian_light_curve(torch.tensor([0.0, 2.0]), 0.0, 2.0, 10.0)  # days, flux
        tensor([10.0000,  6.0653])
    """
    return peak_flux * torch.exp(-0.5 * ((t - t0) / sigma) ** 2)


def bazin_light_curve(t, t0, A, tau_rise, tau_fall, B):
    """Bazin et al. (2009, A&A 499, 653; arXiv:0904.1066) eq. 1:
    ``A exp(-(t - t0) / tau_fall) / (1 + exp(-(t - t0) / tau_rise)) + B``.

    For ``tau_fall > tau_rise`` it peaks at ``t0 + tau_rise ln(tau_fall / tau_rise - 1)`` and tends
    to the baseline ``B`` far before and after the peak.

    Example:
        >>> import math, torch
        >>> t_peak = 0.0 + 2.0 * math.log(20.0 / 2.0 - 1)  # days
        >>> t = torch.tensor([t_peak - 0.1, t_peak, t_peak + 0.1], dtype=torch.float64)
        >>> f = bazin_light_curve(t, 0.0, 100.0, 2.0, 20.0, 5.0)
        >>> bool(f[1] > f[0] and f[1] > f[2])  # the maximum is at t_peak
        True
    """
    dt = t - t0
    # time scales floored (``_time_scale``) so the gradient at tau = 0, their bound, is finite
    return A * torch.exp(-dt / _time_scale(tau_fall) + F.logsigmoid(dt / _time_scale(tau_rise))) + B


def villar_light_curve(t, t0, A, beta, gamma, tau_rise, tau_fall, transition_width=3.0):
    """Villar et al. (2019, ApJ 884, 83; arXiv:1905.07422) eq. 1, with a smooth plateau end.

    With ``t1 = t0 + gamma`` (plateau end) and ``s(t) = 1 / (1 + exp(-(t - t0) / tau_rise))``:

    - plateau, ``t < t1``: ``(A + beta (t - t0)) s(t)``;
    - decline, ``t >= t1``: ``(A + beta gamma) exp(-(t - t1) / tau_fall) s(t)``.

    The two pieces are equal at ``t1``. Instead of switching between them there, this function
    blends them with a sigmoid weight ``w = 1 / (1 + exp(-(t - t1) / transition_width))``,
    ``F = (1 - w) plateau + w decline`` (as the ALeRCE supernova parametric model,
    Sanchez-Saez et al. 2021, AJ 161, 141, arXiv:2008.03311, with a 3-day width), so the flux and
    its derivatives are smooth in ``t`` and in every parameter (``gamma`` included), which a
    gradient-based fit needs. At ``t1`` the blend equals the piecewise value exactly; more than a
    few widths away from ``t1`` it equals the piecewise model; as the width tends to 0 it tends to
    the piecewise model everywhere. ``transition_width`` may be a tensor that broadcasts with the
    parameters (e.g. a fraction of ``tau_fall``, as :class:`~skyfit.lightcurves.Villar` with
    ``transition_fraction``); it must stay below ``tau_fall`` or the decline piece, which grows
    as ``exp(+(t1 - t) / tau_fall)`` before ``t1``, outweighs its vanishing blend weight.

    Example:
        >>> import torch
        >>> t = torch.tensor([-50.0, 10.0, 200.0], dtype=torch.float64)  # days
        >>> f = villar_light_curve(t, 0.0, 100.0, -0.5, 30.0, 2.0, 20.0)
        >>> [round(v, 2) for v in f.tolist()]  # before the rise, on the plateau, long after
        [0.0, 94.54, 0.02]
    """
    # evaluated for every point of every object at each step of a batched fit, so written with
    # few operations: products with reciprocals of the (per-object) time scales, not divisions
    # of every point (a division and its derivatives cost several products), and one
    # log-sigmoid fewer through log(1 - w) = log w - u
    dt = t - t0
    after_end = dt - gamma
    u = after_end * (1.0 / transition_width)
    log_rise_end = (F.logsigmoid(dt * _time_scale(tau_rise).reciprocal())
                    + F.logsigmoid(u))  # log s(t) + log w
    plateau = (A + beta * dt) * torch.exp(log_rise_end - u)
    decline = (A + beta * gamma) * torch.exp(
        log_rise_end - after_end * _time_scale(tau_fall).reciprocal())
    return plateau + decline


def _time_scale(tau):
    """``tau`` floored at ``tiny ** (1/4)`` of its dtype (1e-77 days in float64, 3e-10 in
    float32), where the rise or decline is already a step to working precision. At ``tau = 0``
    (the bound of its valid range, where an optimiser may stop) ``dt / tau`` is 0/0 or infinite
    and its derivative ``-dt / tau^2`` infinite, so the gradient was NaN (0 x inf); with the
    floor ``dt / tau^2`` stays finite and the gradient in ``tau`` below it is 0, the limit of
    the flux's derivative as ``tau -> 0`` (away from ``dt = 0``)."""
    tau = torch.as_tensor(tau)
    floor = torch.finfo(tau.dtype).tiny ** 0.25 if tau.is_floating_point() else 0.0
    return tau.clamp(min=floor)
