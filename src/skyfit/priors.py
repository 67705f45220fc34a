"""Priors on caskade Params: torch distributions, with a uniform default inside ``valid``."""

from __future__ import annotations

import math

import caskade as ck
import torch
from torch.distributions import Distribution

__all__ = ["param_bounds", "default_prior_log_prob", "prior_log_prob"]


def param_bounds(param: ck.Param, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` of a Param's ``valid`` range, broadcast to its shape (+-inf if open).

    Example:
        >>> from skyfit import Sersic
        >>> param_bounds(Sersic().q)  # axis ratio in (0, 1]
        (tensor(0., dtype=torch.float64), tensor(1., dtype=torch.float64))
    """
    shape = tuple(param.shape)
    lo, hi = param.valid
    kw = dict(dtype=dtype, device=device)
    lower = torch.as_tensor(-math.inf if lo is None else lo, **kw).expand(shape)
    upper = torch.as_tensor(math.inf if hi is None else hi, **kw).expand(shape)
    return lower.clone(), upper.clone()


def default_prior_log_prob(value: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):
    """Uniform within ``[lower, upper]`` where both are finite, flat (improper) otherwise.

    ``value`` is ``(..., *param_shape)``; returns ``(...)``. Values outside the bounds are the
    caller's business (the Posterior returns -inf there).

    Example:
        >>> import math, torch
        >>> lp = default_prior_log_prob(torch.tensor(0.5), torch.tensor(0.0), torch.tensor(2.0))
        >>> round(lp.item(), 6) == round(-math.log(2.0), 6)  # uniform on [0, 2]
        True
    """
    both = torch.isfinite(lower) & torch.isfinite(upper)
    width = torch.where(both, upper - lower, torch.ones_like(lower))
    per_entry = torch.where(both, -torch.log(width), torch.zeros_like(width))
    total = per_entry.sum()
    return total.expand(value.shape[: value.ndim - lower.ndim])


def prior_log_prob(dist: Distribution, value: torch.Tensor, param_ndim: int) -> torch.Tensor:
    """``dist.log_prob(value)`` summed over the Param's own dimensions; NaN (outside the
    distribution's support) becomes -inf.

    Example:
        >>> import torch
        >>> from torch.distributions import Normal, Uniform
        >>> prior_log_prob(Normal(0.0, 1.0), torch.zeros(3), param_ndim=1)  # 3 x -log sqrt(2 pi)
        tensor(-2.7568)
        >>> prior_log_prob(Uniform(0.0, 1.0, validate_args=False), torch.tensor(2.0), param_ndim=0)
        tensor(-inf)
    """
    lp = dist.log_prob(value)
    try:  # with _validate_args off, e.g. Exponential gives a finite log_prob below 0
        inside = dist.support.check(value)
    except NotImplementedError:
        inside = None
    if inside is not None:
        lp = torch.where(inside, lp, -math.inf)
    lp = torch.where(torch.isnan(lp), -math.inf, lp)  # not nan_to_num: it maps -inf to -1.8e308
    extra = lp.ndim - (value.ndim - param_ndim)
    if extra > 0:
        lp = lp.sum(dim=tuple(range(-extra, 0)))
    return lp
