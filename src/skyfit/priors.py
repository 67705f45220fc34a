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


class GroupedPriors:
    """The sum of the priors' log-densities of a flat vector, with every Normal and LogNormal
    prior (of a Param with event shape ``()``) evaluated in one vectorised closed-form term per
    family, the others one by one (:func:`prior_log_prob`). The same values as summing
    :func:`prior_log_prob` over the priors, to rounding.

    Why: a Posterior evaluates its priors at every gradient of a sampler; for a small model
    (a light curve's dozen Params, most with Normal or LogNormal priors) the distributions' own
    ``log_prob`` (a TransformedDistribution for LogNormal: a Python layer per transform) and the
    per-prior support checks and their backward passes cost as much as the likelihood.

    Arguments:
        priors: ``{label: Distribution}`` (validation off: outside the support is ``-inf``).
        slices: ``{label: (slice, shape, param)}``, each label's entries of the vector.

    Example:
        >>> import torch
        >>> from torch.distributions import LogNormal, Normal
        >>> priors = {"a": Normal(0.0, 2.0), "b": LogNormal(torch.zeros(2), 1.0)}
        >>> slices = {"a": (slice(0, 1), (), None), "b": (slice(1, 3), (2,), None)}
        >>> x = torch.tensor([0.5, 1.0, 2.0])
        >>> direct = sum(prior_log_prob(d, x[slices[k][0]].reshape(slices[k][1]),
        ...                              len(slices[k][1])) for k, d in priors.items())
        >>> bool(torch.isclose(GroupedPriors(priors, slices)(x), direct))
        True
    """

    def __init__(self, priors: dict, slices: dict):
        # the distributions themselves, not their ids: an id is reused once a replaced prior
        # is freed, and stale constants would be a silent wrong answer
        self.built_from = tuple(priors.items())
        self.others, families = [], {"normal": [], "lognormal": []}
        for label, dist in priors.items():
            sl, shape, _ = slices[label]
            family = _closed_form_family(dist, shape)
            if family is None:
                self.others.append((label, dist, sl, shape))
            else:
                families[family].append((dist, sl, shape))
        self.groups = [(family == "lognormal", *_group_constants(members))
                       for family, members in families.items() if members]

    def built_for(self, priors: dict) -> bool:
        """Whether ``priors`` are the very distributions (same labels, same objects) these
        constants were built from."""
        return len(priors) == len(self.built_from) and all(
            label == old_label and dist is old_dist
            for (label, dist), (old_label, old_dist) in zip(priors.items(), self.built_from))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``sum log p(x)`` over the priors for ``x (..., dim)``; ``(...)``."""
        total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for log_space, index, *constants in self.groups:
            if constants[0].dtype != x.dtype or constants[0].device != x.device:
                constants = [c.to(dtype=x.dtype, device=x.device) for c in constants]
            loc, neg_half_precision, log_norm = constants
            value = x[..., index.to(x.device)]
            y = value.log() if log_space else value
            lp = (y - loc).square() * neg_half_precision - log_norm
            if log_space:
                lp = lp - y  # the Jacobian of exp
            # outside the support (a LogNormal's value <= 0) or NaN: -inf, as prior_log_prob
            lp = torch.where(torch.isnan(lp), -math.inf, lp)
            total = total + lp.sum(-1)
        for _, dist, sl, shape in self.others:
            total = total + prior_log_prob(dist, x[..., sl].reshape(x.shape[:-1] + shape),
                                           len(shape))
        return total


def _closed_form_family(dist: Distribution, shape) -> str | None:
    """``"normal"`` or ``"lognormal"`` for exactly those torch distributions with an event
    shape ``()`` whose batch shape broadcasts to the Param's ``shape``; None otherwise."""
    from torch.distributions import LogNormal, Normal

    family = {Normal: "normal", LogNormal: "lognormal"}.get(type(dist))
    if family is None or tuple(dist.event_shape) != ():
        return None
    try:
        if torch.broadcast_shapes(tuple(dist.batch_shape), tuple(shape)) != tuple(shape):
            return None
    except RuntimeError:
        return None
    return family


def _group_constants(members) -> tuple:
    """Entry indices, ``loc``, ``-1 / (2 scale^2)`` and ``ln scale + ln sqrt(2 pi)`` of one
    family's priors, flattened over their Params' entries, in float64. ``scale^2`` and
    ``ln scale`` are taken in each distribution's own dtype first, as its ``log_prob`` does
    (a prior built from Python floats holds float32 tensors)."""
    index, loc, var, log_scale = [], [], [], []
    for dist, sl, shape in members:
        index += range(sl.start, sl.stop)
        scale = torch.as_tensor(dist.scale)
        for out, v in ((loc, torch.as_tensor(dist.loc)), (var, scale**2),
                       (log_scale, scale.log())):
            out.append(v.expand(shape).reshape(-1).to(torch.float64))
    loc, var, log_scale = torch.cat(loc), torch.cat(var), torch.cat(log_scale)
    return (torch.tensor(index, dtype=torch.long, device=loc.device), loc, -0.5 / var,
            log_scale + math.log(math.sqrt(2 * math.pi)))
