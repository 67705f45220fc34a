"""Running a caskade graph from a list of Param values with less per-call bookkeeping.

Every ``module(params)`` call makes caskade walk the whole graph four times (add and remove two
memo strings on every node, through Python properties and hashing) and clear every Param. For
the 29-node supernova model that is ~0.1 ms of a 1 ms log-likelihood, paid at every optimiser
and sampler step. :class:`Activation` does the same state changes from lists made once, for the
graphs where that is exactly what caskade does (no sub-graphs, no ``valid`` context, graph
unchanged since it was built); otherwise it calls caskade. ``tests/test_activation.py`` checks
the two paths give the same values, gradients and final graph state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import caskade as ck
import torch

from .errors import ParameterVectorError

__all__ = ["Activation"]

_ACTIVE = "active"  # caskade's memo for "inside a simulation" (Node.active)


class Activation:
    """Evaluate ``body()`` with the dynamic Params of ``root`` holding ``values``.

    Equivalent to ``with caskade.ActiveContext(root): root.fill_params(values); body()`` for a
    root that is not already active, outside ``torch.compile``, and whose graph has no
    sub-graphs; otherwise it calls ``fallback(values)`` (caskade's path). If the root's dynamic
    Params are no longer those it was made with, the value lists no longer fit them: it raises
    :class:`~skyfit.errors.ParameterVectorError` (on either path).
    """

    def __init__(self, root: ck.Module):
        self.root = root
        self._build()
        self._layout = self._dynamic  # the Params the caller's value lists are made for

    def _build(self) -> None:
        root = self.root
        nodes = tuple(root.topological_ordering())
        self._dynamic = root.dynamic_params  # caskade rebuilds this tuple when the graph changes
        self._params = tuple(root.all_params)
        self._memos = tuple(node._memos for node in nodes)
        self._tag = f"{root.name}_active"  # the memo that makes nested @forward calls "online"
        self._resets = tuple(node.reset_active_cache for node in nodes
                             if hasattr(node, "reset_active_cache"))
        # sub-graphs get memos with a per-child suffix and a batch-depth rule: left to caskade.
        # (caskade does not rebuild its tuples when an already linked child is made a sub-graph
        # by hierarchical_link; build a new Posterior after such a change.) Several parameter
        # groups take one value sequence per group; Posterior refuses them, this falls back
        self._supported = (len(root.dynamic_param_groups) == 1 and not any(
            isinstance(node, ck.Module) and node.subgraphs for node in nodes))

    def usable(self) -> bool:
        # dynamo cannot trace the identity test below: under torch.compile caskade's own
        # context is traced instead (and compiled code has no per-call Python cost to cut)
        if torch.compiler.is_compiling():
            return False
        root = self.root
        if root.dynamic_params is not self._dynamic:  # the graph changed: look at it again
            self._build()
            if self._dynamic != self._layout:
                raise ParameterVectorError(
                    f"the model's dynamic parameters changed after this was built "
                    f"({len(self._layout)} then, {len(self._dynamic)} now: "
                    f"{[p.name for p in self._dynamic]}); build it again (e.g. a new Posterior)")
        return self._supported and not root._memos and not root.valid_context

    def __call__(self, values: Sequence[torch.Tensor], body: Callable[[], torch.Tensor],
                 fallback: Callable[[Sequence[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        if not self.usable():
            return fallback(values)
        if len(values) != len(self._dynamic):
            raise ParameterVectorError(f"{len(values)} values for {len(self._dynamic)} dynamic "
                                       f"Params")
        tag = self._tag
        for memos in self._memos:
            memos.add(_ACTIVE)
            memos.add(tag)
        try:
            for param, value in zip(self._dynamic, values):
                param.__dict__["_value"] = value  # a tensor: Node.__setattr__'s linking is moot
            return body()
        finally:
            for param in self._params:
                param.__dict__["_value"] = None
            for memos in self._memos:
                memos.discard(tag)
                memos.discard(_ACTIVE)
            for reset in self._resets:
                reset()
