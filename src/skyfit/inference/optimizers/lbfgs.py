"""L-BFGS for B independent problems in one batch: per-row history, line search and stopping."""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch

from .line_search import BatchedObjective, strong_wolfe

__all__ = ["Status", "LBFGSOptions", "LBFGSState", "LBFGSInfo", "init", "step"]


class Status(enum.IntEnum):
    """Why a row stopped (``RUNNING`` while it has not)."""

    RUNNING = 0
    #: gradient max-norm <= gtol
    CONVERGED_GTOL = 1
    #: relative change of f <= ftol and the quasi-Newton model predicts no larger decrease
    CONVERGED_FTOL = 2
    MAX_ITER = 3
    #: no step with sufficient decrease along steepest descent (after dropping the history)
    LINE_SEARCH_FAILED = 4
    #: relative change of f <= ftol while the model still predicts a larger decrease: a wall,
    #: a kink, the edge of a NaN / infinite region, or a wrong gradient
    STALLED = 5
    #: f or its gradient is NaN or infinite at the start
    NONFINITE_START = 6


CONVERGED = (Status.CONVERGED_GTOL, Status.CONVERGED_FTOL)


class LBFGSOptions(NamedTuple):
    """``history``: curvature pairs kept per row (m). ``gtol``: stop when max |grad| <= gtol.
    ``ftol``: stop when ``(f_old - f_new) <= ftol max(|f_old|, |f_new|, 1)`` (converged only if
    the model's predicted decrease is that small too); also the rounding level of f in the line
    search. None: 10 machine epsilons of the dtype, about the rounding of a sum of tens of terms
    (in float32 this locates an optimum of a ``-log p ~ 100`` to ~0.01 standard deviations).
    ``max_iter``: iterations per row. ``max_line_search``: trial evaluations per line search.
    ``c1``, ``c2``: strong Wolfe constants (Nocedal & Wright's 1e-4 and 0.9 for quasi-Newton)."""

    history: int = 10
    gtol: float = 1e-6
    ftol: float | None = None
    max_iter: int = 1000
    max_line_search: int = 25
    c1: float = 1e-4
    c2: float = 0.9


DEFAULT_OPTIONS = LBFGSOptions()


class LBFGSState(NamedTuple):
    """Per row (B rows): ``x``, ``f``, ``grad``; ``direction`` = -H grad with H the L-BFGS
    inverse-Hessian approximation at ``x``; the history ``s`` / ``y`` ``(B, m, D)`` (oldest
    first, zero-padded) and ``rho = 1 / s.y`` (0 in empty slots); counters ``n_iter``,
    ``n_evals``, ``n_nan``, ``n_inf``; ``status`` (:class:`Status` codes). ``rows``: problem
    index of each row, handed to the objective."""

    x: torch.Tensor
    f: torch.Tensor
    grad: torch.Tensor
    direction: torch.Tensor
    s: torch.Tensor
    y: torch.Tensor
    rho: torch.Tensor
    n_iter: torch.Tensor
    n_evals: torch.Tensor
    n_nan: torch.Tensor
    n_inf: torch.Tensor
    status: torch.Tensor
    rows: torch.Tensor

    @property
    def decrement(self) -> torch.Tensor:
        """``-grad . direction / 2``: the decrease of f the quasi-Newton model still predicts."""
        return -0.5 * (self.grad * self.direction).sum(-1)


class LBFGSInfo(NamedTuple):
    """Per row, for the last step: ``step_size`` (0 where no step was taken), ``wolfe``
    (the line search met the strong Wolfe conditions), ``n_evals`` of this step."""

    step_size: torch.Tensor
    wolfe: torch.Tensor
    n_evals: torch.Tensor


