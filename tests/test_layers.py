"""Imports point one way, heavy optional packages load lazily, and the namespace is explicit.

The walker reads every module of ``src/skyfit`` with ``ast`` (nothing is imported), so a wrong
import is found even inside a function body, where it would only fail at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layer of each subpackage or module (the longest matching prefix wins), from the bottom up.
# Top-level private modules (``skyfit._name``) are core helpers unless listed.
LAYER_OF = {
    "skyfit.errors": "core",
    "skyfit.params": "core",
    "skyfit.units": "core",
    "skyfit.data": "core",  # observed tables (Photometry): no models
    "skyfit.instruments": "instruments",
    "skyfit.sources": "sources",
    "skyfit.lightcurves": "lightcurves",
    "skyfit.spectra": "spectra",
    "skyfit.lenses": "lenses",
    "skyfit.generative": "generative",
    "skyfit.scenes": "scenes",
    "skyfit.inference": "inference",
    "skyfit.likelihoods": "posterior",
    "skyfit.likelihoods_photometry": "posterior",
    "skyfit.priors": "posterior",
    "skyfit.posterior": "posterior",
    "skyfit.survey": "posterior",  # many objects of one Posterior; Dask over chunks
    "skyfit.lightcurve_anchored": "posterior",  # a Villar posterior in other coordinates
    "skyfit._anchored_rise": "posterior",  # lightcurve_anchored's rise equations
    "skyfit.lens_start": "posterior",  # a start strategy for lens-image posteriors
    "skyfit.plots": "plots",
    "skyfit.io": "io",
    "skyfit.amortized": "amortized",
    "skyfit.examples": "examples",
    "skyfit.cli": "app",
    "skyfit.lightcurve_fit": "app",
    "skyfit.lightcurve_report": "app",
    "skyfit.__main__": "app",
    "skyfit": "namespace",  # the package's __init__: the public names, re-exported
}
_MODULES = {"instruments", "sources", "lightcurves", "spectra", "lenses", "generative"}
_BELOW_EXAMPLES = {"core", *_MODULES, "scenes", "inference", "posterior", "plots"}
# What each layer may import besides itself. The inference layer sees a LogDensity and plain
# arrays only: no astronomy, no plots; a posterior implements its LogDensity interface.
MAY_IMPORT = {
    "core": {"core"},
    "instruments": {"core"},
    "sources": {"core"},
    "lightcurves": {"core"},
    "spectra": {"core"},
    "lenses": {"core"},
    "generative": {"core", "instruments", "sources"},  # training stamps are Sersic profiles
    "scenes": {"core", *_MODULES - {"generative"}},
    "inference": {"core"},
    "posterior": {"core", *_MODULES, "scenes", "inference"},
    "plots": {"core", *_MODULES, "scenes", "inference"},  # figures of results and modules
    # files of models and results: every module class, and the result types
    "io": {"core", *_MODULES, "scenes", "inference", "posterior"},
    # simulates from a Posterior, trains flows, checks them against its exact density
    "amortized": {"core", *_MODULES, "scenes", "inference", "posterior"},
    "namespace": _BELOW_EXAMPLES | {"io", "namespace"},
    # the public API and its modules
    "examples": _BELOW_EXAMPLES | {"io", "namespace", "examples"},
    "app": _BELOW_EXAMPLES | {"io", "namespace", "examples", "app"},
}
# Known single imports against the direction, each with the reason it is still here. The test
# below fails once one is no longer made, so that the exception is removed with it.
EXCEPTIONS: dict[tuple[str, str], str] = {}
# Imported only inside the functions that use them: each is slow to import or optional.
LAZY = ("astropy", "safetensors", "arviz", "matplotlib", "h5py", "zuko", "corner", "graphviz",
        "pandas", "xarray", "distributed", "dask", "pyarrow")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1].startswith("_") and module not in LAYER_OF:
        return "core"
    for n in range(len(parts), 1 if len(parts) > 1 else 0, -1):  # "skyfit" matches itself only
        prefix = ".".join(parts[:n])
        if prefix in LAYER_OF:
            return LAYER_OF[prefix]
    raise KeyError(module)


def _layer_or_none(module: str) -> str | None:
    try:
        return layer_of(module)
    except KeyError:
        return None


def module_name(path: Path, src: Path = SRC) -> str:
    name = ".".join(path.relative_to(src).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _is_module(name: str, src: Path) -> bool:
    path = src.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, src: Path) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    # "from package import sub" imports the submodule; "from package import Name", the package
    return [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}", src) else base
            for alias in node.names]


def imports_of(path: Path, src: Path = SRC) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at import time)`` for every import statement in ``path``;
    imports inside a function body run only when it is called (not at import time)."""
    module = module_name(path, src)
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, eager: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, eager) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.extend((name, child.lineno, eager)
                             for name in _resolve(module, path.name == "__init__.py", child, src))
            visit(child, eager and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def _sources(src: Path = SRC) -> list[Path]:
    return sorted((src / "skyfit").rglob("*.py"))


def _internal(name: str) -> bool:
    return name == "skyfit" or name.startswith("skyfit.")


def layer_violations(src: Path = SRC) -> tuple[list[str], set[tuple[str, str]]]:
    """Imports against the direction as messages, and the listed exceptions seen."""
    bad, used = [], set()
    for path in _sources(src):
        module = module_name(path, src)
        own = LAYER_OF.get(module) or _layer_or_none(module)
        for name, line, _ in imports_of(path, src):
            if not _internal(name) or own is None:
                continue  # a module without a layer fails test_every_module_has_a_layer
            target = _layer_or_none(name)
            if target == own or target in MAY_IMPORT[own]:
                continue
            pair = next(((m, t) for m, t in EXCEPTIONS if m == module and name.startswith(t)), None)
            if pair:
                used.add(pair)
                continue
            bad.append(f"{path.relative_to(src)}:{line}: {module} ({own}) imports {name} "
                       f"({target})")
    return bad, used


def test_every_module_has_a_layer():
    unknown = []
    for path in _sources():
        for name in [module_name(path)] + [n for n, _, _ in imports_of(path) if _internal(n)]:
            try:
                layer_of(name)
            except KeyError:
                unknown.append(name)
    assert not unknown, f"add these to LAYER_OF: {sorted(set(unknown))}"


def test_imports_point_one_way():
    bad, _ = layer_violations()
    assert not bad, "imports against the layer direction:\n" + "\n".join(bad)


def test_the_walker_finds_imports_in_function_bodies_and_relative_imports(tmp_path):
    assert len(_sources()) > 50  # it reads the real tree, not an empty one
    pkg = tmp_path / "skyfit" / "inference"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "results.py").write_text(
        "from ..errors import SkyfitError\n"
        "def corner(self):\n    from ..plots import corner_plot\n"
        "def lens():\n    import skyfit.lenses.models\n")
    bad, _ = layer_violations(tmp_path)
    assert [b.split(": ", 1)[1] for b in bad] == [
        "skyfit.inference.results (inference) imports skyfit.plots (plots)",
        "skyfit.inference.results (inference) imports skyfit.lenses.models (lenses)"]


