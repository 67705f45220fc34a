"""Damped Newton for B small independent problems in one batch: exact per-row Hessians, a
Levenberg-Marquardt trust region per row, per-row acceptance and stopping."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .lbfgs import Status

__all__ = ["NewtonOptions", "NewtonState", "init", "step", "minimize_newton", "newton_decrement"]


class NewtonOptions(NamedTuple):
    """``max_iter``: iterations (Hessian evaluations after the start) per row. ``decrement``:
    stop, converged, when the Newton decrement ``g^T H^-1 g / 2`` (the decrease of f the exact
    quadratic model predicts) is below ``decrement * max(|f|, 1)`` with ``H`` positive
    definite. ``ftol``: the rounding level of f relative to ``max(|f|, 1)`` (None: 10 machine
    epsilons); a row whose every step changes f by less, with a decrement below
    ``accept_decrement``, has converged to rounding. The small default ``decrement`` makes
    the last step from a decrement near rounding level (its position error is still ~1e-6
    standard deviations) be taken: quadratic convergence puts the point on the optimum.
    ``damping``: the first Levenberg-Marquardt parameter (relative to the Hessian's diagonal).
    ``max_damping``: a row that needs more to decrease f has stalled. ``refresh``: the
    objective's Hessian is asked for every ``refresh``-th iteration of a row (the objective
    then takes a third argument, the mask of rows that need it); in between, the last one is
    carried on by BFGS updates (Nocedal & Wright 2006, eq. 6.19) from the steps taken.
    ``refresh_each_after``: with ``refresh > 1``, a row still running after this many
    iterations gets its Hessian at every iteration from then on (None: never): the slow rows,
    where the carried-on model costs more iterations than the Hessians it saves."""

    max_iter: int = 200
    decrement: float = 1e-20
    accept_decrement: float = 1e-6
    ftol: float | None = None
    damping: float = 1e-3
    max_damping: float = 1e12
    refresh: int = 1
    refresh_each_after: int | None = None


DEFAULT_OPTIONS = NewtonOptions()


class NewtonState(NamedTuple):
    """Per row (B rows): ``x``, ``f``, ``grad``, ``hessian`` ``(B, D, D)`` of the objective
    minimised; ``damping`` (the Levenberg-Marquardt parameter); ``decrement`` (the Newton
    decrement at ``x``, NaN where ``hessian`` is not positive definite); counters ``n_iter``,
    ``n_evals``; ``status`` (:class:`~skyfit.inference.optimizers.Status` codes); ``rows``:
    the problem index of each row, handed to the objective."""

    x: torch.Tensor
    f: torch.Tensor
    grad: torch.Tensor
    hessian: torch.Tensor
    damping: torch.Tensor
    decrement: torch.Tensor
    n_iter: torch.Tensor
    n_evals: torch.Tensor
    status: torch.Tensor
    rows: torch.Tensor


def newton_decrement(grad: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """``g^T H^-1 g / 2`` per row (the decrease the quadratic model predicts), NaN where
    ``hessian`` is not positive definite."""
    L, info = torch.linalg.cholesky_ex(hessian)
    step = torch.cholesky_solve(grad[..., None], L)[..., 0]
    dec = 0.5 * (grad * step).sum(-1)
    return torch.where(info == 0, dec, torch.full_like(dec, float("nan")))


def _ftol(options: NewtonOptions, dtype: torch.dtype) -> float:
    return 10 * torch.finfo(dtype).eps if options.ftol is None else options.ftol


def init(x0: torch.Tensor, objective, options: NewtonOptions = DEFAULT_OPTIONS) -> NewtonState:
    """Evaluate all rows of ``x0 (B, D)``: ``objective(x, rows) -> (f, grad, hessian)`` of the
    value to minimise (every Hessian: no third argument). Rows with a non-finite value,
    gradient or Hessian start as ``NONFINITE_START``; rows whose decrement is already below
    the stopping level as ``CONVERGED_GTOL``."""
    x0 = x0.detach()
    b = x0.shape[0]
    rows = torch.arange(b, device=x0.device)
    f, g, H = objective(x0, rows)
    if not f.dtype == g.dtype == H.dtype == x0.dtype:
        raise TypeError(f"the objective returns {f.dtype} values, {g.dtype} gradients and "
                        f"{H.dtype} Hessians for {x0.dtype} points: one dtype is needed")
    finite = torch.isfinite(f) & torch.isfinite(g).all(-1) & torch.isfinite(H).flatten(1).all(1)
    g = torch.where(finite[:, None], g, torch.zeros_like(g))
    H = torch.where(finite[:, None, None], H, torch.eye(x0.shape[1], dtype=H.dtype,
                                                        device=H.device).expand_as(H))
    dec = newton_decrement(g, H)
    status = torch.where(finite, Status.RUNNING, Status.NONFINITE_START)
    done = finite & (dec <= options.decrement * f.abs().clamp(min=1.0))
    status = torch.where(done, Status.CONVERGED_GTOL, status)
    zeros = torch.zeros(b, dtype=torch.long, device=x0.device)
    return NewtonState(x=x0.clone(), f=f, grad=g, hessian=H,
                       damping=torch.full_like(f, options.damping), decrement=dec,
                       n_iter=zeros, n_evals=zeros + 1, status=status, rows=rows)


def _damped_step(grad, hessian, damping, max_damping):
    """``p = -(H + lambda diag|H|)^-1 g`` per row, ``lambda`` raised tenfold (no evaluations)
    until the matrix is positive definite; returns ``(p, lambda, solved)``."""
    diag = hessian.diagonal(dim1=-2, dim2=-1).abs()
    diag = torch.maximum(diag, 1e-12 * diag.amax(-1, keepdim=True).clamp(min=1e-300))
    step = torch.zeros_like(grad)
    solved = torch.zeros_like(damping, dtype=torch.bool)
    lam = damping.clone()
    while True:
        todo = ~solved & (lam <= max_damping)
        if not bool(todo.any()):
            return step, lam, solved
        A = hessian[todo] + lam[todo, None, None] * torch.diag_embed(diag[todo])
        L, info = torch.linalg.cholesky_ex(A)
        ok = info == 0
        p = -torch.cholesky_solve(grad[todo][..., None], L)[..., 0]
        idx = todo.nonzero().flatten()
        step[idx[ok]] = p[ok]
        solved[idx[ok]] = True
        lam[idx[~ok]] = torch.where(lam[idx[~ok]] > 0, lam[idx[~ok]] * 10, 1e-8)


def _bfgs_update(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``B - B s s^T B / s^T B s + y y^T / y^T s`` per row, ``B`` unchanged where the curvature
    condition ``y^T s > 0`` (or ``s^T B s > 0``) fails."""
    Bs = (B @ s[..., None])[..., 0]
    sBs, ys = (s * Bs).sum(-1), (y * s).sum(-1)
    tiny = torch.finfo(B.dtype).tiny
    ok = (ys > 1e-12 * (y * y).sum(-1).sqrt() * (s * s).sum(-1).sqrt()) & (sBs > tiny)
    update = (-Bs[:, :, None] * Bs[:, None, :] / sBs.clamp(min=tiny)[:, None, None]
              + y[:, :, None] * y[:, None, :] / ys.clamp(min=tiny)[:, None, None])
    return B + torch.where(ok[:, None, None], update, torch.zeros_like(update))


