"""The value and gradient :func:`~skyfit.inference.sample_nuts_many`'s chains evaluate: eager, or
through ``torch.compile`` at two padded batch sizes.

Out of step (:mod:`~skyfit.inference.nuts_unsynced`) the run makes about as many batched calls
as its busiest chain needs leapfrog steps, most of them with only a few chains still building:
there an eager vmapped call costs its fixed Python and autograd overhead, not its arithmetic.
A compiled call has almost none of it (the ``many_nuts`` benchmark's notes in
``benchmarks/RESULTS.md`` give the numbers), at the price of one compilation per batch size.
"""

from __future__ import annotations

import torch

from .batched import BatchedDensity, ObjectRows
from .compiled import GRADIENTS_PER_ITERATION, eager_seconds, worth_compiling
from .density import LogDensity
from .many_newton import CompiledGradient
from .transforms import UnconstrainedDensity

__all__ = ["chains_density", "SMALL_BATCH", "CHUNK"]

# the two compiled batch sizes: the few chains of a run's long tail (padded to SMALL_BATCH), and
# chunks of CHUNK chains while many are building (a compiled chunk costs less per point than one
# eager call over thousands, whose intermediates leave the cache)
SMALL_BATCH, CHUNK = 16, 256


class UnconstrainedObjects(BatchedDensity):
    """``density``'s objects in the sampler's unconstrained coordinates: object ``n``'s
    ``log p_n(x(z)) + log |dx/dz|``, one object per call (what ``vmap`` and the compiler see).

    Arguments:
        density: the objects.
        u: the :class:`~skyfit.inference.UnconstrainedDensity` of their chains (its transform).
    """

    def __init__(self, density: BatchedDensity, u: UnconstrainedDensity):
        self.density, self.u = density, u
        self.names, self.data = list(density.names), density.data
        self.lower, self.upper = u.lower, u.upper

    def object_log_prob(self, z: torch.Tensor, data) -> torch.Tensor:
        return (self.density.object_log_prob(self.u.to_constrained(z), data)
                + self.u.log_abs_det_jacobian(z))


class CompiledChains(LogDensity):
    """The chains' log-density ``u`` (an :class:`UnconstrainedDensity` of ``objects``) whose
    ``value_and_grad`` runs through ``gradient`` (a compiled per-object gradient) for the
    chains ``objects`` has selected; ``log_prob`` stays ``u``'s."""

    def __init__(self, u: UnconstrainedDensity, objects: ObjectRows, gradient: CompiledGradient):
        self.u, self.objects, self.gradient = u, objects, gradient
        self.names, self.lower, self.upper = list(u.names), u.lower, u.upper

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.u.log_prob(z)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gradient(z, self.objects.rows)


def chains_density(u: UnconstrainedDensity, objects: ObjectRows, compile_: bool | None,
                   n_iterations: int, z: torch.Tensor) -> tuple[LogDensity, dict]:
    """The density the chains' kernel differentiates: ``u`` itself (eager), or a
    :class:`CompiledChains` if ``compile_`` is True, or if it is None and the run's eager
    gradients are predicted to take over ``WORTH_COMPILING_S`` seconds (one eager call on all
    chains ``z`` timed by :func:`~skyfit.inference.compiled.eager_seconds`, times
    ``GRADIENTS_PER_ITERATION * n_iterations``: the rule of
    :func:`~skyfit.inference.compiled.compile_if_worth`). Returns it and the
    compilation's ``info`` (``compile_s``, ``n_compiles``, ``fallback``; empty when eager)."""
    if compile_ is None:
        compile_ = worth_compiling(eager_seconds(lambda: u.value_and_grad(z), z.device),
                                   GRADIENTS_PER_ITERATION * n_iterations)
    if not compile_:
        return u, {}
    gradient = CompiledGradient(UnconstrainedObjects(objects.batched, u), chunk=CHUNK,
                                small=SMALL_BATCH)
    return CompiledChains(u, objects, gradient), gradient.info
