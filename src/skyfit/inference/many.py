"""Fits of many independent objects in one batched call: ``fit_map_many`` and ``laplace_many``.

Both take a :class:`~skyfit.inference.batched.BatchedDensity` (N objects, one model) and work on
all objects at once: one vectorised log-density call per optimiser trial, one ``vmap`` of the
Hessian for all objects. Every object has its own convergence, line search and termination.
"""

from __future__ import annotations

import time
import warnings

import torch

from ..errors import HessianWarning
from .batched import BatchedDensity, ObjectRows
from .many_newton import (
    gradient_for,
    in_threads,
    lbfgs_objective,
    newton_objective,
    value_grad_hessian_rows,
)
from .many_results import ManyResult, warn_not_converged, warn_not_finite
from .optimizers.lbfgs import Status
from .optimizers.newton import newton_decrement
from .transforms import UnconstrainedDensity

__all__ = ["fit_map_many", "laplace_many"]

# L-BFGS iterations of the first pass over all objects: the few objects still not converged
# after it (and the Newton polish) continue in a second pass of their own, so a handful of
# slow objects do not keep the whole batch iterating
FIRST_PASS_ITER = 200
# up to this many parameters per object the default is damped Newton with exact Hessians
# (a d x d Hessian per object costs about d gradients); above it, L-BFGS
NEWTON_MAX_DIM = 30
# default iterations per object (max_iter=None) for Newton: from data-driven starts nearly
# all objects converge in 10-30; the few that do not by 100 sit where the quadratic model keeps
# failing (each further iteration costs the whole call's fixed overhead for a few objects)
NEWTON_MAX_ITER = 100
LBFGS_MAX_ITER = 1000
# the Hessian by differences (dim + 1 gradients) every second iteration, a BFGS update of it in
# between (one gradient): 20% more iterations than a fresh Hessian each time, about 1.5 times
# fewer gradients (measured on the Villar survey night)
NEWTON_REFRESH = 2
# ... and at every iteration for an object still running after 30 (the slow ones, where the
# carried-on model costs more iterations than the Hessians it saves): on two simulated nights
# (2,000 and 5,000 objects) 0.25 and 0.24 percentage points more objects converged (0.9855 ->
# 0.9880, 0.9872 -> 0.9896) for 5% more gradient points
NEWTON_REFRESH_EACH_AFTER = 30
# for compile=None: the gradient calls a fit typically makes (Newton: iterations x (dim + 1)
# points per object in one call; L-BFGS: evaluations per object)
NEWTON_TYPICAL_ITER = 20
LBFGS_TYPICAL_EVALS = 130

NEWTON_MESSAGES = {
    Status.CONVERGED_GTOL: "converged: Newton decrement {decrement:.3g} after {n_iter} "
                           "iterations",
    Status.CONVERGED_FTOL: "converged: steps change log p by rounding only, Newton decrement "
                           "{decrement:.3g} ({n_iter} iterations)",
    Status.MAX_ITER: "not converged: {n_iter} iterations (max_iter), Newton decrement "
                     "{decrement:.3g}",
    Status.STALLED: "not converged: no damped Newton step increased log p (Newton decrement "
                    "{decrement:.3g}): a wall, a kink, the edge of a NaN/-inf region, or a "
                    "wrong gradient?",
    Status.NONFINITE_START: "not started: log p, its gradient or Hessian is NaN or infinite "
                            "at the start (a NaN start? masked rows with zero errors or NaN "
                            "data: torch.where passes on their NaN gradients)",
}


def _starts(density: BatchedDensity, init) -> torch.Tensor:
    x0 = density.initial() if init is None else density.as_points(init)
    n, d = density.n_objects, density.dim
    if x0.shape[-2:] != (n, d) or x0.ndim not in (2, 3):
        raise ValueError(f"init must have shape ({n}, {d}) or (starts, {n}, {d}), got "
                         f"{tuple(x0.shape)}")
    # a start on a finite bound (np.clip to the bounds) is +-inf, or clamped to 1e-16 of it, in
    # the unconstrained space: no Newton step moves it, and the object ended "not converged: a
    # wall, a kink ...". Refused here, with the objects and parameters named
    on = ((x0 <= density.lower) | (x0 >= density.upper)).reshape(-1, n, d).any(0)
    if bool(on.any()):
        objects, params = on.any(1).nonzero().flatten(), on.any(0).nonzero().flatten()
        raise ValueError(f"starts of objects {objects[:10].tolist()} ({len(objects)} in all) are "
                         f"on or outside the bounds of {[density.names[j] for j in params]}: "
                         "start inside them (clip to a small fraction of the range inside)")
    return x0 if x0.ndim == 3 else x0[None]


