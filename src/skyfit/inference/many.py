"""Fits of many independent objects in one batched call: ``fit_map_many`` and ``laplace_many``.

Both take a :class:`~skyfit.inference.batched.BatchedDensity` (N objects, one model) and work on
all objects at once: one vectorised log-density call per optimiser trial, one ``vmap`` of the
Hessian for all objects. Every object has its own convergence, line search and termination.
"""

from __future__ import annotations

import time
import warnings

import torch

from ..errors import ConvergenceWarning, HessianWarning
from .batched import BatchedDensity, ObjectRows
from .many_results import ManyResult
from .transforms import UnconstrainedDensity

__all__ = ["fit_map_many", "laplace_many"]

# L-BFGS iterations of the first pass over all objects: the few objects still not converged
# after it (and the Newton polish) continue in a second pass of their own, so a handful of
# slow objects do not keep the whole batch iterating
FIRST_PASS_ITER = 200


def _starts(density: BatchedDensity, init) -> torch.Tensor:
    x0 = density.initial() if init is None else density.as_points(init)
    n, d = density.n_objects, density.dim
    if x0.shape[-2:] != (n, d) or x0.ndim not in (2, 3):
        raise ValueError(f"init must have shape ({n}, {d}) or (starts, {n}, {d}), got "
                         f"{tuple(x0.shape)}")
    return x0 if x0.ndim == 3 else x0[None]


def _objective(density: BatchedDensity, transform: UnconstrainedDensity,
               objects: torch.Tensor | None = None):
    # the optimiser's row r is start r // N of object r % N (or object objects[r])
    # -log p of the constrained point x(z) and its gradient in z: the optimiser moves freely
    # in z and never leaves the support (no Jacobian term: the mode in x is wanted)
    def objective(z: torch.Tensor, rows: torch.Tensor):
        which = rows % density.n_objects if objects is None else objects[rows]
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logp = density.log_prob_rows(transform.to_constrained(z), which)
            (g,) = torch.autograd.grad(logp.sum(), z)
        bad = ~torch.isfinite(logp)
        return -logp.detach(), torch.where(bad[:, None], torch.full_like(g, float("nan")), -g)

    return objective