def two_loop_direction(grad, s, y, rho) -> torch.Tensor:
    """``-H grad`` by the two-loop recursion (Nocedal & Wright 2006, Algorithm 7.4), per row,
    with ``H0 = gamma I``, ``gamma = s.y / y.y`` of the newest pair (1 without history).
    Empty slots have ``rho = 0`` and contribute nothing."""
    q = grad.clone()
    m = s.shape[1]
    alpha = []
    for i in reversed(range(m)):
        a = rho[:, i] * (s[:, i] * q).sum(-1)
        q = q - a[:, None] * y[:, i]
        alpha.append(a)
    alpha.reverse()
    yy = (y[:, -1] * y[:, -1]).sum(-1)
    has = rho[:, -1] > 0
    gamma = torch.where(has, 1 / (rho[:, -1] * torch.where(has, yy, 1)), 1)
    r = gamma[:, None] * q
    for i in range(m):
        b = rho[:, i] * (y[:, i] * r).sum(-1)
        r = r + (alpha[i] - b)[:, None] * s[:, i]
    return -r


def _ftol(options: LBFGSOptions, dtype: torch.dtype) -> float:
    return 10 * torch.finfo(dtype).eps if options.ftol is None else options.ftol


def init(x0: torch.Tensor, objective: BatchedObjective,
         options: LBFGSOptions = DEFAULT_OPTIONS) -> LBFGSState:
    """Evaluate all ``B`` rows of ``x0 (B, D)`` once; rows already at ``gtol`` start converged,
    rows with a non-finite value or gradient start as ``NONFINITE_START``."""
    x0 = x0.detach()
    b, d = x0.shape
    rows = torch.arange(b, device=x0.device)
    f, g = objective(x0, rows)
    f, g = f.detach().to(x0.dtype), g.detach().to(x0.dtype)
    nan = torch.isnan(f) | torch.isnan(g).any(-1)
    finite = torch.isfinite(f) & torch.isfinite(g).all(-1)
    status = torch.where(finite, Status.RUNNING, Status.NONFINITE_START)
    status = torch.where(finite & (g.abs().amax(-1) <= options.gtol), Status.CONVERGED_GTOL, status)
    zeros = torch.zeros(b, dtype=torch.long, device=x0.device)
    hist = torch.zeros(b, options.history, d, dtype=x0.dtype, device=x0.device)
    return LBFGSState(x=x0.clone(), f=f, grad=g, direction=-g, s=hist, y=hist.clone(),
                      rho=hist[..., 0].clone(), n_iter=zeros, n_evals=zeros + 1,
                      n_nan=nan.long(), n_inf=(~finite & ~nan).long(), status=status, rows=rows)


def _push_pair(s_hist, y_hist, rho, s, y, keep):
    """Append ``(s, y)`` to the rows in ``keep`` (dropping their oldest pair)."""
    sy = (s * y).sum(-1)
    rolled = (torch.cat([s_hist[:, 1:], s[:, None]], 1), torch.cat([y_hist[:, 1:], y[:, None]], 1),
              torch.cat([rho[:, 1:], (1 / torch.where(keep, sy, 1))[:, None]], 1))
    k3 = keep[:, None, None]
    return (torch.where(k3, rolled[0], s_hist), torch.where(k3, rolled[1], y_hist),
            torch.where(keep[:, None], rolled[2], rho))