def _advance(st: NewtonState, objective, options: NewtonOptions) -> NewtonState:
    """One damped Newton iteration for rows that are all RUNNING (the caller gathers them)."""
    p, lam, solved = _damped_step(st.grad, st.hessian, st.damping, options.max_damping)
    predicted = -((st.grad * p).sum(-1) + 0.5 * (p[:, None, :] @ st.hessian @ p[:, :, None])
                  .flatten(1)[:, 0])
    if options.refresh == 1:
        f, g, H = objective(st.x + p, st.rows)
        need = torch.ones_like(solved)
    else:
        need = (st.n_iter % options.refresh) == options.refresh - 1
        if options.refresh_each_after is not None:
            need |= st.n_iter >= options.refresh_each_after
        f, g, H = objective(st.x + p, st.rows, need)
        H = torch.where(need[:, None, None], H, _bfgs_update(st.hessian, p, g - st.grad))
    finite = torch.isfinite(f) & torch.isfinite(g).all(-1) & torch.isfinite(H).flatten(1).all(1)
    rounding = _ftol(options, st.x.dtype) * st.f.abs().clamp(min=1.0)
    actual = st.f - f
    ratio = actual / predicted.clamp(min=torch.finfo(f.dtype).tiny)
    # accepted: a real decrease in line with the model, or a change at rounding level where the
    # model predicts no more (the last steps onto the optimum)
    accept = solved & finite & (((actual > 0) & (ratio > 1e-4))
                                | ((actual >= -rounding) & (predicted <= rounding)))
    lam = torch.where(~accept, lam * 10,
                      torch.where(ratio > 0.75, lam / 3,
                                  torch.where(ratio < 0.25, lam * 4, lam)))
    lam = torch.where(lam < 1e-12, torch.zeros_like(lam), lam)
    take = accept[:, None]
    x = torch.where(take, st.x + p, st.x)
    new_f = torch.where(accept, f, st.f)
    new_g = torch.where(take, g, st.grad)
    new_H = torch.where(accept[:, None, None], H, st.hessian)
    dec = torch.where(accept, newton_decrement(new_g, new_H), st.decrement)
    scale = new_f.abs().clamp(min=1.0)
    status = torch.full_like(st.status, Status.RUNNING)
    status = torch.where(st.n_iter + 1 >= options.max_iter, Status.MAX_ITER, status)
    # no decreasing step up to the largest damping: at rounding level (converged if the
    # decrement is small) or a wall / kink / wrong gradient
    stuck = ~accept & (lam > options.max_damping)
    small = (dec <= options.accept_decrement * scale) | (predicted <= rounding)
    status = torch.where(stuck, torch.where(small & ~torch.isnan(dec), Status.CONVERGED_FTOL,
                                            Status.STALLED), status)
    status = torch.where(dec <= options.decrement * scale, Status.CONVERGED_GTOL, status)
    # a step accepted with a change of f at rounding level where the exact (undamped) model
    # predicts little more: f cannot tell better points apart any more
    # (or, rejected, by at most 1000 times the rounding estimate: f summed over many terms
    # is noisier than the estimate, and such a row would otherwise cycle in damping)
    at_rounding = (dec <= options.accept_decrement * scale) & (
        (accept & (actual.abs() <= rounding)) | (~accept & (actual.abs() <= 1e3 * rounding)))
    status = torch.where(at_rounding, Status.CONVERGED_FTOL, status)
    return st._replace(x=x, f=new_f, grad=new_g, hessian=new_H, damping=lam, decrement=dec,
                       n_iter=st.n_iter + 1, n_evals=st.n_evals + 1, status=status)


