"""Run the batched L-BFGS kernel to the end: diagonal scaling, the loop, a plain-data result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import lbfgs
from .lbfgs import CONVERGED, LBFGSOptions, LBFGSState, Status
from .line_search import BatchedObjective

__all__ = ["BatchedResult", "minimize_batched", "curvature_scales"]

_MESSAGES = {
    Status.RUNNING: "still running",
    Status.CONVERGED_GTOL: "converged: gradient max-norm {grad_norm:.3g} <= gtol",
    Status.CONVERGED_FTOL: "converged: relative change of f <= ftol and a predicted further "
                           "decrease of {decrement:.3g}",
    Status.MAX_ITER: "not converged: {n_iter} iterations (max_iter), gradient max-norm "
                     "{grad_norm:.3g}",
    Status.LINE_SEARCH_FAILED: "not converged: no step along steepest descent decreased f "
                               "(gradient max-norm {grad_norm:.3g}); is the gradient right?",
    Status.STALLED: "not converged: f stopped changing while the model predicts a decrease of "
                    "{decrement:.3g} (gradient max-norm {grad_norm:.3g}): a wall, a kink, the "
                    "edge of a NaN/-inf region, or a wrong gradient?",
    Status.NONFINITE_START: "not started: f or its gradient is NaN or infinite at the start",
}


@dataclass
class BatchedResult:
    """The outcome of :func:`minimize_batched`, one entry per row (problem) of the batch.

    Attributes:
        x: final points ``(B, D)``. value: the minimised objective there ``(B,)``.
        grad_norm: max |gradient| in the scaled coordinates the optimiser worked in.
        decrement: the decrease of the objective the final L-BFGS model still predicts.
        n_iter, n_evals: iterations and objective evaluations per row.
        n_nan, n_inf: trial evaluations with a NaN value or gradient, or an infinite value.
        status: :class:`~skyfit.inference.optimizers.Status` codes. converged: a boolean mask.
        scale: the per-row scales ``(B, D)``; the optimiser worked in ``x / scale``.

    Example:
        >>> import torch
        >>> def f(x):  # (x - 2)^2 in each row: the minimum 0 at x = 2
        ...     return ((x - 2.0) ** 2).sum(-1), 2 * (x - 2.0)
        >>> res = minimize_batched(f, torch.tensor([[0.0], [5.0]], dtype=torch.float64))
        >>> res.x.flatten().tolist(), res.value.tolist(), res.converged.tolist()
        ([2.0, 2.0], [0.0, 0.0], [True, True])
        >>> res.messages[0]  # doctest: +ELLIPSIS
        'converged: gradient max-norm ... <= gtol'
    """

    x: torch.Tensor
    value: torch.Tensor
    grad_norm: torch.Tensor
    decrement: torch.Tensor
    n_iter: torch.Tensor
    n_evals: torch.Tensor
    n_nan: torch.Tensor
    n_inf: torch.Tensor
    status: torch.Tensor
    converged: torch.Tensor
    scale: torch.Tensor

    def message(self, row: int) -> str:
        """Why row ``row`` stopped, with its numbers (and its NaN / inf count, if any)."""
        fields = dict(grad_norm=float(self.grad_norm[row]), decrement=float(self.decrement[row]),
                      n_iter=int(self.n_iter[row]))
        text = _MESSAGES[Status(int(self.status[row]))].format(**fields)
        nan, inf = int(self.n_nan[row]), int(self.n_inf[row])
        if nan or inf:
            text += (f"; {nan} NaN and {inf} infinite evaluations were rejected (steps backed "
                     f"off)")
        return text

    @property
    def messages(self) -> list[str]:
        """:meth:`message` for every row."""
        return [self.message(i) for i in range(self.x.shape[0])]


def curvature_scales(objective: BatchedObjective, x: torch.Tensor, grad: torch.Tensor,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """``1 / sqrt(d2 f / dx_i2)`` per row and entry from forward differences of the gradient
    (all ``B * D`` shifted points in one call), 1 where the curvature is not positive and
    finite. With these scales the objective has unit diagonal curvature: its gradient is in
    units of standard deviations when f is a negative log-density."""
    b, d = x.shape
    rows = torch.arange(b, device=x.device) if rows is None else rows
    h = torch.finfo(x.dtype).eps ** 0.5 * x.abs().clamp(min=1.0)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    pts = (x[:, None, :] + h[:, None, :] * eye).reshape(b * d, d)
    _, g = objective(pts, rows.repeat_interleave(d))
    curv = (g.detach().reshape(b, d, d).diagonal(dim1=1, dim2=2) - grad) / h
    ok = torch.isfinite(curv) & (curv > 0)
    return torch.where(ok, curv.clamp(min=torch.finfo(x.dtype).tiny).rsqrt(), 1.0)


def _scaled(objective: BatchedObjective, scale: torch.Tensor) -> BatchedObjective:
    def scaled(u: torch.Tensor, rows: torch.Tensor):
        f, g = objective(u * scale[rows], rows)
        return f.detach(), g.detach() * scale[rows]

    return scaled


def minimize_batched(
    objective: Callable,
    x0: torch.Tensor,
    *,
    takes_rows: bool = False,
    scale: torch.Tensor | str | None = None,
    options: LBFGSOptions | None = None,
    callback: Callable[[LBFGSState], None] | None = None,
    **option_values,
) -> BatchedResult:
    """Minimise B independent problems, one per row of ``x0 (B, D)``, with batched L-BFGS.

    All rows that are still running are evaluated together, one ``objective`` call per line
    search trial; a row that stopped is not evaluated again and its ``x`` no longer changes.
    The optimiser works in ``u = x / scale``: ``gtol`` bounds the max-norm of the gradient in
    ``u``; with ``scale="curvature"`` that is in units where the start's diagonal curvature is
    1 (standard deviations for a negative log-density; unit scale where the curvature is not
    positive), which helps where parameters have very different units, and can hurt where the
    curvature at the start says little about the optimum's (Rosenbrock's valley).

    Arguments:
        objective: ``objective(x (k, D)) -> (f (k,), grad (k, D))``, the value to minimise, or
            with ``takes_rows=True``, ``objective(x, rows)`` where ``rows (k,)`` says which
            problem each point belongs to (for B different datasets).
        x0: starts ``(B, D)``; dtype and device of the work follow it.
        scale: None (unit scales, default), ``"curvature"``, or a tensor ``(D,)`` / ``(B, D)``.
        options: :class:`~skyfit.inference.optimizers.LBFGSOptions`, or its fields as keywords
            (``gtol=1e-8``). callback: called with the state after every iteration.

    Example:
        >>> import torch
        >>> centres = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
        >>> def f(x, rows):  # rows: which problem (centre) each point belongs to
        ...     return ((x - centres[rows]) ** 2).sum(-1), 2 * (x - centres[rows])
        >>> res = minimize_batched(f, torch.zeros(2, 2, dtype=torch.float64), takes_rows=True)
        >>> res.x.round(decimals=8).tolist(), res.converged.tolist()
        ([[1.0, 2.0], [-3.0, 0.5]], [True, True])
    """
    options = (options or LBFGSOptions())._replace(**option_values)
    x0 = x0.detach()
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, D), got {tuple(x0.shape)}")
    fn = objective if takes_rows else (lambda x, rows: objective(x))
    rows = torch.arange(x0.shape[0], device=x0.device)
    extra_evals = 0
    if isinstance(scale, str):
        if scale != "curvature":
            raise ValueError(f"scale must be 'curvature', a tensor or None, got {scale!r}")
        _, g0 = fn(x0, rows)
        scale = curvature_scales(fn, x0, g0.detach(), rows)
        extra_evals = 1 + x0.shape[1]  # the start and D shifted points per row
    elif scale is None:
        scale = torch.ones_like(x0)
    scale = torch.as_tensor(scale, dtype=x0.dtype, device=x0.device).expand_as(x0)
    scaled = _scaled(fn, scale)
    state = lbfgs.init(x0 / scale, scaled, options)
    while bool((state.status == Status.RUNNING).any()):
        state, _ = lbfgs.step(state, scaled, options)
        if callback is not None:
            callback(state)
    return _result(state._replace(n_evals=state.n_evals + extra_evals), scale)


def _result(state: LBFGSState, scale: torch.Tensor) -> BatchedResult:
    status = state.status
    converged = torch.zeros_like(status, dtype=torch.bool)
    for code in CONVERGED:
        converged |= status == code
    return BatchedResult(x=state.x * scale, value=state.f, grad_norm=state.grad.abs().amax(-1),
                         decrement=state.decrement, n_iter=state.n_iter, n_evals=state.n_evals,
                         n_nan=state.n_nan, n_inf=state.n_inf, status=status,
                         converged=converged, scale=scale)
