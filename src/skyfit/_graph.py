"""The module graph: containers that hold children by position, and deterministic Param names.

Names are built from the graph's structure (link keys, module and Param names, positions in
containers), never from object identities, so the same model built again, in this process or
another, gets the same names.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence

import caskade as ck
import torch

__all__ = ["ModuleList", "node_paths", "param_paths", "short_names", "data_arrays"]


class ModuleList(ck.NodeList):
    """A caskade ``NodeList`` that links its elements by position, not by name.

    caskade's own ``NodeList`` links each element under its name, so two unnamed modules of one
    class (``[Sersic(), Sersic()]``, both named ``"Sersic"``) collide. Here element ``i`` is
    linked under ``f"{element.name}_{i}"``; in parameter names it is ``key.i`` (``sources.0``).
    Slices and sums are plain lists (caskade's would link their elements again, by name).
    """

    def link(self, key, child=None):
        if child is None and isinstance(key, ck.Node):
            child = key
            position = next(i for i, node in enumerate(self) if node is child)
            key = f"{child.name}_{position}"
        super().link(key, child)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return list.__getitem__(self, key)
        return super().__getitem__(key)

    def __add__(self, other):
        return list(self) + list(other)


def _edges(node: ck.Node) -> Iterator[tuple[str, ck.Node]]:
    """``(key, child)`` for the children of ``node``; a container's elements stand for the
    container, keyed ``container_key.position`` (``container_key.key`` in a ``NodeDict``)."""
    for key, child in node.children.items():
        yield from _expand(key, child)


def _expand(key: str, node: ck.Node) -> Iterator[tuple[str, ck.Node]]:
    if isinstance(node, ck.NodeDict):
        items: Iterable = dict.items(node)
    elif isinstance(node, (ck.NodeList, ck.NodeTuple)):
        items = enumerate(node)
    else:
        yield key, node
        return
    for index, element in items:
        yield from _expand(f"{key}.{index}", element)


def node_paths(root: ck.Node) -> dict[ck.Node, tuple[str, ...]]:
    """The path of every node below ``root`` (root included), in breadth-first order; see
    :func:`param_paths` for how a path is made."""
    paths: dict[ck.Node, tuple[str, ...]] = {root: (root.name,)}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        edges = list(_edges(node))
        names = Counter(child.name for _, child in edges)
        for key, child in edges:
            if child not in paths:
                segment = child.name if names[child.name] == 1 else key
                paths[child] = paths[node] + (segment,)
                queue.append(child)
    return paths


def param_paths(root: ck.Node, params: Sequence[ck.Param]) -> list[tuple[str, ...]]:
    """The path of each of ``params`` from ``root``: one segment per node, root first.

    A node's segment is its name, or, when a sibling (another child of the same parent, the
    elements of the parent's containers included) has the same name, the key it is linked
    under: ``"a"`` for ``self.a = Sersic()``, ``"sources.1"`` for element 1 of ``sources``.
    A node reachable along several paths (a module shared by two scenes) takes the shortest,
    the first in the order the children were linked (breadth-first search).
    """
    paths = node_paths(root)
    missing = [p.name for p in params if p not in paths]
    if missing:
        raise ValueError(f"Params {missing} are not in the graph below {root.name}")
    return [paths[p] for p in params]


def short_names(paths: Sequence[tuple[str, ...]]) -> list[str]:
    """For each path, its shortest suffix of at least two segments (``module.param``) that no
    other path ends with, joined by dots."""
    names = []
    for i, path in enumerate(paths):
        others = [other for j, other in enumerate(paths) if j != i]
        for length in range(min(2, len(path)), len(path) + 1):
            suffix = path[-length:]
            if all(other[-length:] != suffix for other in others):
                break
        names.append(".".join(suffix))
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:  # only a Param listed twice can get here: distinct nodes have distinct paths
        raise ValueError(f"parameters {repeated} appear more than once")
    return names


def data_arrays(root: ck.Node) -> dict[str, torch.Tensor]:
    """The tensors that fix a model's data and constants, keyed by path (``root.attr``): every
    module's public tensor attributes (data, variances, masks, times) and every static Param's
    value. Dynamic Params (the values being fitted) and linked Params (functions of others) are
    left out, and so are private attributes (caches). Used to fingerprint a problem."""
    out: dict[str, torch.Tensor] = {}
    for node, path in node_paths(root).items():
        key = ".".join(path)
        if isinstance(node, ck.Param):
            value = node.value if node.static else None
            if isinstance(value, torch.Tensor):
                out[key] = value
        elif isinstance(node, ck.Module):
            out.update((f"{key}.{attr}", value) for attr, value in vars(node).items()
                       if isinstance(value, torch.Tensor) and not attr.startswith("_"))
    return out