def fit_map_many(density: BatchedDensity, init=None, gtol: float = 1e-6, max_iter: int = 1000,
                 polish: bool = True) -> ManyResult:
    """Maximise each object's ``log p`` with one batched L-BFGS (per-object line search and
    termination), then up to eight batched Newton steps with exact per-object Hessians.

    The first L-BFGS pass stops after 200 iterations; the objects not converged after it and
    the polish (usually a few percent) continue in a batch of their own for the rest of
    ``max_iter``, from where they are, and are polished again, so that the slowest objects
    do not keep every object's evaluation going.

    The optimiser works in the unconstrained coordinates of
    :class:`~skyfit.inference.UnconstrainedDensity` (no step leaves the support), scaled by the
    diagonal curvature at the start. Convergence is judged per object as in
    :func:`~skyfit.fit_map`: by the Newton decrement (< 1e-6) after the polish.

    Arguments:
        density: a :class:`~skyfit.inference.batched.BatchedDensity`, e.g.
            :class:`~skyfit.survey.ManyObjects`.
        init: starts ``(N, dim)``, or ``(S, N, dim)`` for S starts per object (the best
            converged one is kept); None: ``density.initial()``. Inside the support, off its
            finite bounds.

    Returns:
        :class:`~skyfit.inference.ManyResult` with ``x``, ``log_density``, ``converged`` and a
        per-object message.

    Example:
        >>> import torch
        >>> from skyfit.inference import BatchedDensity
        >>> class Normals(BatchedDensity):  # object n: x ~ N(mu_n, sigma_n^2)
        ...     names, lower, upper = ["x"], torch.tensor([-torch.inf]), torch.tensor([torch.inf])
        ...     def __init__(self, mu, sigma):
        ...         self.data = {"mu": mu, "sigma": sigma}
        ...     def object_log_prob(self, x, data):
        ...         return -0.5 * (((x - data["mu"]) / data["sigma"]) ** 2).sum()
        >>> d = Normals(torch.tensor([[-2.0], [3.0]]), torch.tensor([[0.5], [2.0]]))
        >>> result = fit_map_many(d, torch.zeros(2, 1))  # the modes are the means mu_n
        >>> [round(v, 6) for v in result.x.flatten().tolist()], result.converged.tolist()
        ([-2.0, 3.0], [True, True])
    """
    from .optimizers import minimize_batched

    t_start = time.perf_counter()
    starts = _starts(density, init)
    s, n, d = starts.shape
    transform = UnconstrainedDensity(ObjectRows(density, torch.arange(n, device=density.device)))
    runs = minimize_batched(_objective(density, transform),
                            transform.to_unconstrained(starts.reshape(s * n, d)),
                            takes_rows=True, scale="curvature", gtol=gtol,
                            max_iter=min(max_iter, FIRST_PASS_ITER) if polish else max_iter)
    x = transform.to_constrained(runs.x).reshape(s, n, d)
    logp = (-runs.value).reshape(s, n)
    ok = runs.converged.reshape(s, n)
    best = torch.where(ok, logp, logp - torch.inf).nan_to_num(nan=-torch.inf).argmax(0)
    best = torch.where(ok.any(0), best, logp.nan_to_num(nan=-torch.inf).argmax(0))
    pick = torch.arange(n, device=x.device)
    x, logp, converged = x[best, pick], logp[best, pick], ok[best, pick]
    messages = [runs.message(int(best[i]) * n + i) for i in range(n)]
    decrement = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)
    n_evals = runs.n_evals.reshape(s, n).sum(0)
    if polish:
        x, logp, decrement = _newton_polish_many(density, x)
        converged = decrement < 1e-6
        if max_iter > FIRST_PASS_ITER and not converged.all():
            late = (~converged).nonzero().flatten()
            rest = _second_pass(density, transform, x[late], late, gtol,
                                max_iter - FIRST_PASS_ITER)
            better = rest[1] >= logp[late]
            for field, value in zip((x, logp, decrement), rest[:3]):
                field[late[better]] = value[better]
            converged = decrement < 1e-6
            n_evals[late] += rest[4].n_evals
            for j, i in enumerate(late.tolist()):
                messages[i] = rest[4].message(j)
    result = ManyResult(names=list(density.names), x=x.detach(), log_density=logp.detach(),
                        converged=converged, messages=messages,
                        wall_time=time.perf_counter() - t_start)
    result.extra["newton_decrement"] = decrement
    result.extra["n_evals"] = n_evals
    _warn_not_converged(result, "fit_map_many")
    return result


def _second_pass(density: BatchedDensity, transform: UnconstrainedDensity, x: torch.Tensor,
                 objects: torch.Tensor, gtol: float, max_iter: int):
    """L-BFGS on the objects still not converged after the first pass and the polish, from
    where they are, then the polish again: ``(x, logp, decrement, converged, runs)``."""
    from .optimizers import minimize_batched

    runs = minimize_batched(_objective(density, transform, objects),
                            transform.to_unconstrained(x), takes_rows=True, scale="curvature",
                            gtol=gtol, max_iter=max_iter)
    x, logp, decrement = _newton_polish_many(density, transform.to_constrained(runs.x), objects)
    return x, logp, decrement, decrement < 1e-6, runs


def _newton_polish_many(density: BatchedDensity, x: torch.Tensor,
                        objects: torch.Tensor | None = None):
    """Up to eight safeguarded Newton steps per object (exact Hessians, one vmapped call for
    all); returns ``(x, logp, decrement)``, decrement NaN where ``-H`` is not positive
    definite. A step is halved up to three times until log p does not decrease. Row ``i`` of
    ``x`` is object ``objects[i]`` (default: object ``i``)."""
    x = x.detach().clone()
    rows = torch.arange(x.shape[0], device=x.device)
    which = rows if objects is None else objects
    logp, grad = density.value_and_grad_rows(x, which)
    decrement = torch.full_like(logp, float("nan"))
    active = torch.isfinite(logp)
    for _ in range(8):
        if not active.any():
            break
        idx = rows[active]
        L, info = torch.linalg.cholesky_ex(-density.hessian_rows(x[idx], which[idx]))
        pd = info == 0
        step = torch.cholesky_solve(grad[idx][..., None], L)[..., 0]
        dec = 0.5 * (grad[idx] * step).sum(-1)
        decrement[idx] = torch.where(pd, dec, torch.full_like(dec, float("nan")))
        moving = pd & (dec >= 1e-18)
        accepted = torch.zeros_like(moving)
        for t in (1.0, 0.5, 0.25, 0.125):
            trial = moving & ~accepted
            if not trial.any():
                break
            x_try = torch.clamp(x[idx] + t * step, density.lower, density.upper)
            lp_try, g_try = density.value_and_grad_rows(x_try, which[idx])
            take = trial & torch.isfinite(lp_try) & (lp_try >= logp[idx] - 1e-12)
            take_idx = idx[take]
            x[take_idx], logp[take_idx], grad[take_idx] = x_try[take], lp_try[take], g_try[take]
            accepted |= take
        keep = torch.zeros_like(active)
        keep[idx] = accepted
        active = keep
    return x, logp, decrement