def _advance(st: LBFGSState, objective: BatchedObjective,
             options: LBFGSOptions) -> tuple[LBFGSState, LBFGSInfo]:
    """One iteration for rows that are all RUNNING (the caller gathers them)."""
    d = st.direction
    dphi = (st.grad * d).sum(-1)
    empty = st.rho[:, -1] == 0
    # the history may give an ascent direction after non-Wolfe steps: then steepest descent
    reset = ~(dphi < 0)
    d = torch.where(reset[:, None], -st.grad, d)
    empty = empty | reset
    gnorm = st.grad.norm(dim=-1)
    step0 = torch.where(empty, torch.clamp(1 / gnorm, max=1.0), torch.ones_like(gnorm))
    rounding = _ftol(options, st.x.dtype) * st.f.abs().clamp(min=1.0)
    ls = strong_wolfe(objective, st.rows, st.x, st.f, st.grad, d, step0, c1=options.c1,
                      c2=options.c2, max_evals=options.max_line_search, value_tol=rounding)
    s = ls.step[:, None] * d
    y = ls.grad - st.grad
    eps = torch.finfo(st.x.dtype).eps
    keep = ls.decreased & ((s * y).sum(-1) > eps * (y * y).sum(-1))
    drop = reset | (~ls.decreased)  # forget a history that failed
    s_hist = torch.where(drop[:, None, None], 0, st.s)
    y_hist = torch.where(drop[:, None, None], 0, st.y)
    rho = torch.where(drop[:, None], 0, st.rho)
    s_hist, y_hist, rho = _push_pair(s_hist, y_hist, rho, s, y, keep)
    x = torch.where(ls.decreased[:, None], st.x + s, st.x)
    direction = two_loop_direction(ls.grad, s_hist, y_hist, rho)
    new = st._replace(x=x, f=ls.f, grad=ls.grad, direction=direction, s=s_hist, y=y_hist,
                      rho=rho, n_iter=st.n_iter + 1, n_evals=st.n_evals + ls.n_evals,
                      n_nan=st.n_nan + ls.n_nan, n_inf=st.n_inf + ls.n_inf)
    # the decrease the model predicted before the step (steepest descent's where it was reset)
    predicted = torch.where(reset, 0.5 * gnorm**2, st.decrement)
    status = _stopping(st, new, ls, empty, predicted, options)
    info = LBFGSInfo(step_size=torch.where(ls.decreased, ls.step, 0), wolfe=ls.wolfe,
                     n_evals=ls.n_evals)
    return new._replace(status=status), info


def _stopping(old: LBFGSState, new: LBFGSState, ls, was_steepest, predicted,
              options: LBFGSOptions) -> torch.Tensor:
    """Status after a step, in order of precedence: gradient small; no step decreased f
    (converged if the ``predicted`` decrease is at rounding level, else a failed line search,
    retried once with steepest descent); relative change of f below ftol: converged if the
    model predicts no larger decrease, stalled if it does and the line search was cut short
    (non-finite trials, or no Wolfe step: a wall, a kink), else go on (slow progress in a
    curved valley is not a reason to stop); iteration cap."""
    ftol = _ftol(options, new.x.dtype)
    scale = torch.maximum(torch.maximum(old.f.abs(), new.f.abs()), torch.ones_like(new.f))
    small_change = (old.f - new.f) <= ftol * scale
    model_agrees = new.decrement <= ftol * scale
    cut_short = (ls.n_nan + ls.n_inf > 0) | ~ls.wolfe
    status = torch.full_like(new.status, Status.RUNNING)
    status = torch.where(new.n_iter >= options.max_iter, Status.MAX_ITER, status)
    status = torch.where(small_change & cut_short, Status.STALLED, status)
    status = torch.where(small_change & model_agrees, Status.CONVERGED_FTOL, status)
    failed = torch.where(predicted <= ftol * scale, Status.CONVERGED_FTOL,
                         torch.where(was_steepest, Status.LINE_SEARCH_FAILED, Status.RUNNING))
    status = torch.where(~ls.decreased, failed, status)
    return torch.where(new.grad.abs().amax(-1) <= options.gtol, Status.CONVERGED_GTOL, status)


def step(state: LBFGSState, objective: BatchedObjective,
         options: LBFGSOptions = DEFAULT_OPTIONS) -> tuple[LBFGSState, LBFGSInfo]:
    """One L-BFGS iteration for every RUNNING row; stopped rows are neither evaluated nor
    changed. Minimises: ``objective`` returns the value to minimise and its gradient."""
    active = state.status == Status.RUNNING
    idx = torch.nonzero(active).flatten()
    b = state.x.shape[0]
    zeros = torch.zeros(b, dtype=state.x.dtype, device=state.x.device)
    info = LBFGSInfo(step_size=zeros, wolfe=zeros.bool(), n_evals=zeros.long())
    if idx.numel() == 0:
        return state, info
    sub, sub_info = _advance(LBFGSState(*(v[idx] for v in state)), objective, options)
    merged = []
    for full, part in zip(state, sub):
        full = full.clone()
        full[idx] = part
        merged.append(full)
    out_info = []
    for full, part in zip(info, sub_info):
        full[idx] = part.to(full.dtype)
        out_info.append(full)
    return LBFGSState(*merged), LBFGSInfo(*out_info)
