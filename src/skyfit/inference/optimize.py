"""Maximum a posteriori fits: scipy optimisers driven by autograd gradients."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..errors import ConvergenceWarning, LogDensityError
from .approximations import MAPResult, units_of
from .compiled import compile as compile_density
from .density import LogDensity
from .initialization import resolve_point
from .laplace import log_density_hessian

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
    at_low = (x <= density.lower) & (g < 0)
    at_high = (x >= density.upper) & (g > 0)
    return ~(at_low | at_high)


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
            f"({type(exc).__name__}: {exc}); pass precondition=False to skip it"), stacklevel=3)
        return torch.ones_like(x0)
    curv = -(g.diagonal() - grad0) / (pts.diagonal() - x0)
    ok = torch.isfinite(curv) & (curv > 0)
    return torch.where(ok, curv.clamp(min=1e-300).rsqrt(), torch.ones_like(x0))


class _Objective:
    """``-log p`` and its gradient (and Hessian) in rescaled coordinates
    ``v = (x - x_ref) / scale``, counting gradient evaluations as work."""

    def __init__(self, density: LogDensity, x_ref: torch.Tensor, scale: torch.Tensor,
                 reject_outside: bool = False):
        self.density, self.x_ref, self.scale, self.n_evals = density, x_ref, scale, 0
        # trust-exact has no bounds of its own: a step leaving them is rejected (f = inf)
        self.reject_outside = reject_outside

    def _outside(self, v: np.ndarray) -> bool:
        d = self.density
        x = self.x_ref + self.scale * torch.as_tensor(v, dtype=d.dtype, device=d.device)
        return bool(((x < d.lower) | (x > d.upper)).any())

    def to_x(self, v: np.ndarray) -> torch.Tensor:
        # clamp: rescaled bounds can round to just outside the true ones
        d = self.density
        x = self.x_ref + self.scale * torch.as_tensor(v, dtype=d.dtype, device=d.device)
        return torch.clamp(x, d.lower, d.upper)

    def __call__(self, v: np.ndarray):
        if self.reject_outside and self._outside(v):
            return np.inf, np.zeros_like(v)
        self.n_evals += 1
        logp, grad = self.density.value_and_grad(self.to_x(v))
        f = -logp.item()
        if not math.isfinite(f):
            return np.inf, np.zeros_like(v)
        return f, -(grad * self.scale).cpu().numpy().astype(np.float64)

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
        kwargs["bounds"] = [(a if math.isfinite(a) else None, b if math.isfinite(b) else None)
                            for a, b in zip(lo, hi)]
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
    compile: bool = False,
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
        compile: evaluate values and gradients through :func:`~skyfit.inference.compile`
            (``torch.compile``; the Hessians of the preconditioning and the polish stay eager).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -((x - 3.0) ** 2).sum(-1), 2)
        >>> res = fit_map(d, torch.zeros(2))
        >>> [round(v, 6) for v in res.x.tolist()], res.converged
        ([3.0, 3.0], True)
    """
    from scipy.optimize import minimize  # kept out of `import skyfit`

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t_start = time.perf_counter()
    if compile:
        density = compile_density(density)
    x0 = resolve_point(density, x0)
    _, grad0 = check_finite_start(density, x0)
    # Diagonal preconditioning: optimise v = (x - x0) / scale with scale ~ 1 / sqrt(curvature).
    # Parameters of very different sizes (positions in arcsec, fluxes in thousands) otherwise
    # cost quasi-Newton methods many iterations. Unit scales where the curvature is not negative.
    scale = _diagonal_scales(density, x0, grad0) if precondition else torch.ones_like(x0)
    objective = _Objective(density, x0.clone(), scale, reject_outside=method == "trust-exact")
    objective.n_evals = 1 + (x0.shape[0] if precondition else 0)  # dim gradients of work
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
    free = _free(x, grad, density)
    grad_norm = float(grad[free].abs().max()) if free.any() else 0.0
    if math.isfinite(decrement):
        converged = decrement < 1e-6
    else:
        converged = grad_norm < max(gtol, 1e-8) * 1e3
    flat = _exactly_flat(density, x, grad, free)
    if flat:
        converged = False
        warnings.warn(ConvergenceWarning(
            f"{method}: the log-density is exactly flat in {flat} (gradient and curvature exactly "
            f"0): the model most likely underflowed (e.g. exponentials of MJD-sized times; "
            f"subtract a reference epoch) or does not depend on them. A zero gradient from "
            f"underflow is not convergence."), stacklevel=2)
    elif not converged:
        warnings.warn(ConvergenceWarning(
            f"{method} stopped without converging (|grad|max={grad_norm:.3g}, Newton decrement="
            f"{decrement:.3g}, scipy: {res.message}). Try another start or method."), stacklevel=2)
    return MAPResult(x=x.detach(), names=list(density.names), log_density=float(logp),
                     units=units_of(density),
                     n_evals=n_evals, grad_norm=grad_norm, newton_decrement=decrement,
                     converged=bool(converged), message=str(res.message),
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
            H = log_density_hessian(density, x)[free][:, free]
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
            x_try = torch.clamp(x + t * step, density.lower, density.upper)
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
