"""Strong-Wolfe line search for many independent problems at once, in lockstep."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["BatchedObjective", "LineSearchResult", "strong_wolfe"]

#: ``objective(x (k, D), rows (k,)) -> (f (k,), grad (k, D))``: the value to MINIMISE and its
#: gradient for ``k`` points, where ``rows`` says which of the B problems each point belongs to
#: (so an objective over B datasets evaluates only the rows it is given).
BatchedObjective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LineSearchResult(NamedTuple):
    """Per row: ``step`` (0 where nothing was accepted), ``f`` / ``grad`` at the accepted point
    (the start's where nothing was accepted), ``wolfe`` (strong Wolfe conditions hold),
    ``decreased`` (a step with sufficient decrease was accepted, Wolfe or not), ``n_evals``,
    ``n_nan`` (trials with a NaN value or gradient), ``n_inf`` (trials with an infinite value,
    e.g. ``log p = -inf`` outside the support)."""

    step: torch.Tensor
    f: torch.Tensor
    grad: torch.Tensor
    wolfe: torch.Tensor
    decreased: torch.Tensor
    n_evals: torch.Tensor
    n_nan: torch.Tensor
    n_inf: torch.Tensor


def _cubic_minimiser(a_lo, f_lo, dp_lo, a_hi, f_hi, dp_hi):
    """Minimiser of the cubic through two points with slopes (Nocedal & Wright 2006, eq. 3.59),
    kept in the interior 80% of the interval; bisection where the cubic has no real minimiser
    or the values are not finite (e.g. the far end was a NaN or -inf trial)."""
    d1 = dp_lo + dp_hi - 3 * (f_lo - f_hi) / (a_lo - a_hi)
    disc = d1 * d1 - dp_lo * dp_hi
    d2 = torch.sign(a_hi - a_lo) * disc.clamp(min=0).sqrt()
    cubic = a_hi - (a_hi - a_lo) * (dp_hi + d2 - d1) / (dp_hi - dp_lo + 2 * d2)
    mid = 0.5 * (a_lo + a_hi)
    cubic = torch.where(torch.isfinite(cubic) & (disc >= 0), cubic, mid)
    width = a_hi - a_lo
    low = torch.minimum(a_lo + 0.1 * width, a_hi - 0.1 * width)
    high = torch.maximum(a_lo + 0.1 * width, a_hi - 0.1 * width)
    return torch.minimum(torch.maximum(cubic, low), high)


def _next_trial(a_lo, f_lo, dp_lo, a_hi, f_hi, dp_hi, *, grow: float, backoff: float):
    """Bracketing (no upper end yet, ``a_hi = inf``): ``grow`` times the last good step.
    Zooming: the safeguarded cubic minimiser, or, after a non-finite trial at ``a_hi``, a step
    ``backoff`` of the way from ``a_lo`` towards it (a NaN region or the edge of the support
    may begin anywhere beyond ``a_lo``: shrink fast instead of interpolating garbage)."""
    zooming = torch.isfinite(a_hi)
    finite_hi = torch.isfinite(f_hi) & torch.isfinite(dp_hi)
    hi = torch.where(zooming, a_hi, a_lo + 1)  # placeholder where not zooming (no inf - inf)
    cubic = _cubic_minimiser(a_lo, f_lo, dp_lo, hi, torch.where(finite_hi, f_hi, f_lo),
                             torch.where(finite_hi, dp_hi, dp_lo))
    shrink = a_lo + backoff * (hi - a_lo)
    return torch.where(zooming, torch.where(finite_hi, cubic, shrink), grow * a_lo)


def _classify(a, f, dp, finite, f0, dphi0, a_lo, f_lo, a_hi, value_tol, c1, c2):
    """Per trial: ``worse`` (it becomes ``hi``), ``curvature`` (strong Wolfe: accept), ``swap``
    (it becomes ``lo`` and the old ``lo`` becomes ``hi``). Sufficient decrease is Armijo's test,
    or, for a value within ``value_tol`` (rounding) of ``f0`` and ``lo``, Hager & Zhang's
    (2005, SIAM J. Optim. 16, 170) approximate-Wolfe slope test ``g.d <= (2 c1 - 1) g0.d``:
    near an optimum f changes by less than rounding and Armijo's test fails for every step."""
    armijo = (f <= f0 + c1 * a * dphi0) & (f < f_lo)
    approximate = ((f <= f0 + value_tol) & (f <= f_lo + value_tol)
                   & (dp <= (2 * c1 - 1) * dphi0) & (value_tol > 0))
    worse = ~finite | ~(armijo | approximate)
    curvature = ~worse & (dp.abs() <= -c2 * dphi0)
    swap = ~worse & ~curvature & (dp * (a_hi - a_lo) >= 0)
    return worse, curvature, swap


def strong_wolfe(
    objective: BatchedObjective,
    rows: torch.Tensor,
    x: torch.Tensor,
    f0: torch.Tensor,
    grad0: torch.Tensor,
    direction: torch.Tensor,
    step0: torch.Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    grow: float = 4.0,
    backoff: float = 0.2,
    value_tol: torch.Tensor | float = 0.0,
) -> LineSearchResult:
    """Find steps ``a`` with ``f(x + a d) <= f0 + c1 a g0.d`` and ``|g(x + a d).d| <= c2 |g0.d|``
    for every row, all rows' trial points evaluated in one ``objective`` call per round.

    Nocedal & Wright (2006), Algorithms 3.5 (bracketing) and 3.6 (zoom), written as one update
    rule per row: ``lo`` is the best step with sufficient decrease so far (0 at first), ``hi``
    the other end of a bracket (``inf`` until one is found). A trial that fails sufficient
    decrease, does not improve on ``lo``, or is not finite becomes ``hi``; one with the strong
    curvature condition is accepted; otherwise it becomes ``lo`` (and the old ``lo`` becomes
    ``hi`` where the slope says the minimiser lies between them). A row leaves the loop when
    accepted or when its bracket has shrunk to rounding; rows that left are not evaluated
    again. Rows that run out of evaluations without the curvature condition return ``lo`` if it
    is a decrease (``decreased`` but not ``wolfe``).

    Near an optimum f changes by less than rounding: then steps are judged by their slope
    (:func:`_classify`).

    Arguments:
        objective: see :data:`BatchedObjective`. rows: problem index of each row of ``x``.
        x, f0, grad0: the ``(k, D)`` points, values and gradients. direction: descent directions
            (``grad0 . direction < 0`` per row). step0: first trial step per row.
        c1, c2: sufficient-decrease and curvature constants (0 < c1 < c2 < 1).
        max_evals: trial evaluations per row. grow: step growth while bracketing.
        backoff: fraction of the way towards a non-finite trial step for the next trial.
        value_tol: per row, the change of f at rounding level (0: exact Wolfe tests only).
    """
    k = x.shape[0]
    dphi0 = (grad0 * direction).sum(-1)
    inf = torch.full_like(f0, torch.inf)
    lo = [torch.zeros_like(f0), f0.clone(), dphi0.clone()]
    hi = [inf.clone(), inf.clone(), inf.clone()]
    g_lo = grad0.clone()
    trial = step0.clone()
    searching = torch.ones(k, dtype=torch.bool, device=x.device)
    wolfe = torch.zeros_like(searching)
    counts = torch.zeros(3, k, dtype=torch.long, device=x.device)  # evals, NaN, inf
    eps = torch.finfo(x.dtype).eps
    value_tol = torch.as_tensor(value_tol, dtype=x.dtype, device=x.device).expand_as(f0)
    for _ in range(max_evals):
        idx = torch.nonzero(searching).flatten()
        if idx.numel() == 0:
            break
        a = trial[idx]
        f, g = (v.detach() for v in objective(x[idx] + a[:, None] * direction[idx], rows[idx]))
        nan = torch.isnan(f) | torch.isnan(g).any(-1)
        finite = torch.isfinite(f) & torch.isfinite(g).all(-1)
        counts[:, idx] += torch.stack([torch.ones_like(nan), nan, ~finite & ~nan]).long()
        dp = (g * direction[idx]).sum(-1)
        worse, curvature, swap = _classify(a, f, dp, finite, f0[idx], dphi0[idx], lo[0][idx],
                                           lo[1][idx], hi[0][idx], value_tol[idx], c1, c2)
        new_lo = ~worse & ~curvature
        new = (a, torch.where(finite, f, inf[idx]), torch.where(finite, dp, inf[idx]))
        for end_hi, end_lo, value in zip(hi, lo, new):
            end_hi[idx] = torch.where(worse, value, torch.where(swap, end_lo[idx], end_hi[idx]))
            end_lo[idx] = torch.where(new_lo | curvature, value, end_lo[idx])
        g_lo[idx] = torch.where((new_lo | curvature)[:, None], g, g_lo[idx])
        wolfe[idx] = curvature
        trial[idx] = _next_trial(*(v[idx] for v in lo), *(v[idx] for v in hi), grow=grow,
                                 backoff=backoff)
        # a bracket narrower than rounding of the step cannot be refined
        collapsed = torch.isfinite(hi[0][idx]) & (
            (hi[0][idx] - lo[0][idx]).abs() <= 10 * eps * torch.maximum(hi[0][idx], lo[0][idx]))
        searching[idx] = ~curvature & ~collapsed
    decreased = lo[0] > 0
    return LineSearchResult(step=lo[0], f=lo[1], grad=g_lo, wolfe=wolfe, decreased=decreased,
                            n_evals=counts[0], n_nan=counts[1], n_inf=counts[2])
