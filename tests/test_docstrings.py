"""Every public name documents itself: docstrings, examples, and Params with units and meaning.

"Public" is read from each subpackage's ``__all__`` (not from ``skyfit.__all__``), so the test
follows the namespace wherever the top-level re-exports go; these are also the names the API
reference (docs/hooks.py) renders.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap

import caskade as ck
import pytest
import torch

PUBLIC_MODULES = [
    "skyfit.sources", "skyfit.lightcurves", "skyfit.lenses", "skyfit.instruments",
    "skyfit.scenes", "skyfit.likelihoods", "skyfit.priors", "skyfit.posterior", "skyfit.params",
    "skyfit.inference", "skyfit.generative", "skyfit.plots", "skyfit.errors", "skyfit.data",
    "skyfit.amortized", "skyfit.spectra",
]


def _public():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", module, name, getattr(module, name)


PUBLIC = list(_public())
CLASSES = [(path, obj) for path, _, _, obj in PUBLIC if inspect.isclass(obj)]


def _own_doc(obj) -> str | None:
    """The docstring written for ``obj`` itself (a class's is not inherited from its base)."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


def _attribute_doc(module, name: str) -> str | None:
    """The string literal right after ``name = ...`` in the module that defines ``name``."""
    tree = ast.parse(inspect.getsource(module))
    body = tree.body
    for stmt, after in zip(body, body[1:]):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
                after, ast.Expr) and isinstance(after.value, ast.Constant):
            return after.value.value
    return None


def _docstring(module, name: str, obj) -> str | None:
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
        return _own_doc(obj)
    # a constant: documented by the string after its assignment, in the module that defines it
    for home in (module, *[importlib.import_module(m) for m in _submodules(module)]):
        doc = _attribute_doc(home, name)
        if doc:
            return doc
    return None


def _submodules(module) -> list[str]:
    import pkgutil
    if not hasattr(module, "__path__"):
        return []
    return [f"{module.__name__}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]


@pytest.mark.parametrize("path, module, name, obj", PUBLIC, ids=[p[0] for p in PUBLIC])
def test_public_name_has_docstring(path, module, name, obj):
    doc = _docstring(module, name, obj)
    assert doc and doc.strip(), f"{path} has no docstring"


def _public_methods(cls):
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            yield name, member.fget
        elif isinstance(member, (staticmethod, classmethod)):
            yield name, member.__func__
        elif inspect.isfunction(member):
            yield name, member


METHODS = [(f"{path}.{name}", fn) for path, cls in CLASSES for name, fn in _public_methods(cls)]


@pytest.mark.parametrize("path, fn", METHODS, ids=[m[0] for m in METHODS])
def test_public_method_has_docstring(path, fn):
    assert fn.__doc__ and fn.__doc__.strip(), f"{path} has no docstring"


def _needs_example(obj) -> bool:
    # exceptions and warnings are documented by when they are raised, not by an example
    if inspect.isclass(obj):
        return not issubclass(obj, (BaseException, Warning))
    return inspect.isfunction(obj)


def test_every_public_class_and_function_has_an_example():
    missing = {path for path, _, _, obj in PUBLIC
               if _needs_example(obj) and "Example:" not in textwrap.dedent(_own_doc(obj) or "")}
    assert not missing, f"public names without an Example: section: {sorted(missing)}"


def test_public_names_found():
    # a broken walk would pass every test above vacuously
    assert len(PUBLIC) > 100 and len(METHODS) > 100


# Module classes that need arguments: a small instance of each, for the Param check below
def _builders():
    import skyfit

    grid = skyfit.PixelGrid((8, 8), pixel_scale=0.1)
    stamp = torch.ones(5, 5, dtype=torch.float64)
    lens = skyfit.SIE()
    geometry = skyfit.LensGeometry(z_l=0.5, z_s=2.0)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return {
        "Pixelated": lambda: skyfit.Pixelated(values=stamp),
        "PixelatedPSF": lambda: skyfit.PixelatedPSF(kernel=stamp / stamp.sum()),
        "PixelGrid": lambda: grid,
        "NonCentredPopulation": lambda: skyfit.lightcurves.NonCentredPopulation("pop", 2),
        "StellarSpectrum": lambda: _stellar_spectrum(),
        "Scene": lambda: skyfit.Scene(grid, [skyfit.Sersic()], skyfit.GaussianPSF(size=5)),
        "ImageStack": lambda: skyfit.ImageStack([skyfit.Scene(grid, [skyfit.Gaussian()])]),
        "LensedImage": lambda: skyfit.LensedImage(grid, lens, [skyfit.Sersic()]),
        "LensedSource": lambda: skyfit.LensedSource(lens, [skyfit.Sersic()]),
        "LensedPointSource": lambda: skyfit.LensedPointSource(lens, geometry),
        "LensedSupernova": lambda: skyfit.LensedSupernova(
            lens, geometry, skyfit.GaussianLightCurve(), times),
        "GaussianLikelihood": lambda: skyfit.GaussianLikelihood(
            skyfit.Scene(grid, [skyfit.Gaussian()]), torch.zeros(8, 8, dtype=torch.float64),
            variance=torch.ones(8, 8, dtype=torch.float64)),
        "PoissonLikelihood": lambda: skyfit.PoissonLikelihood(
            skyfit.Scene(grid, [skyfit.Gaussian()]), torch.zeros(8, 8, dtype=torch.float64),
            exposure_time=10.0),
        "PhotometryLikelihood": lambda: skyfit.PhotometryLikelihood(
            skyfit.GaussianLightCurve(), times, times, times + 1.0),
    }


# built elsewhere with a trained network (tests/test_generative_source.py); their Params are
# those of the sources above plus a latent vector
NOT_BUILT = {"VAESource"}

MODULE_CLASSES = [(path, obj) for path, obj in CLASSES
                  if issubclass(obj, ck.Module) and obj.__name__ not in NOT_BUILT]


def _params(module: ck.Module):
    seen, stack = set(), [module]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ck.Param):
            yield node
        stack.extend(node.children.values())


@pytest.mark.parametrize("path, cls", MODULE_CLASSES, ids=[c[0] for c in MODULE_CLASSES])
def test_params_have_units_and_description(path, cls):
    builders = _builders()
    try:
        module = builders[cls.__name__]() if cls.__name__ in builders else cls()
    except TypeError as error:
        pytest.fail(f"{path} cannot be built with defaults ({error}); add it to _builders()")
    params = list(_params(module))
    without_params = {"ThinLens", "CompositeLens", "PSF", "Source", "LightCurve", "PixelGrid",
                      "AstropyCosmology"}  # distances from astropy: no Params
    assert params or cls.__name__ in without_params, f"{path}: no Params found"
    for param in params:
        assert param.description, f"{path}: Param {param.name!r} has no description"
        assert param.units, (f"{path}: Param {param.name!r} has no units "
                             "(write units='dimensionless' for a pure number)")


def _stellar_spectrum():
    from skyfit.spectra import StellarSpectrum, synthetic_line_list

    return StellarSpectrum(synthetic_line_list())
