"""Maximum a posteriori fits: scipy optimisers driven by autograd gradients."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..errors import ConvergenceWarning, LogDensityError, NoFreeParameterError
from .approximations import MAPResult, units_of
from .compiled import compile as compile_density
from .density import LogDensity
from .ellipticity import EllipticityCoordinates, ellipse_pairs
from .initialization import resolve_point
from .laplace import log_density_hessian
from .multistart_fit import best_of_fits, best_of_starts, fit_with_retries, refine_best_and_start
from .nonfinite import NonfiniteTally
from .verdict import convergence_verdict, pinned_mask

__all__ = ["fit_map", "MAPResult"]

METHODS = ("L-BFGS-B", "BFGS", "trust-exact")


def check_finite_start(density: LogDensity, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and its gradient at ``x0``; :class:`LogDensityError` naming parameters if either
    is not finite."""
    logp, grad = density.value_and_grad(x0)
    if not torch.isfinite(logp).all() or not torch.isfinite(grad).all():
        values = ", ".join(f"{n}={v:g}" for n, v in zip(density.names, x0.tolist()))
        bad_g = [n for n, g in zip(density.names, grad.tolist()) if not math.isfinite(g)]
        raise LogDensityError(
            f"log-density is {logp.item() if logp.ndim == 0 else logp} at the start point "
            f"({values})" + (f"; non-finite gradient for {bad_g}" if bad_g else "")
            + ". Start inside the support where the model is defined.")
    return logp, grad


def _free(x: torch.Tensor, g: torch.Tensor, density: LogDensity) -> torch.Tensor:
    # entries pinned at a bound with the gradient pushing outward are not free
    return ~pinned_mask(x, g, density)


def _wrap_or_clamp(x: torch.Tensor, density: LogDensity) -> torch.Tensor:
    """Periodic entries wrapped into ``[lower, upper)``, the others clamped to the bounds."""
    clamped = torch.clamp(x, density.lower, density.upper)
    periodic = density.periodic
    if not bool(periodic.any()):
        return clamped
    lo = torch.where(periodic, density.lower, torch.zeros_like(x))
    period = torch.where(periodic, density.upper - density.lower, torch.ones_like(x))
    return torch.where(periodic, lo + torch.remainder(x - lo, period), clamped)


def _exactly_flat(density: LogDensity, x: torch.Tensor, grad: torch.Tensor,
                  free: torch.Tensor) -> list[str]:
    """Names of free parameters whose gradient and Hessian diagonal are exactly 0 at ``x``: the
    log-density does not change along them at all (underflow, or a parameter the model ignores),
    which a stopping rule on the gradient would take for convergence."""
    candidates = free & (grad == 0)
    if not candidates.any():
        return []
    try:
        curvature = log_density_hessian(density, x).diagonal()
    except LogDensityError:
        return []
    flat = candidates & (curvature == 0)
    return [n for n, f in zip(density.names, flat.tolist()) if f]


