"""Accounting of the points where a log-density was NaN or inf, for every sampler and optimiser."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from ..errors import LogDensityWarning

__all__ = ["NonfiniteTally"]


class NonfiniteTally:
    """Counts points ``(n, dim)`` where the log-density or its gradient was not finite and keeps
    the per-parameter range ``[min, max]`` they span, for one warning at the end of a run.

    Example:
        >>> import torch
        >>> t = NonfiniteTally(["a", "b"])
        >>> t.add(torch.tensor([[1.0, 5.0], [2.0, 4.0]]))
        >>> t.count, t.ranges()
        (2, {'a': (1.0, 2.0), 'b': (4.0, 5.0)})
    """

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.count = 0
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    def add(self, points: torch.Tensor) -> None:
        """Record the non-finite points ``(n, dim)`` (positions that are themselves finite)."""
        points = points.detach().reshape(-1, len(self.names))
        self.count += points.shape[0]
        points = points[torch.isfinite(points).all(-1)]
        if points.shape[0] == 0:
            return
        lo, hi = points.min(0).values, points.max(0).values
        self.low = lo if self.low is None else torch.minimum(self.low, lo)
        self.high = hi if self.high is None else torch.maximum(self.high, hi)

    def ranges(self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        """``{name: (min, max)}`` of the recorded points; ``transform`` maps an (elementwise
        monotone) unconstrained vector to the parameters (e.g. ``to_constrained``)."""
        if self.low is None:
            return {}
        lo, hi = self.low, self.high
        if transform is not None:
            lo, hi = transform(lo), transform(hi)
            lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        return {n: (a, b) for n, a, b in zip(self.names, lo.tolist(), hi.tolist())}

    def warn(self, who: str, n_total: int, transform=None, stacklevel: int = 3,
             bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """A :class:`~skyfit.errors.LogDensityWarning` naming how many of ``n_total`` evaluated
        points were NaN/inf and the parameter ranges they span; nothing if there were none.
        ``bounds``: the support ``(lower, upper)``; a span ending exactly on a finite bound is
        named as such (the unconstrained transform saturated there, so the model was evaluated
        on its own bound, not inside the prior)."""
        if not self.count:
            return
        ranges = self.ranges(transform)
        spans = ", ".join(f"{n} in [{a:.4g}, {b:.4g}]" for n, (a, b) in ranges.items())
        advice = ("restrict the parameters' valid ranges or fix the model")
        on_bound = _on_bound(ranges, bounds)
        if on_bound:
            advice = (f"{', '.join(on_bound)} reached exactly (a step so far out that the "
                      "bounded transform saturated): make the model finite at its bounds or "
                      "narrow their valid ranges")
        warnings.warn(LogDensityWarning(
            f"{who}: the log-density or its gradient was NaN/inf at {self.count} of {n_total} "
            f"evaluated points" + (f", spanning {spans}" if spans else "") + ". Those points "
            "were rejected; a model that is undefined over part of the prior biases the fit "
            f"there: {advice}"), stacklevel=stacklevel)


def _on_bound(ranges: dict, bounds) -> list[str]:
    """``"name = bound"`` for each span ending exactly on a finite bound of its parameter."""
    if bounds is None or not ranges:
        return []
    found = []
    for (name, (a, b)), lo, hi in zip(ranges.items(), bounds[0].tolist(), bounds[1].tolist()):
        found += [f"{name} = {v:.4g} (its bound)" for v, edge in ((a, lo), (b, hi))
                  if math.isfinite(edge) and v == edge]
    return found
