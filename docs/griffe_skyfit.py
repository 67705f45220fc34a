"""A griffe extension that reads skyfit's docstrings as written and hands mkdocstrings Markdown.

skyfit's docstrings follow zuko's style (``Arguments:`` / ``Example:`` with doctests) and use
Sphinx roles (``:class:`~skyfit.Sersic```) and several short items per line
(``x0, y0: centre (arcsec). q: axis ratio.``), which read well in ``help()``. This extension
rewrites them at build time only, so the source keeps one form:

- ``Example:`` becomes ``Examples:`` (griffe's Google parser knows only the plural as the
  doctest section);
- in ``Arguments:`` / ``Attributes:`` sections, ``a, b: text. c: text`` becomes one item per
  name (``a`` and ``b`` share their text), so every name renders and griffe can warn about a
  name that is not in the signature (a stale docstring fails ``mkdocs build --strict``);
- Sphinx roles become links to the API page that documents the name (from the subpackages'
  ``__all__``, so the links follow the namespace), or code spans where no page documents it;
- a paragraph ending in ``::`` (reST literal block) ends in ``:``;
- a function whose docstring is set at import time (the mass models' ``deflection``,
  ``convergence`` and ``potential``, from ``skyfit.lenses.base.MODEL_METHOD_DOCS``) gets that
  docstring, which static analysis cannot see.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re

import griffe

# the modules with an API page (docs/api/*.md); a public name links to the first that exports it
DOCUMENTED_MODULES = [
    "skyfit.sources", "skyfit.lightcurves", "skyfit.lenses", "skyfit.instruments",
    "skyfit.scenes", "skyfit.likelihoods", "skyfit.priors", "skyfit.posterior", "skyfit.params",
    "skyfit.inference", "skyfit.generative", "skyfit.plots", "skyfit.errors",
]

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj|exc|py:\w+):`(~?)([^`]+)`")
_HEADER = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_NAMES = r"(?:[*]{0,2}[A-Za-z_]\w*)(?:, [*]{0,2}[A-Za-z_]\w*)*"
_ITEM = re.compile(rf"^(\s*)({_NAMES})( \([^)]*\))?: (.*)$")
# a new item inside a line: after ". " or "; ", a name (or "a, b") then ": "
_NEXT = re.compile(r"(?<=[.;]) (?=(?:[A-Za-z_]\w*)(?:, [A-Za-z_]\w*)*: )")
_ITEM_SECTIONS = {"Arguments", "Args", "Parameters", "Attributes"}


def documented_names() -> dict[str, str]:
    """Public name -> the identifier of its entry in the API reference."""
    names: dict[str, str] = {}
    for module_name in DOCUMENTED_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            names.setdefault(name, api_identifier(module_name, name))
    return names


def api_identifier(module_name: str, name: str) -> str:
    """The identifier under which the API reference documents ``module_name.name``.

    A name that is also a submodule of its package (``skyfit.inference.laplace``, the function
    and its file) is documented from that submodule, where griffe sees the function.
    """
    if importlib.util.find_spec(module_name) is not None and _is_submodule(module_name, name):
        return f"{module_name}.{name}.{name}"
    return f"{module_name}.{name}"


def _is_submodule(module_name: str, name: str) -> bool:
    module = importlib.import_module(module_name)
    if not hasattr(module, "__path__"):
        return False
    return importlib.util.find_spec(f"{module_name}.{name}") is not None


def role_to_markdown(tilde: str, target: str, names: dict[str, str]) -> str:
    """A Sphinx role's target as an autorefs link when a page documents it, else a code span."""
    target = target.lstrip(".").removesuffix("()")
    title = target.rsplit(".", 1)[-1] if tilde else target
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part in names:
            identifier = names[part]
            rest = parts[i + 1:]
            if rest and _is_own_public(identifier, rest[0]):
                identifier += "." + rest[0]
            return f"[`{title}`][{identifier}]"
    return f"`{title}`"


def _is_own_public(identifier: str, attribute: str) -> bool:
    """Whether ``attribute`` is defined in the class body of ``identifier`` (so it has an entry)."""
    module_name, _, name = identifier.rpartition(".")
    obj = getattr(importlib.import_module(module_name), name, None)
    return not attribute.startswith("_") and attribute in getattr(obj, "__dict__", {})


def split_items(lines: list[str]) -> list[str]:
    """Lines of a docstring with several ``name: text`` items per line split into one per line."""
    out: list[str] = []
    section, indent = None, ""
    for line in lines:
        header = _HEADER.match(line)
        if header:
            section = header.group(2) if header.group(2) in _ITEM_SECTIONS else None
            indent = header.group(1) + "    "
            out.append(line)
            continue
        deeper = line[len(indent):len(indent) + 1] == " "  # an item's text going on
        if section is None or not line.startswith(indent) or deeper:
            if section is not None and line.strip() and not line.startswith(indent):
                section = None
            out.append(line)
            continue
        pieces = _NEXT.split(line[len(indent):])
        if out and not _ITEM.match(indent + pieces[0]):  # the previous item's text goes on
            out.append(indent + "    " + pieces.pop(0))
        for piece in pieces:
            out.extend(_expand_names(indent + piece))
    return out


def _expand_names(line: str) -> list[str]:
    """``a, b (unit): text`` as two items with the same text."""
    item = _ITEM.match(line)
    if not item or "," not in item.group(2):
        return [line]
    indent, names, kind, text = item.groups()
    return [f"{indent}{name}{kind or ''}: {text}" for name in names.split(", ")]


def markdown_docstring(text: str, names: dict[str, str]) -> str:
    """skyfit's docstring text as griffe's Google parser and Markdown expect it."""
    text = re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", text, flags=re.M)
    text = _ROLE.sub(lambda m: role_to_markdown(m.group(1), m.group(2), names), text)
    text = re.sub(r"(?<=\S)::\s*$", ":", text, flags=re.M)
    return "\n".join(split_items(text.split("\n")))


def runtime_docstring(path: str) -> str | None:
    """``__doc__`` of the object at dotted ``path``, imported (None if it cannot be reached)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name, None)
        return getattr(obj, "__doc__", None) if obj is not None else None
    return None


class SkyfitDocstrings(griffe.Extension):
    """Rewrites every docstring of the loaded package once it is loaded."""

    def __init__(self) -> None:
        self.names = documented_names()

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._visit(pkg, set())

    def _visit(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is None and obj.is_function:
            doc = runtime_docstring(obj.path)
            if doc:
                obj.docstring = griffe.Docstring(inspect.cleandoc(doc), parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value, self.names)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, seen)