def _diagonal_scales(density: LogDensity, x0: torch.Tensor, grad0: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(-d2 log p / dx_i2)`` at ``x0`` from forward differences of the gradient
    (``grad0`` at ``x0``; the ``dim`` shifted points in one batched call, each stepping into the
    support); 1 where the curvature is non-finite or not negative. A model that cannot be
    evaluated on a batch gets unit scales and a warning saying why."""
    h = 1e-4 * torch.clamp(x0.abs(), min=1e-3)
    h = torch.where(x0 + h <= density.upper, h, -h)
    pts = (x0 + torch.diag(h)).clamp(density.lower, density.upper)
    try:
        _, g = density.value_and_grad(pts)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        # preconditioning is an optimisation: the fit goes on unpreconditioned, but says so
        warnings.warn(ConvergenceWarning(
            f"fit_map: no preconditioning, the log-density failed on a batch of points "
            f"({type(exc).__name__}: {exc}); pass precondition=False to skip it"), stacklevel=5)
        return torch.ones_like(x0)
    curv = -(g.diagonal() - grad0) / (pts.diagonal() - x0)
    ok = torch.isfinite(curv) & (curv > 0)
    return torch.where(ok, curv.clamp(min=1e-300).rsqrt(), torch.ones_like(x0))


class _Objective:
    """``-log p`` and its gradient (and Hessian) in rescaled coordinates
    ``v = (x - x_ref) / scale``, counting gradient evaluations as work and the points where
    the log-density or its gradient was not finite (:attr:`nonfinite`)."""

    def __init__(self, density: LogDensity, x_ref: torch.Tensor, scale: torch.Tensor,
                 reject_outside: bool = False):
        self.density, self.x_ref, self.scale, self.n_evals = density, x_ref, scale, 0
        self.nonfinite = NonfiniteTally(density.names)
        self.best_f = math.inf
        self.at_start = None  # (f, gradient) at v = 0, known before scipy's first call
        # trust-exact has no bounds of its own: a step leaving them is rejected (f = inf)
        self.reject_outside = reject_outside

    def _outside(self, v: np.ndarray) -> bool:
        d = self.density
        x = self.x_ref + self.scale * torch.as_tensor(v, dtype=d.dtype, device=d.device)
        outside = (x < d.lower) | (x > d.upper)
        return bool((outside & ~d.periodic).any())

    def to_x(self, v: np.ndarray) -> torch.Tensor:
        # clamp: rescaled bounds can round to just outside the true ones; periodic entries are
        # optimised unbounded and wrapped, so the optimiser sees no wall at their bounds
        d = self.density
        x = self.x_ref + self.scale * torch.as_tensor(v, dtype=d.dtype, device=d.device)
        return _wrap_or_clamp(x, d)

    def __call__(self, v: np.ndarray):
        if self.reject_outside and self._outside(v):
            return np.inf, np.zeros_like(v)
        if self.at_start is not None and not v.any():  # scipy starts where the fit checked
            self.best_f = min(self.best_f, self.at_start[0])
            return self.at_start[0], self.at_start[1].copy()
        self.n_evals += 1
        x = self.to_x(v)
        logp, grad = self.density.value_and_grad(x)
        f = -logp.item()
        if not (math.isfinite(f) and bool(torch.isfinite(grad).all())):
            if not f == math.inf:  # -inf outside the support is a wall, not a failure
                self.nonfinite.add(x[None])
            return self._wall(), np.zeros_like(v)
        self.best_f = min(self.best_f, f)
        return f, -(grad * self.scale).cpu().numpy().astype(np.float64)

    def _wall(self) -> float:
        # scipy's L-BFGS-B ends its run at the first infinite f of a line search ("relative
        # reduction"), far from the optimum; a finite value far above every f seen makes it
        # backtrack instead. trust-exact rejects an infinite trial point and shrinks its radius.
        if self.reject_outside or not math.isfinite(self.best_f):
            return np.inf
        return self.best_f + 1e6 * (1.0 + abs(self.best_f))

    def hessian(self, v: np.ndarray) -> np.ndarray:
        # trust-exact evaluates the Hessian at a trial point before it judges the step; a trial
        # point outside the bounds, or where log p is not finite, gets f = inf from __call__ and
        # is rejected (the radius shrinks), so any finite matrix will do there
        if self._outside(v):
            return np.eye(v.shape[0])
        self.n_evals += self.x_ref.shape[0]
        try:
            H = log_density_hessian(self.density, self.to_x(v))
        except LogDensityError:
            return np.eye(v.shape[0])
        s = self.scale
        return -(H * s[:, None] * s[None, :]).cpu().numpy()


def _scipy_options(density, method, maxiter, gtol, polish, x_ref, scale) -> dict:
    """``minimize`` arguments: L-BFGS-B gets the rescaled box bounds (``None`` where open)."""
    kwargs = dict(method=method, jac=True, options=dict(maxiter=maxiter, gtol=gtol))
    if method == "L-BFGS-B":
        lo = ((density.lower - x_ref) / scale).tolist()
        hi = ((density.upper - x_ref) / scale).tolist()
        periodic = density.periodic.tolist()
        kwargs["bounds"] = [(None, None) if wraps else
                            (a if math.isfinite(a) else None, b if math.isfinite(b) else None)
                            for a, b, wraps in zip(lo, hi, periodic)]
        # with the Newton polish after it, L-BFGS only needs to get close
        kwargs["options"].update(ftol=1e-15 if not polish else 1e-12, maxcor=30)
    return kwargs


def fit_map(
    density: LogDensity,
    x0=None,
    method: str = "L-BFGS-B",
    maxiter: int = 2000,
    gtol: float = 1e-6,
    polish: bool = True,
    precondition: bool = True,
    starts: int = 1,
    start_scale: float | None = None,
    seed: int = 0,
    coordinates: str = "auto",
    retries: int = 4,
    compile: bool = False,
    candidates: Sequence = (),
) -> MAPResult:
    """Maximise ``log p`` with scipy ``minimize`` and exact autograd gradients (``jac=True``).

    Methods: ``"L-BFGS-B"`` (default; box bounds from the density's ``lower``/``upper``, i.e.
    each Param's ``valid``), ``"BFGS"`` (unbounded problems), ``"trust-exact"`` (uses the exact
    Hessian; best for small, stiff problems). With ``precondition=True`` (default) the
    optimiser works in parameters rescaled by the diagonal curvature at the start. With
    ``polish=True`` (default) up to eight safeguarded Newton steps with the exact Hessian follow,
    which take quasi-Newton results to full precision; convergence is then judged by the Newton
    decrement.

    Arguments:
        density: any :class:`~skyfit.inference.LogDensity` (e.g. a :class:`~skyfit.Posterior`).
        x0: the start, resolved by :func:`~skyfit.inference.resolve_point`: ``None``
            (``density.initial()``), a ``(dim,)`` vector, a ``{name: value}`` dict, a previous
            result or an ``init_to_*`` strategy; must be inside the bounds.
        starts: with ``N > 1``, ``N`` starts (``x0`` and ``N - 1`` drawn by
            :func:`~skyfit.inference.multistart_fit.draw_starts`: from the broad default prior,
            or with ``start_scale`` a Normal of that width around ``x0`` in the unconstrained
            space; ``seed`` seeds them) run as ONE batched L-BFGS optimisation
            (:func:`~skyfit.inference.multistart`, a vmapped value-and-gradient per line-search
            trial); the best end point (highest log p, converged or not) is then refined as
            a single start, ``x0``'s own single-start fit too (the higher log p is kept: N
            starts never end lower than one), and the distinct optima among the converged
            starts are reported in ``result.optima`` as ``(log p, count)``. Use it where one
            start can end in a local optimum, at several times the work of one fit.
        compile: evaluate values and gradients through :func:`~skyfit.inference.compile`
            (``torch.compile``; the Hessians of the preconditioning and the polish stay eager).
        candidates: further starts (anything ``x0`` takes, e.g. a data-driven strategy such as
            :func:`~skyfit.lens_start.init_to_lensed_image`), each fitted like ``x0``;
            the result of highest log p is returned. The recommended call for a strong-lens
            image from an uncertain start: ``candidates=[init_to_lensed_image(sim, image)]``.

    Periodic parameters (``density.periodic``, e.g. angles) are optimised unbounded and
    wrapped: the optimiser sees no wall at their bounds, and results are in the canonical range.

    Ellipses are fitted in ``(e1, e2)`` by default (``coordinates="auto"``): every
    ``<prefix>.q`` / ``<prefix>.phi`` pair (axis ratio in ``(lo, 1]``, angle periodic over
    ``[0, pi)``: Sersic, Gaussian sources, the SIE lens) is optimised as
    ``e1 = (1-q)/(1+q) cos 2phi``, ``e2 = (1-q)/(1+q) sin 2phi`` (lenstronomy's convention), so
    ``q -> 1`` and an axis swap are smooth instead of a wall at ``q = 1``. This changes only the
    optimiser's coordinates (no Jacobian): the optimum is the same point, returned as
    ``(q, phi)``. ``coordinates="native"`` optimises ``(q, phi)`` as given.

    A single-start fit that does not converge (it stalled, or ended pinned at a bound with the
    gradient pushing out) is retried from up to ``retries`` starts drawn ``N(0, 0.3^2)`` around
    ``x0`` in the unconstrained space (seeded by ``seed``), until one converges; the best is
    returned and only its warnings are shown. A fit that converges at once costs nothing extra;
    one whose optimum truly lies on a bound costs ``1 + retries`` fits and is reported pinned.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -((x - 3.0) ** 2).sum(-1), 2)
        >>> res = fit_map(d, torch.zeros(2))
        >>> [round(v, 6) for v in res.x.tolist()], res.converged
        ([3.0, 3.0], True)
    """
    _check_arguments(density, method, starts, coordinates)
    t_start = time.perf_counter()
    if compile:
        density = compile_density(density)
    x0 = resolve_point(density, x0)
    check_finite_start(density, x0)
    pairs = ellipse_pairs(density) if coordinates == "auto" else []
    target = EllipticityCoordinates(density, pairs) if pairs else density
    y0 = target.to_y(x0) if pairs else x0
    settings = (method, maxiter, gtol, polish, precondition)
    others = [resolve_point(density, c) for c in candidates]
    for x in others:
        check_finite_start(density, x)  # refused before any fit runs, like x0
    others = [target.to_y(x) for x in others] if pairs else others

    def fit(y, tries=retries):
        return fit_with_retries(lambda z: _fit_from(target, z, *settings), target, y, tries, seed)
    optima, n_multistart, first = [], 0, lambda: fit(y0)
    if int(starts) > 1:
        y_best, optima, n_multistart = best_of_starts(target, y0, int(starts), start_scale, seed)
        first = lambda: refine_best_and_start(  # noqa: E731
            lambda y, best_row: fit(y, 0 if best_row else retries), y_best, y0)
    result = best_of_fits([first] + [lambda y=y: fit(y) for y in others])
    if pairs:  # back to the density's own (q, phi)
        result.x = target.to_x(result.x).detach()
        result.names, result.density = list(density.names), density
        result.units = units_of(density)
    result.n_evals += n_multistart
    result.optima = optima
    result.wall_time = time.perf_counter() - t_start
    return result


def _check_arguments(density: LogDensity, method: str, starts: int, coordinates: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if density.dim == 0:
        raise NoFreeParameterError("fit_map: the log-density has no free parameter to fit")
    if int(starts) < 1:
        raise ValueError(f"starts must be at least 1, got {starts}")
    if coordinates not in ("auto", "native"):
        raise ValueError(f"coordinates must be 'auto' or 'native', got {coordinates!r}")


def _fit_from(density: LogDensity, x0: torch.Tensor, method: str, maxiter: int, gtol: float,
              polish: bool, precondition: bool) -> MAPResult:
    """One scipy run from ``x0``, the Newton polish, and the verdict."""
    from scipy.optimize import minimize  # kept out of `import skyfit`

    t_start = time.perf_counter()
    logp0, grad0 = check_finite_start(density, x0)
    # Diagonal preconditioning: optimise v = (x - x0) / scale with scale ~ 1 / sqrt(curvature).
    # Parameters of very different sizes (positions in arcsec, fluxes in thousands) otherwise
    # cost quasi-Newton methods many iterations. Unit scales where the curvature is not negative.
    scale = _diagonal_scales(density, x0, grad0) if precondition else torch.ones_like(x0)
    objective = _Objective(density, x0.clone(), scale, reject_outside=method == "trust-exact")
    objective.n_evals = 1 + (x0.shape[0] if precondition else 0)  # dim gradients of work
    objective.at_start = (-logp0.item(), -(grad0 * scale).cpu().numpy().astype(np.float64))
    kwargs = _scipy_options(density, method, maxiter, gtol, polish, objective.x_ref, scale)
    if method == "trust-exact":
        kwargs["hess"] = objective.hessian
    # scipy's optimisers call BLAS on dim-length vectors, where threads only hurt: OpenBLAS's
    # idle threads spin and take the cores torch's threads need for the log-density
    with threadpool_limits(limits=1, user_api="blas"):
        res = minimize(objective, np.zeros(x0.shape[0]), **kwargs)
    x = objective.to_x(res.x)
    logp, grad = density.value_and_grad(x)
    n_evals = objective.n_evals + 1

    decrement = float("nan")
    if polish:
        x, logp, grad, decrement, n_polish = _newton_polish(density, x, logp, grad)
        n_evals += n_polish
    verdict = convergence_verdict(density, x, logp, grad, scale, decrement, gtol)
    flat = _exactly_flat(density, x, grad, ~pinned_mask(x, grad, density))
    if flat and verdict.converged:
        verdict = verdict._replace(converged=False, reason=(
            f"the log-density is exactly flat in {flat} (gradient and curvature exactly 0): the "
            "model most likely underflowed (e.g. exponentials of MJD-sized times; subtract a "
            "reference epoch) or does not depend on them. A zero gradient from underflow is "
            "not convergence"))
    if not verdict.converged:
        warnings.warn(ConvergenceWarning(
            f"{method} stopped without converging: {verdict.reason} (scipy: {res.message})."),
            stacklevel=4)
    objective.nonfinite.warn("fit_map", objective.n_evals, stacklevel=5,
                             bounds=(density.lower, density.upper))
    return MAPResult(x=x.detach(), names=list(density.names), log_density=float(logp),
                     n_evals=n_evals, grad_norm=verdict.grad_norm, newton_decrement=decrement,
                     converged=verdict.converged, message=str(res.message),
                     pinned=verdict.pinned, reason=verdict.reason, units=units_of(density),
                     wall_time=time.perf_counter() - t_start, density=density)


def _newton_polish(density: LogDensity, x, logp, grad):
    """Up to eight safeguarded Newton steps from ``x`` with an exact Hessian of the free
    entries, recomputed only if a step fails: near the mode the Hessian barely changes, and it
    costs ``dim`` gradient evaluations. Returns ``(x, logp, grad, decrement, n_evals)``; the
    decrement is NaN if ``-H`` is not positive definite."""
    decrement, n_evals = float("nan"), 0
    L, free_at_H, fresh = None, None, False
    for _ in range(8):
        free = _free(x, grad, density)
        if L is None or not torch.equal(free, free_at_H):
            try:
                H = log_density_hessian(density, x)[free][:, free]
            except LogDensityError:  # e.g. a 0/0 curvature exactly at a bound: no Newton step
                decrement = float("nan")
                break
            n_evals += x.shape[0]  # a Hessian is dim gradient evaluations of work
            L, info = torch.linalg.cholesky_ex(-H)
            free_at_H, fresh = free, True
            if int(info) != 0:
                decrement = float("nan")
                break
        step_free = torch.cholesky_solve(grad[free][:, None], L)[:, 0]
        decrement = 0.5 * float(grad[free] @ step_free)
        if decrement < 1e-18:
            break
        step = torch.zeros_like(x)
        step[free] = step_free
        accepted = False
        for t in (1.0, 0.5, 0.25, 0.125):
            x_try = _wrap_or_clamp(x + t * step, density)
            logp_try, grad_try = density.value_and_grad(x_try)
            n_evals += 1
            if torch.isfinite(logp_try) and logp_try >= logp - 1e-12:
                x, logp, grad, accepted = x_try, logp_try, grad_try, True
                break
        if accepted:
            fresh = False
        elif fresh:
            break
        else:
            L = None  # retry with an exact Hessian at this point
    return x, logp, grad, decrement, n_evals