def test_listed_exceptions_are_still_needed():
    _, used = layer_violations()
    stale = set(EXCEPTIONS) - used
    assert not stale, f"no longer imported, remove from EXCEPTIONS: {sorted(stale)}"


def test_heavy_packages_are_imported_inside_functions_only():
    eager = []
    for path in _sources():
        for name, line, at_import in imports_of(path):
            if at_import and name.split(".")[0] in LAZY:
                eager.append(f"{path.relative_to(SRC)}:{line}: {name}")
    assert not eager, "import these inside the functions that use them:\n" + "\n".join(eager)


def test_import_skyfit_loads_no_heavy_package():
    # what torch and caskade load themselves (caskade loads h5py) is not skyfit's to defer
    code = ("import sys, torch, caskade; before = set(sys.modules); "
            "import skyfit, skyfit.plots, skyfit.examples; "
            f"print(sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & "
            f"set({LAZY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(SRC), "PATH": ""}).stdout
    assert out.strip() == "[]", out


# -- the public namespace ------------------------------------------------------------------------
def test_namespace_is_explicit_and_small():
    import skyfit

    init = ast.parse((SRC / "skyfit" / "__init__.py").read_text())
    stars = [n.lineno for n in ast.walk(init)
             if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    assert not stars, f"star-imports in skyfit/__init__.py at lines {stars}"
    names = [n for n in skyfit.__all__ if not isinstance(getattr(skyfit, n), type(skyfit))]
    assert 40 <= len(names) <= 60, len(names)
    assert len(set(skyfit.__all__)) == len(skyfit.__all__)
    assert all(hasattr(skyfit, n) for n in skyfit.__all__)
    # any other public attribute is a submodule (bound by importing it, e.g. skyfit.examples)
    module = type(skyfit)
    extra = {n for n, v in vars(skyfit).items()
             if not n.startswith("_") and n not in skyfit.__all__ and not isinstance(v, module)}
    assert not extra, f"list these in __all__ or keep them in their submodule: {sorted(extra)}"


@pytest.mark.parametrize("sub", ["errors", "generative", "inference", "instruments", "lenses",
                                 "lightcurves", "likelihoods", "params", "plots", "posterior",
                                 "priors", "scenes", "sources", "examples"])
def test_every_subpackage_lists_its_names(sub):
    import importlib

    module = importlib.import_module(f"skyfit.{sub}")
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)