def _check_dtype(density: BatchedDensity, x: torch.Tensor) -> None:
    """Points take the dtype of the bounds; a log-density that computes in another one (data
    of another dtype) would mix the two in the solves. Refused here, with both named."""
    rows = torch.zeros(1, dtype=torch.long, device=x.device)
    logp = density.log_prob_rows(x.reshape(-1, density.dim)[:1], rows)
    if logp.dtype != density.dtype:
        data = {k: str(v.dtype).removeprefix("torch.") for k, v in density.data.items()
                if v.is_floating_point()}
        raise TypeError(
            f"{type(density).__name__}'s points have the dtype of its bounds (lower/upper: "
            f"{str(density.dtype).removeprefix('torch.')}) but its log-density is "
            f"{str(logp.dtype).removeprefix('torch.')} (data dtypes {data}): give the bounds "
            "and the data one dtype (float64 for inference)")


def fit_map_many(density: BatchedDensity, init=None, gtol: float = 1e-6,
                 max_iter: int | None = None,
                 polish: bool = True, method: str | None = None,
                 compile: bool | None = None) -> ManyResult:  # noqa: A002 (sample_nuts' name)
    """Maximise each object's ``log p``, all objects in one batch with per-object steps,
    acceptance and termination: damped Newton steps with per-object Hessians
    (``method="newton"``, the default up to 30 parameters), or a batched L-BFGS and up to eight
    Newton steps of polish (``"lbfgs"``, the default above).

    Newton: per iteration, one vmapped gradient call for all running objects at their points
    and, every second iteration, ``dim`` shifted points (the Hessian by forward differences of
    the exact gradient; a BFGS update of it in between), a Levenberg-Marquardt trust region per
    object
    (:func:`~skyfit.inference.optimizers.minimize_newton`); from data-driven starts most
    objects converge in 10-30 iterations, where L-BFGS needs about a hundred evaluations.
    On the CPU with several torch threads the objects are split into one shard per thread,
    each fitted in a Python thread of its own with one intra-op thread (torch's thread count
    is 1 for the duration, then restored), which uses the cores better than splitting each
    small tensor operation (a batch too small to split runs on one intra-op thread for the
    same reason); every object's result is that of the one-thread fit, bit for bit
    (:func:`~skyfit.inference.many_newton.in_threads`).
    L-BFGS: the first pass stops after 200 iterations; the objects not converged after it and
    the polish (usually a few percent) continue in a batch of their own for the rest of
    ``max_iter``, from where they are, and are polished again.

    Both work in the unconstrained coordinates of
    :class:`~skyfit.inference.UnconstrainedDensity` (no step leaves the support; the L-BFGS
    scaled by the diagonal curvature at the start). Convergence is judged per object as in
    :func:`~skyfit.fit_map`: by the Newton decrement (< 1e-6) of the exact Hessian at the end;
    that Hessian is kept (``extra["hessian"]``) for :func:`laplace_many`.

    Arguments:
        density: a :class:`~skyfit.inference.batched.BatchedDensity`, e.g.
            :class:`~skyfit.survey.ManyObjects`.
        init: starts ``(N, dim)``, or ``(S, N, dim)`` for S starts per object (the best
            converged one is kept); None: ``density.initial()``. Inside the support, off its
            finite bounds (a start on or outside one is refused, naming its objects; a NaN
            start is that object's "not started").
        gtol, polish: the L-BFGS's gradient tolerance and whether it is polished.
        max_iter: iterations per object, by default 100 for Newton (where the quadratic model
            still fails after 100 it keeps failing) and 1000 for L-BFGS.
        method: ``"newton"``, ``"lbfgs"`` or None (Newton up to 30 parameters).
        compile: evaluate the gradients through ``torch.compile``
            (:class:`~skyfit.inference.many_newton.CompiledGradient`: two compiled batch sizes,
            tens of seconds each); None: only where the eager gradients of the fit are
            predicted to take over 300 s (one eager call timed), as ``sample_nuts`` decides.

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
        >>> result = fit_map_many(d, torch.zeros(2, 1))  # the modes are the means mu_n (to ~1e-6)
        >>> [round(v, 5) for v in result.x.flatten().tolist()], result.converged.tolist()
        ([-2.0, 3.0], [True, True])
    """
    t_start = time.perf_counter()
    if method is None:
        method = "newton" if density.dim <= NEWTON_MAX_DIM else "lbfgs"
    if method not in ("newton", "lbfgs"):
        raise ValueError(f"method must be 'newton', 'lbfgs' or None, got {method!r}")
    if max_iter is None:
        max_iter = NEWTON_MAX_ITER if method == "newton" else LBFGS_MAX_ITER
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    starts = _starts(density, init)
    _check_dtype(density, starts)
    s, n, d = starts.shape
    transform = UnconstrainedDensity(ObjectRows(density, torch.arange(n, device=density.device)))
    z0 = transform.to_unconstrained(starts.reshape(s * n, d))
    n_calls = NEWTON_TYPICAL_ITER * (d // 2 + 1) if method == "newton" else LBFGS_TYPICAL_EVALS
    gradient = gradient_for(density, compile, starts.reshape(s * n, d), n_calls)
    if method == "newton":
        z, value, ok, n_evals, message = _run_newton(density, transform, z0,
                                                     max_iter, gradient)
    else:
        z, value, ok, n_evals, message = _run_lbfgs(density, transform, z0, gtol,
                                                    max_iter, polish, gradient)
    x = transform.to_constrained(z).reshape(s, n, d)
    logp, ok = (-value).reshape(s, n), ok.reshape(s, n)
    best = torch.where(ok, logp, logp - torch.inf).nan_to_num(nan=-torch.inf).argmax(0)
    best = torch.where(ok.any(0), best, logp.nan_to_num(nan=-torch.inf).argmax(0))
    pick = torch.arange(n, device=x.device)
    x, converged = x[best, pick], ok[best, pick]
    messages = [message(int(best[i]) * n + i) for i in range(n)]
    n_evals = n_evals.reshape(s, n).sum(0)
    extra = {}
    if method == "lbfgs" and polish:
        x, logp, decrement = _polish_and_continue(density, transform, x, messages, n_evals,
                                                  gtol, max_iter)
    elif method == "newton":
        logp, grad, hessian = (torch.cat(parts) for parts in zip(*in_threads(
            lambda copy_, rows: value_grad_hessian_rows(copy_, x[rows], rows), density, n)))
        decrement = newton_decrement(grad, -hessian)
        extra["hessian"] = hessian
    else:
        logp, decrement = logp[best, pick], torch.full((n,), float("nan"), dtype=x.dtype)
    if method == "newton" or polish:
        converged = decrement < 1e-6
    result = ManyResult(names=list(density.names), x=x.detach(), log_density=logp.detach(),
                        converged=converged, messages=messages,
                        wall_time=time.perf_counter() - t_start)
    result.extra.update(newton_decrement=decrement, n_evals=n_evals, **extra)
    warn_not_converged(result, "fit_map_many")
    return result


def _run_newton(density, transform, z0, max_iter, gradient):
    from .optimizers.newton import NewtonState, minimize_newton

    def fit(copy_: BatchedDensity, rows: torch.Tensor) -> NewtonState:
        objective = newton_objective(copy_, transform, rows % density.n_objects,
                                     gradient=gradient)
        return minimize_newton(objective, z0[rows], max_iter=max_iter, refresh=NEWTON_REFRESH,
                               refresh_each_after=NEWTON_REFRESH_EACH_AFTER)

    # a compiled gradient is one graph for all rows: not shared between threads
    shards = in_threads(fit, density, z0.shape[0]) if gradient is None else [
        fit(density, torch.arange(z0.shape[0], device=z0.device))]
    state = NewtonState(*(torch.cat(field) for field in zip(*shards)))
    converged = (state.status == Status.CONVERGED_GTOL) | (state.status == Status.CONVERGED_FTOL)

    def message(row: int) -> str:
        text = NEWTON_MESSAGES[Status(int(state.status[row]))]
        return text.format(n_iter=int(state.n_iter[row]), decrement=float(state.decrement[row]))

    return state.x, state.f, converged, state.n_evals, message


def _run_lbfgs(density, transform, z0, gtol, max_iter, polish, gradient):
    from .optimizers import minimize_batched

    runs = minimize_batched(lbfgs_objective(density, transform, gradient=gradient), z0,
                            takes_rows=True, scale="curvature", gtol=gtol,
                            max_iter=min(max_iter, FIRST_PASS_ITER) if polish else max_iter)
    return runs.x, runs.value, runs.converged, runs.n_evals, runs.message


def _polish_and_continue(density, transform, x, messages, n_evals, gtol, max_iter):
    """The L-BFGS path's Newton polish, then a second L-BFGS pass (and polish) for the objects
    still not converged; ``messages`` and ``n_evals`` are updated in place."""
    x, logp, decrement = _newton_polish_many(density, x)
    converged = decrement < 1e-6
    if max_iter > FIRST_PASS_ITER and not converged.all():
        late = (~converged).nonzero().flatten()
        rest = _second_pass(density, transform, x[late], late, gtol, max_iter - FIRST_PASS_ITER)
        better = rest[1] >= logp[late]
        for field, value in zip((x, logp, decrement), rest[:3]):
            field[late[better]] = value[better]
        n_evals[late] += rest[4].n_evals
        for j, i in enumerate(late.tolist()):
            messages[i] = rest[4].message(j)
    return x, logp, decrement


def _second_pass(density: BatchedDensity, transform: UnconstrainedDensity, x: torch.Tensor,
                 objects: torch.Tensor, gtol: float, max_iter: int):
    """L-BFGS on the objects still not converged after the first pass and the polish, from
    where they are, then the polish again: ``(x, logp, decrement, converged, runs)``."""
    from .optimizers import minimize_batched

    runs = minimize_batched(lbfgs_objective(density, transform, objects),
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


def laplace_many(density: BatchedDensity, x, tol: float = 1e-12) -> ManyResult:
    """Per-object Laplace approximations at the modes ``x (N, dim)`` (e.g. a
    :func:`fit_map_many` result): ``covariance_n = (-H_n)^-1``, all Hessians in one vmapped
    call (or those of the result, where ``fit_map_many`` left them in ``extra["hessian"]``).
    As :func:`~skyfit.laplace`, a ``-H`` that is not positive definite (or has eigenvalues
    below ``tol`` times its largest, after Jacobi scaling) is repaired by ``|eigenvalue|`` with
    a floor; such objects get ``repaired=True`` and a warning in the table. An object whose
    Hessian is not finite (a NaN start its fit never left) gets a NaN covariance,
    ``converged=False`` and a warning; the other objects are not affected. Given points alone,
    ``converged`` is whether ``log p`` is finite there (not outside the support).

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
    _check_dtype(density, x)
    rows = torch.arange(x.shape[0], device=x.device)
    # fit_map_many's Newton path leaves the exact Hessian at its modes: not computed twice
    hessian = None if result is None else result.extra.get("hessian")
    if hessian is None:  # non-finite entries returned, not raised: one bad object is its own
        hessian = value_grad_hessian_rows(density, x, rows)[2]
    finite = torch.isfinite(hessian).flatten(1).all(1)  # the others solved around it (identity)
    precision = torch.where(finite[:, None, None], -hessian, torch.eye(x.shape[-1]).to(hessian))
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
    covariance = torch.where(finite[:, None, None],
                             0.5 * (covariance + covariance.transpose(-1, -2)), torch.nan)
    if result is None:
        logp = density.log_prob_rows(x, rows).detach()
        result = ManyResult(names=list(density.names), x=x.detach(), log_density=logp,
                            converged=torch.isfinite(logp))
    result.covariance = covariance
    result.extra["repaired"] = repaired = repaired & finite
    warn_not_finite(result, finite)
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
