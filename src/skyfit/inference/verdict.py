"""Whether an optimiser's end point is a mode: the one convergence verdict of fit_map."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .density import LogDensity

__all__ = ["Verdict", "convergence_verdict", "pinned_mask"]

# a scaled gradient entry is d log p per posterior standard deviation (the preconditioning
# scale is 1/sqrt(curvature)): below this, a further step gains < 1e-6 in log p
SCALED_GRADIENT_TOL = 1e-3
DECREMENT_TOL = 1e-6


class Verdict(NamedTuple):
    """converged; reason (a sentence, for messages); grad_norm (max |gradient x scale| over the
    free entries); pinned (names of entries at a bound with the gradient pushing outward)."""

    converged: bool
    reason: str
    grad_norm: float
    pinned: list[str]


def pinned_mask(x: torch.Tensor, grad: torch.Tensor, density: LogDensity) -> torch.Tensor:
    """Entries at a bound with the log-density rising outward (never a periodic entry)."""
    at_low = (x <= density.lower) & (grad < 0)
    at_high = (x >= density.upper) & (grad > 0)
    return (at_low | at_high) & ~density.periodic


def _suggestion(name: str, at_upper: bool, bound: float) -> str:
    if name.endswith(".q") and at_upper and bound == 1.0:
        return ("the axes want to swap: fit the ellipse in (e1, e2) (fit_map's default "
                "coordinates='auto' does so for (q, phi) pairs)")
    if name.endswith(".q"):
        return "fit the ellipse in (e1, e2) ellipticity, or widen q's valid range"
    return "widen its valid range, or reparametrise (e.g. fit its logarithm)"


def _pinned_reason(density: LogDensity, x, grad, pinned) -> tuple[str, list[str]]:
    names, parts = [], []
    for i in torch.nonzero(pinned).flatten().tolist():
        name, at_upper = density.names[i], bool(x[i] >= density.upper[i])
        bound = float(density.upper[i] if at_upper else density.lower[i])
        names.append(name)
        parts.append(f"{name}={x[i].item():g} is pinned at its {'upper' if at_upper else 'lower'}"
                     f" bound with d log p/d {name} = {grad[i].item():+.3g} pushing outward; "
                     + _suggestion(name, at_upper, bound))
    return "; ".join(parts), names


def convergence_verdict(density: LogDensity, x: torch.Tensor, logp: torch.Tensor,
                        grad: torch.Tensor, scale: torch.Tensor, decrement: float,
                        gtol: float = SCALED_GRADIENT_TOL) -> Verdict:
    """A fit is converged only if the log-density and gradient are finite, no entry is pinned at
    a bound with the gradient pushing outward, and either the Newton decrement (when the Hessian
    is negative definite, ``decrement`` finite) is below 1e-6 or the gradient in scaled
    coordinates (``grad * scale``) is below ``max(gtol, 1e-3)``. An exactly zero gradient with a
    Hessian that is not negative definite is a flat region (e.g. the model underflowed), not a
    mode."""
    if not (torch.isfinite(logp).all() and torch.isfinite(grad).all()):
        return Verdict(False, f"log p={float(logp):g} or its gradient is not finite at the end "
                       "point", math.nan, [])
    pinned = pinned_mask(x, grad, density)
    free = ~pinned
    scaled = (grad * scale).abs()[free]
    grad_norm = float(scaled.max()) if free.any() else 0.0
    if pinned.any():
        reason, names = _pinned_reason(density, x, grad, pinned)
        return Verdict(False, reason, grad_norm, names)
    if math.isfinite(decrement):
        ok = decrement < DECREMENT_TOL
        return Verdict(ok, f"Newton decrement {decrement:.3g} (tolerance {DECREMENT_TOL:g}), "
                       f"scaled |grad|max {grad_norm:.3g}", grad_norm, [])
    if free.any() and bool((grad[free] == 0).all()):
        return Verdict(False, "the gradient is exactly zero but the Hessian is not negative "
                       "definite: the log-density is flat here (the model underflowed or does "
                       "not depend on the parameters); start elsewhere", grad_norm, [])
    tol = max(gtol, SCALED_GRADIENT_TOL)
    return Verdict(grad_norm < tol, f"scaled |grad|max {grad_norm:.3g} (tolerance {tol:g}); "
                   "the Hessian is not negative definite here", grad_norm, [])