def step(state: NewtonState, objective, options: NewtonOptions = DEFAULT_OPTIONS) -> NewtonState:
    """One damped Newton iteration for every RUNNING row (one ``objective`` call for all of
    them); stopped rows are neither evaluated nor changed."""
    idx = torch.nonzero(state.status == Status.RUNNING).flatten()
    if idx.numel() == 0:
        return state
    sub = _advance(NewtonState(*(v[idx] for v in state)), objective, options)
    merged = []
    for full, part in zip(state, sub):
        full = full.clone()
        full[idx] = part
        merged.append(full)
    return NewtonState(*merged)


def minimize_newton(objective, x0: torch.Tensor,
                    options: NewtonOptions | None = None, **option_values) -> NewtonState:
    """Minimise B independent problems, one per row of ``x0 (B, D)``, by damped Newton steps.

    Every iteration evaluates all running rows' value, gradient and Hessian in one call at the
    trial point ``x + p``, ``p = -(H + lambda diag|H|)^-1 g``; a row accepts the trial where f
    decreases by at least 1e-4 of the quadratic model's prediction (or changes at rounding level
    where the model predicts no more), and its ``lambda`` shrinks after good agreement and grows
    after poor agreement or rejection (Levenberg-Marquardt / trust-region rule, Nocedal & Wright
    2006, Algorithm 4.1 in its damping form). Near an optimum ``lambda`` reaches 0 and the steps
    are exact Newton steps: quadratic convergence, and a quadratic converges in one step.

    Arguments:
        objective: ``objective(x (k, D), rows (k,)) -> (f (k,), grad (k, D), hessian (k, D, D))``
            of the value to minimise; ``rows`` says which problem each point belongs to.
        x0: starts ``(B, D)``.
        options: :class:`NewtonOptions`, or its fields as keywords.

    Returns:
        the final :class:`NewtonState` (``status`` says why each row stopped).

    Example:
        >>> import torch
        >>> A = torch.tensor([[[2.0, 0.5], [0.5, 1.0]], [[10.0, 0.0], [0.0, 0.1]]],
        ...                  dtype=torch.float64)
        >>> c = torch.tensor([[1.0, -1.0], [3.0, 2.0]], dtype=torch.float64)
        >>> def quadratic(x, rows):  # (x - c)^T A (x - c) / 2 per row
        ...     r = x - c[rows]
        ...     g = (A[rows] @ r[..., None])[..., 0]
        ...     return 0.5 * (r * g).sum(-1), g, A[rows]
        >>> state = minimize_newton(quadratic, torch.zeros(2, 2, dtype=torch.float64),
        ...                         damping=0.0)
        >>> state.x.round(decimals=12).tolist(), state.n_iter.tolist()  # the centres, 1 step
        ([[1.0, -1.0], [3.0, 2.0]], [1, 1])
    """
    options = (options or NewtonOptions())._replace(**option_values)
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, D), got {tuple(x0.shape)}")
    state = init(x0, objective, options)
    while bool((state.status == Status.RUNNING).any()):
        state = step(state, objective, options)
    return state
