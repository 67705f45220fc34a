"""fit_map from many starts: draw them, run them as one batched L-BFGS, polish the best; the
retries of an unconverged fit; the best of several fits (fit_map's ``candidates``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .approximations import MAPResult
from .density import LogDensity
from .optimizers import multistart
from .transforms import UnconstrainedDensity

__all__ = ["draw_starts", "best_of_starts", "best_of_fits", "refine_best_and_start",
           "fit_with_retries"]

# The batched phase only picks the start that fit_map then refines as a single fit (L-BFGS-B
# and the Newton polish), so it stops at a scaled gradient of 1e-4 (standard deviations of the
# start's curvature) or a relative change of f of 1e-11, not at machine precision (looser, 1e-9,
# ended rows of one optimum 0.02 apart in log p: reported as distinct optima); and a row
# still running after 200 iterations (a start far off, e.g. a source placed outside the image,
# running away) stops there: the batch runs until its slowest row stops, each iteration a full
# evaluation of that row, so one runaway start cost more than all the others together.
SEED_PHASE = dict(gtol=1e-4, ftol=1e-11, max_iter=200)


def draw_starts(density: LogDensity, x0: torch.Tensor, n: int, scale: float | None,
                seed: int = 0) -> torch.Tensor:
    """``n`` starts ``(n, dim)`` strictly inside the support; row 0 is ``x0`` (nudged off a bound).

    ``scale=None`` draws from the broad default prior: a bounded entry uniformly in its range
    (a periodic one anywhere on the circle), a one-sided or open entry ``N(0, 1)`` around ``x0``
    in the unconstrained space (a factor ``e`` for a positive parameter). A number ``scale``
    draws every entry ``N(0, scale^2)`` around ``x0`` in the unconstrained space instead.
    """
    g = torch.Generator(device=density.device).manual_seed(seed)
    kw = dict(dtype=density.dtype, device=density.device)
    u = UnconstrainedDensity(density)
    lo, hi = density.lower, density.upper
    width = torch.where(torch.isfinite(hi - lo), hi - lo, torch.ones_like(lo))
    # a bound maps to infinity in the unconstrained space: start a hair inside
    x0 = torch.minimum(torch.maximum(x0, lo + 1e-9 * width), hi - 1e-9 * width)
    z0 = u.to_unconstrained(x0)
    noise = torch.randn(n, density.dim, generator=g, **kw)
    around = u.to_constrained(z0 + (1.0 if scale is None else float(scale)) * noise)
    if scale is None:
        uniform = lo + width * (1e-6 + (1 - 2e-6) * torch.rand(n, density.dim, generator=g, **kw))
        bounded = torch.isfinite(lo) & torch.isfinite(hi)
        around = torch.where(bounded, uniform, around)
    starts = torch.minimum(torch.maximum(around, lo + 1e-9 * width), hi - 1e-9 * width)
    starts[0] = x0
    return starts


def best_of_starts(density: LogDensity, x0: torch.Tensor, n: int, scale: float | None,
                   seed: int) -> tuple[torch.Tensor, list[tuple[float, int]], int]:
    """Maximise from ``n`` starts in one batched L-BFGS run (:func:`multistart`, through the
    unconstrained transform, no Jacobian). Returns the best final point, the distinct optima as
    ``(log p, count)`` best first, and the log-density evaluations spent. The best point is the
    highest log p of ANY row, converged or stopped at the iteration cap: fit_map refines it, and
    a row still climbing towards the global mode is worth more than a converged local one."""
    starts = draw_starts(density, x0, n, scale, seed)
    runs = multistart(density, starts, scale="curvature", **SEED_PHASE)
    optima = [(o.log_density, o.count) for o in runs.optima]
    finite = torch.where(torch.isfinite(runs.log_density), runs.log_density, -torch.inf)
    best = int(finite.argmax())
    return runs.x[best].detach().clone(), optima, int(runs.runs.n_evals.sum())


def best_of_fits(fits: list[Callable[[], MAPResult]]) -> MAPResult:
    """Run every fit of ``fits`` (callables returning a :class:`MAPResult`) and return the one of
    highest log p, with only its warnings shown and the work of all counted."""
    results = []
    for fit in fits:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append((fit(), caught))
    best, caught = max(results, key=lambda result_caught: result_caught[0].log_density)
    _show(caught)
    best.n_evals = sum(result.n_evals for result, _ in results)
    return best


def refine_best_and_start(fit: Callable, y_best: torch.Tensor, y0: torch.Tensor) -> MAPResult:
    """fit_map(starts=N)'s refinement: ``fit(y_best, True)`` from the batch's best end point and
    ``fit(y0, False)``, the start's own single-start fit (skipped if it is the same point); the
    result of higher log p is returned with only its warnings, the work of both counted.

    The capped batched phase can leave its best row in a degenerate corner where no refinement
    converges (a quad lens from broad starts: the source at q ~ 0.03 with the shear at
    ``|gamma| ~ 1``, where L-BFGS stops on "relative reduction" and every Newton step of the
    polish is rejected: decrement 34, log p 1239 against 1872 at the mode), or in a converged
    local optimum below the one the start reaches alone: with the start's own fit, N starts
    never end lower than one start."""
    fits = [lambda: fit(y_best, True)]
    if not torch.equal(y0, y_best):
        fits.append(lambda: fit(y0, False))
    return best_of_fits(fits)


def fit_with_retries(fit_from: Callable[[torch.Tensor], MAPResult], density: LogDensity,
                     x0: torch.Tensor, retries: int, seed: int) -> MAPResult:
    """``fit_from(x0)``; if it does not converge, up to ``retries`` more from starts drawn
    ``N(0, 0.3^2)`` around ``x0`` in the unconstrained space, until one converges. The best
    result is returned (work of all attempts counted); only its warnings are shown. A pinned
    end is retried too: on image fits from broad starts it is mostly a wrong basin (a quad lens
    with the source's Sersic index run to its bound of 10 at log p -220 against 1872 at the
    mode), which a start nearby leaves."""
    best, best_warnings, n_evals = None, [], 0
    starts = None
    for attempt in range(1 + retries):
        if attempt == 1:
            starts = draw_starts(density, x0, 1 + retries, 0.3, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_from(x0 if starts is None else starts[attempt])
        n_evals += result.n_evals
        if best is None or result.log_density > best.log_density:
            best, best_warnings = result, caught
        if best.converged:
            break
    _show(best_warnings)
    best.n_evals = n_evals
    return best


def _show(caught: list) -> None:
    """Warnings recorded during the kept fit, shown now (those of discarded fits are not)."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
