"""Maximise one log-density from many starts in one batched L-BFGS run; group the optima."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ...errors import ParameterRangeError
from ..density import LogDensity
from ..transforms import UnconstrainedDensity
from .driver import BatchedResult, curvature_scales, minimize_batched

__all__ = ["multistart", "MultistartResult", "Optimum", "group_optima"]


class Optimum(NamedTuple):
    """One distinct optimum: ``log_density``, ``x`` (of its best start), ``count`` (starts that
    ended there) and ``starts`` (their indices)."""

    log_density: float
    x: torch.Tensor
    count: int
    starts: list[int]


@dataclass
class MultistartResult:
    """The outcome of :func:`multistart`.

    Attributes:
        x: final points ``(N, D)`` in the density's own parameters. log_density: ``(N,)``.
        converged: ``(N,)`` mask. runs: the :class:`BatchedResult` of the optimiser (in the
            unconstrained coordinates it worked in; its ``value`` is ``-log p``).
        best: index of the start with the highest converged ``log p`` (of any finite one if none
            converged: then ``best_converged`` is False). optima: the distinct optima among the
            converged starts, best first. names: parameter names.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -((x - 1.5) ** 2).sum(-1) - 2, ["a"])  # peak: a = 1.5
        >>> res = multistart(d, torch.tensor([[-4.0], [0.0], [4.0]], dtype=torch.float64))
        >>> round(res.best_x.item(), 6), round(res.best_log_density, 9), len(res.optima)
        (1.5, -2.0, 1)
        >>> print(res.summary())
        log p = -2: 3 of 3 starts
    """

    x: torch.Tensor
    log_density: torch.Tensor
    converged: torch.Tensor
    runs: BatchedResult
    best: int
    best_converged: bool
    optima: list[Optimum]
    names: list[str]

    @property
    def best_x(self) -> torch.Tensor:
        """The point of the start with the highest log-density, ``(dim,)``."""
        return self.x[self.best]

    @property
    def best_log_density(self) -> float:
        """The highest log-density reached over all starts."""
        return float(self.log_density[self.best])

    def summary(self) -> str:
        """One line per distinct optimum, and the number of starts that did not converge."""
        lines = [f"log p = {o.log_density:.6g}: {o.count} of {len(self.x)} starts"
                 for o in self.optima]
        failed = int((~self.converged).sum())
        if failed:
            lines.append(f"{failed} starts did not converge")
        return "\n".join(lines)


def _unconstrained_objective(density: LogDensity, transform: UnconstrainedDensity):
    """``-log p(x(z))`` and its gradient in ``z``, WITHOUT the Jacobian term: the optimum of
    ``log p`` is a property of the density in ``x``; the Jacobian (what a sampler needs) would
    move it. ``dx/dz`` is diagonal (the transform is elementwise)."""

    def objective(z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            x = transform.to_constrained(z)
            (dx_dz,) = torch.autograd.grad(x.sum(), z)
        logp, grad = density.value_and_grad(x.detach())
        return -logp.detach(), -(grad.detach() * dx_dz)

    return objective


def group_optima(z: torch.Tensor, log_density: torch.Tensor, mask: torch.Tensor,
                 scale: torch.Tensor, value_tol: float, position_tol: float,
                 x: torch.Tensor) -> list[Optimum]:
    """Group the points ``z[mask]`` (best ``log_density`` first): a point joins the best
    ungrouped point if its log-density is within ``value_tol`` and every coordinate within
    ``position_tol`` of that point's ``scale`` (standard deviations when ``scale`` comes from
    the curvature there). ``x`` is what each optimum reports (the density's own parameters)."""
    order = [i for i in torch.argsort(log_density, descending=True).tolist() if bool(mask[i])]
    free = set(order)
    optima = []
    for head in order:
        if head not in free:
            continue
        members = [i for i in order if i in free
                   and abs(float(log_density[i] - log_density[head])) <= value_tol
                   and float(((z[i] - z[head]) / scale[head]).abs().max()) <= position_tol]
        free.difference_update(members)
        optima.append(Optimum(float(log_density[head]), x[head].clone(), len(members), members))
    return optima


def multistart(
    density: LogDensity,
    starts: torch.Tensor,
    *,
    value_tol: float = 1e-3,
    position_tol: float = 0.1,
    scale: str | None = "curvature",
    **options,
) -> MultistartResult:
    """Maximise ``density`` from every row of ``starts (N, D)`` in one batched L-BFGS run.

    Bounded parameters are optimised through :class:`~skyfit.inference.UnconstrainedDensity`'s
    transform (so no step leaves the support), without its Jacobian (which would move the
    optimum). Final points are grouped into distinct optima: same log-density within
    ``value_tol`` and same position within ``position_tol`` standard deviations, measured with
    the curvature at the better point in the unconstrained coordinates.

    Arguments:
        density: a :class:`~skyfit.inference.LogDensity`; its ``value_and_grad`` takes a batch.
        starts: ``(N, D)`` inside the support (e.g. draws from the prior).
        scale: ``"curvature"`` (default: diagonal scaling from the curvature at each start) or
            None. options: :class:`~skyfit.inference.optimizers.LBFGSOptions` fields.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> two_peaks = FunctionDensity(lambda x: torch.logsumexp(torch.stack(
        ...     [-0.5 * ((x - 3) ** 2).sum(-1), -0.5 * ((x + 3) ** 2).sum(-1) - 1]), 0), 1)
        >>> res = multistart(two_peaks, torch.linspace(-6, 6, 8, dtype=torch.float64)[:, None])
        >>> [(round(o.x.item(), 3), o.count) for o in res.optima]  # the better peak first
        [(3.0, 4), (-3.0, 4)]
    """
    starts = density.as_tensor(starts)
    if starts.ndim != 2:
        raise ValueError(f"starts must have shape (N, {density.dim}), got {tuple(starts.shape)}")
    density.check_inside(starts)
    on_bound = (starts == density.lower) | (starts == density.upper)
    if bool(on_bound.any()):
        names = sorted({density.names[i] for i in torch.nonzero(on_bound)[:, 1].tolist()})
        raise ParameterRangeError(
            f"starts lie on a bound for {names}: the unconstrained transform maps a bound to "
            f"infinity, where the gradient vanishes. Start strictly inside the bounds.")
    transform = UnconstrainedDensity(density)
    objective = _unconstrained_objective(density, transform)
    runs = minimize_batched(objective, transform.to_unconstrained(starts), scale=scale, **options)
    x = transform.to_constrained(runs.x)
    log_density = -runs.value
    finite = torch.isfinite(log_density)
    pool = runs.converged if bool(runs.converged.any()) else finite
    if not bool(pool.any()):
        raise ValueError("the log-density is not finite at any start: start inside the region "
                         "where the model is defined")
    best = int(torch.where(pool, log_density, -torch.inf).argmax())
    _, grad = objective(runs.x)
    spread = curvature_scales(lambda z, rows: objective(z), runs.x, grad)
    optima = group_optima(runs.x, log_density, runs.converged, spread, value_tol, position_tol, x)
    return MultistartResult(x=x, log_density=log_density, converged=runs.converged, runs=runs,
                            best=best, best_converged=bool(runs.converged[best]), optima=optima,
                            names=list(density.names))
