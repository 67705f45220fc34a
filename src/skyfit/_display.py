"""Concise text and HTML displays: parameter tables of modules, summary tables of results.

A display never prints a whole matrix or history: at most :data:`MAX_ROWS` rows, one per
parameter, the rest counted.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import caskade as ck
import torch

from ._graph import node_paths, short_names

__all__ = ["Table", "ModuleDisplay", "format_value"]

MAX_ROWS = 30


def format_value(value) -> str:
    """A short text form of a number, tensor or array: 4 significant digits, vectors of up to
    4 entries in full, larger ones by shape."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if not hasattr(value, "shape"):
        return str(value)
    if tuple(value.shape) == ():
        return f"{float(value):.4g}"
    if value.ndim == 1 and value.shape[0] <= 4:
        return "[" + ", ".join(f"{float(v):.4g}" for v in value) + "]"
    return f"<{'x'.join(str(n) for n in value.shape)} values>"


class Table:
    """A titled table of rows of strings, shown as text (``str``) or HTML (``html()``)."""

    def __init__(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]):
        self.title, self.header = title, list(header)
        self.rows = [list(map(str, row)) for row in rows[:MAX_ROWS]]
        self.hidden = max(0, len(rows) - MAX_ROWS)

    def __str__(self) -> str:
        if not self.rows:
            return self.title
        widths = [max(len(r[i]) for r in [self.header, *self.rows])
                  for i in range(len(self.header))]
        lines = [self.title,
                 "  " + "  ".join(h.ljust(w) for h, w in zip(self.header, widths)).rstrip()]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                  for row in self.rows]
        if self.hidden:
            lines.append(f"  ... and {self.hidden} more")
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in row)
                       + "</tr>" for row in self.rows)
        more = f"<p>... and {self.hidden} more</p>" if self.hidden else ""
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" \
            if self.rows else ""
        return f"<div><strong>{esc(self.title)}</strong>{table}{more}</div>"


def _state(param: ck.Param) -> str:
    return "pointer" if param.pointer else "dynamic" if param.dynamic else "static"


def _param_value(param: ck.Param) -> str:
    if param.pointer:  # evaluating it may be costly or need the graph active
        function = param._Param__value
        target = [c.name for c in param.children.values() if isinstance(c, ck.Param)]
        if "Param.to_pointer" in getattr(function, "__qualname__", ""):
            return f"-> {target[0]}"
        return f"= {type(function).__name__}(...)"
    return format_value(param.value)


def module_table(module: ck.Module) -> Table:
    """The parameter table of ``module``: name, value, units, state (dynamic/static/pointer)."""
    paths = {node: path for node, path in node_paths(module).items()
             if isinstance(node, ck.Param)}  # breadth-first: the graph's order
    params = list(paths)
    names = short_names(list(paths.values()))
    rows = [(name, _param_value(p), getattr(p, "units", None) or "", _state(p))
            for name, p in zip(names, params)]
    counts = {s: sum(_state(p) == s for p in params) for s in ("dynamic", "static", "pointer")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no parameters"
    title = f"{type(module).__name__} {module.name!r}: {summary}"
    return Table(title, ["parameter", "value", "units", "state"], rows)


class ModuleDisplay:
    """Mixin of skyfit's modules: ``repr`` and the notebook's HTML are the parameter table."""

    def __repr__(self) -> str:
        # torch's transforms call repr(module) while tracing (vmap names its function): no
        # values can be read then
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return f"{type(self).__name__}({self.name})"
        return str(module_table(self))

    def _repr_html_(self) -> str:
        return module_table(self).html()


def tensor_rows(names: Sequence[str], columns: dict[str, torch.Tensor | Sequence]) -> list:
    """Rows ``[name, column values...]`` for a summary table of per-parameter columns."""
    return [[name, *(format_value(float(col[i])) for col in columns.values())]
            for i, name in enumerate(names)]