def _warn_not_converged(result: ManyResult, who: str) -> None:
    bad = (~result.converged).nonzero().flatten().tolist()
    for i in bad:
        result.warnings[i].append(f"{who}: not converged ({result.messages[i]})")
    if bad:
        warnings.warn(ConvergenceWarning(
            f"{who}: {len(bad)} of {len(result.converged)} objects did not converge (first "
            f"{bad[:5]}); see the 'warnings' column of the table"), stacklevel=3)


def laplace_many(density: BatchedDensity, x, tol: float = 1e-12) -> ManyResult:
    """Per-object Laplace approximations at the modes ``x (N, dim)`` (e.g. a
    :func:`fit_map_many` result): ``covariance_n = (-H_n)^-1``, all Hessians in one vmapped
    call. As :func:`~skyfit.laplace`, a ``-H`` that is not positive definite (or has eigenvalues
    below ``tol`` times its largest, after Jacobi scaling) is repaired by ``|eigenvalue|`` with
    a floor; such objects get ``repaired=True`` and a warning in the table.

    Returns:
        a :class:`~skyfit.inference.ManyResult` (of ``x``'s result, if one is given, with the
        ``covariance`` and ``std`` filled).

    Example:
        >>> import torch
        >>> from skyfit.inference import BatchedDensity
        >>> class Normals(BatchedDensity):  # object n: x ~ N(0, sigma_n^2)
        ...     names, lower, upper = ["x"], torch.tensor([-torch.inf]), torch.tensor([torch.inf])
        ...     def __init__(self, sigma):
        ...         self.data = {"sigma": sigma}
        ...     def object_log_prob(self, x, data):
        ...         return -0.5 * ((x / data["sigma"]) ** 2).sum()
        >>> result = laplace_many(Normals(torch.tensor([[0.1], [3.0]])), torch.zeros(2, 1))
        >>> [round(v, 6) for v in result.std.flatten().tolist()]  # a Gaussian's sd, exactly
        [0.1, 3.0]
    """
    result = x if isinstance(x, ManyResult) else None
    x = density.as_points(result.x if result is not None else x)
    rows = torch.arange(x.shape[0], device=x.device)
    precision = -density.hessian_rows(x, rows)
    d = precision.diagonal(dim1=-2, dim2=-1)
    s = torch.where(d > 0, d.clamp(min=torch.finfo(d.dtype).tiny).rsqrt(), torch.ones_like(d))
    scaled = precision * s[:, :, None] * s[:, None, :]
    evals, evecs = torch.linalg.eigh(scaled)
    scale = evals.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(evals.dtype).tiny)
    _, info = torch.linalg.cholesky_ex(precision)
    repaired = (info != 0) | (evals <= tol * scale).any(-1)
    fixed = torch.maximum(evals.abs(), tol * scale)
    rebuilt = ((evecs * fixed[:, None, :]) @ evecs.transpose(-1, -2)) / (
        s[:, :, None] * s[:, None, :])
    precision = torch.where(repaired[:, None, None], rebuilt, precision)
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    if result is None:
        result = ManyResult(names=list(density.names), x=x.detach(),
                            log_density=density.log_prob_rows(x, rows).detach(),
                            converged=torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
    result.covariance = covariance
    result.extra["repaired"] = repaired
    bad = repaired.nonzero().flatten().tolist()
    for i in bad:
        result.warnings[i].append("laplace: -Hessian not positive definite, repaired; its "
                                  "uncertainties are not meaningful")
    if bad:
        warnings.warn(HessianWarning(
            f"laplace_many: -Hessian not positive definite for {len(bad)} objects (first "
            f"{bad[:5]}), repaired by |eigenvalue| with a floor; see the 'warnings' column"),
            stacklevel=2)
    return result
