"""Ellipticity ``(e1, e2)``: conversions from and to ``(q, phi)``, and a module option.

Convention (lenstronomy's ``param_util.phi_q2_ellipticity``)::

    e1 = (1 - q) / (1 + q) cos(2 phi),   e2 = (1 - q) / (1 + q) sin(2 phi)

with ``q`` the axis ratio (minor / major, in ``(0, 1]``) and ``phi`` the position angle of the
major axis (rad, counter-clockwise from +x, period pi). ``q -> 1`` is ``e -> 0``, an interior
point, and swapping the axes is a smooth path through it.
"""

from __future__ import annotations

import math

import caskade as ck
import torch

from .params import Param

__all__ = ["q_phi_to_e1e2", "e1e2_to_q_phi", "use_ellipticity"]

# |e| is floored at this inside the square root, so that the map is differentiable at e = 0
# (q = 1 - 2e-8 there, well inside any fit's precision)
_E_FLOOR = 1e-8


def q_phi_to_e1e2(q, phi) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e1, e2)`` of axis ratio ``q`` and angle ``phi`` (lenstronomy's convention, above).

    Example:
        >>> import torch
        >>> e1, e2 = q_phi_to_e1e2(torch.tensor(0.5), torch.tensor(0.0))
        >>> round(float(e1), 6), round(float(e2), 6)
        (0.333333, 0.0)
    """
    q, phi = torch.as_tensor(q), torch.as_tensor(phi)
    c = (1 - q) / (1 + q)
    return c * torch.cos(2 * phi), c * torch.sin(2 * phi)


def e1e2_to_q_phi(e1, e2, max_modulus_squared=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, phi)`` of ``(e1, e2)``, ``phi`` in ``[0, pi)``: the inverse of
    :func:`q_phi_to_e1e2` (differentiable everywhere; at ``e = 0`` it gives ``q = 1 - 2e-8``,
    ``phi = 0``). With ``max_modulus_squared`` (``c^2``, broadcasting with ``e1``), a point
    beyond the disc ``|e| <= c`` is taken radially onto it: ``q >= (1 - c) / (1 + c)`` for
    every input, ``phi`` unchanged."""
    e1, e2 = torch.as_tensor(e1), torch.as_tensor(e2)
    modulus_squared = e1**2 + e2**2
    if max_modulus_squared is not None:  # the radial cap: a clamp of |e|^2, no square root
        modulus_squared = torch.minimum(modulus_squared, max_modulus_squared)
    c = torch.sqrt(modulus_squared + _E_FLOOR**2)
    at_zero = (e1 == 0) & (e2 == 0)
    phi = 0.5 * torch.atan2(e2, torch.where(at_zero, torch.full_like(e1, _E_FLOOR), e1))
    return (1 - c) / (1 + c), torch.remainder(phi, math.pi)


def use_ellipticity(module: ck.Module, dynamic: bool | None = None) -> tuple[ck.Param, ck.Param]:
    """Make ``module.q`` and ``module.phi`` functions of two new Params ``module.e1``,
    ``module.e2`` (the convention above), set from their current values: the module is then
    parametrised, fitted and sampled in ``(e1, e2)``. Works for every module with an ellipse
    (``q`` in ``(0, 1]`` and ``phi``): :class:`~skyfit.Sersic`, :class:`~skyfit.GaussianSource`,
    the SIE lens.

    Arguments:
        module: the module. dynamic: make ``e1, e2`` dynamic (default: if ``q`` or ``phi`` was).

    Example:
        >>> import skyfit
        >>> s = skyfit.Sersic("host", q=0.5, phi=0.0)
        >>> e1, e2 = use_ellipticity(s)
        >>> round(float(e1.value), 6), round(float(s.q.value), 6)
        (0.333333, 0.5)
    """
    q, phi = module.q, module.phi
    if q.value is None or phi.value is None:
        raise ValueError(f"{module.name}: give q and phi values before use_ellipticity")
    if dynamic is None:
        dynamic = q.dynamic or phi.dynamic
    e1_value, e2_value = q_phi_to_e1e2(q.value, phi.value)
    e1 = Param("e1", e1_value, valid=(-1.0, 1.0), units="",
                  description="ellipticity (1-q)/(1+q) cos 2phi")
    e2 = Param("e2", e2_value, valid=(-1.0, 1.0), units="",
                  description="ellipticity (1-q)/(1+q) sin 2phi")
    module.e1, module.e2 = e1, e2
    for target in (q, phi):
        target.link(e1)
        target.link(e2)
    q.value = lambda p: e1e2_to_q_phi(p.e1.value, p.e2.value)[0]
    phi.value = lambda p: e1e2_to_q_phi(p.e1.value, p.e2.value)[1]
    if dynamic:
        e1.to_dynamic()
        e2.to_dynamic()
    return e1, e2
