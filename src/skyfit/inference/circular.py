"""Circular statistics of periodic parameters (angles of period ``upper - lower``)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["circular_mean", "circular_std", "unwrap_around", "wrap", "wrap_periodic"]


def _angle(x, lower: float, upper: float):
    return 2 * np.pi * (np.asarray(x, dtype=np.float64) - lower) / (upper - lower)


def wrap(x, lower: float, upper: float):
    """``x`` brought into ``[lower, upper)`` modulo the period."""
    return lower + np.mod(np.asarray(x, dtype=np.float64) - lower, upper - lower)


def wrap_periodic(x: torch.Tensor, periodic: torch.Tensor, lower: torch.Tensor,
                  upper: torch.Tensor) -> torch.Tensor:
    """``x`` (``(..., dim)``) with its ``periodic`` entries brought into ``[lower, upper)``
    modulo their period (an angle of ``-0.3`` on ``[0, pi)`` is ``pi - 0.3``: the same angle);
    the other entries as they are. Differentiable; for starts and values given by a user."""
    periodic = periodic.to(x.device) & torch.isfinite(upper - lower).to(x.device)
    if not bool(periodic.any()):
        return x
    lower, upper = lower.to(x), upper.to(x)
    wrapped = lower + torch.remainder(x - lower, upper - lower)
    # rounding can land a value just below lower on upper itself (float32: -1e-9 on [0, pi))
    wrapped = torch.where(wrapped >= upper, lower, wrapped)
    return torch.where(periodic, wrapped, x)


def circular_mean(x, lower: float, upper: float, axis: int = 0):
    """Mean direction of ``x`` on the circle of period ``upper - lower``, in ``[lower, upper)``.

    Example:
        >>> import numpy as np
        >>> round(float(circular_mean(np.array([0.3, np.pi - 0.1]), 0.0, np.pi)), 12)
        0.1
    """
    a = _angle(x, lower, upper)
    mean = np.arctan2(np.sin(a).mean(axis), np.cos(a).mean(axis))
    return wrap(lower + mean * (upper - lower) / (2 * np.pi), lower, upper)


def circular_std(x, lower: float, upper: float, axis: int = 0):
    """Circular standard deviation ``sqrt(-2 ln R)`` (``R`` the mean resultant length), in the
    units of ``x``: the standard deviation for a concentrated (wrapped normal) distribution."""
    a = _angle(x, lower, upper)
    R = np.hypot(np.sin(a).mean(axis), np.cos(a).mean(axis))
    return np.sqrt(-2 * np.log(np.clip(R, 1e-300, 1.0))) * (upper - lower) / (2 * np.pi)


def unwrap_around(x, center, lower: float, upper: float):
    """``x`` shifted by whole periods into ``[center - P/2, center + P/2)``: the draws of a
    concentrated angle as one contiguous lump, for quantiles and chain diagnostics."""
    period = upper - lower
    return center + np.mod(np.asarray(x, dtype=np.float64) - center + period / 2, period) \
        - period / 2
