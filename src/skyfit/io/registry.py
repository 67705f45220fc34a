"""The classes a saved model may name: skyfit's modules and pointer functions, and the user's.

A module is rebuilt from the arguments its constructor was called with. Registering a class
wraps its ``__init__`` so that each instance records them (``_skyfit_init``: positional and
keyword arguments, or ``owned`` when it was built inside another registered constructor, which
builds it again on load). Only registered classes are ever instantiated by
:func:`~skyfit.load_model`; nothing is imported from a file's content except the modules of the
import paths the caller allows.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Iterable

import caskade as ck

from ..errors import ModelFileError

__all__ = ["register_module", "register_function", "class_key", "lookup"]

_MODULES: dict[str, type] = {}
_FUNCTIONS: dict[str, type] = {}
_building = threading.local()  # depth of registered constructors running in this thread

INIT_RECORD = "_skyfit_init"


def class_key(cls: type) -> str:
    """The name a file stores for ``cls``: its import path, ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_init(cls: type) -> None:
    init = cls.__init__
    if getattr(init, "_skyfit_records", None) is cls:
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        depth = getattr(_building, "depth", 0)
        _building.depth = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            _building.depth = depth
        if type(self) is cls:  # the outermost registered class records, once
            record = {"owned": True} if depth else {"args": args, "kwargs": kwargs}
            self.__dict__[INIT_RECORD] = record

    __init__._skyfit_records = cls
    cls.__init__ = __init__


def register_module(cls: type) -> type:
    """Make instances of the ``caskade.Module`` subclass ``cls`` savable by
    :func:`~skyfit.save_model` and loadable by :func:`~skyfit.load_model`.

    Instances built after registration record their constructor arguments; those must be plain
    values (numbers, strings, None, tensors, arrays, dtypes), other registered modules or Params,
    or lists, tuples and dicts of these. Usable as a class decorator.

    Example:
        >>> import caskade as ck
        >>> from skyfit import Param, register_module
        >>> @register_module
        ... class Line(ck.Module):
        ...     def __init__(self, slope=1.0, name=None):
        ...         super().__init__(name)
        ...         self.slope = Param("slope", slope)
        >>> Line(2.0).slope.value.item()
        2.0
    """
    if not (isinstance(cls, type) and issubclass(cls, ck.Module)):
        raise TypeError(f"register_module takes a caskade.Module subclass, got {cls!r}")
    _record_init(cls)
    _MODULES[class_key(cls)] = cls
    return cls


def register_function(cls: type) -> type:
    """Make the pointer-function class ``cls`` savable: its instances are callables ``f(p)``
    with a ``spec()`` method returning the keyword arguments that rebuild them."""
    if not (isinstance(cls, type) and callable(getattr(cls, "spec", None))):
        raise TypeError(f"register_function takes a class with a spec() method, got {cls!r}")
    _FUNCTIONS[class_key(cls)] = cls
    return cls


def lookup(key: str, kind: str, allow: Iterable[str] = ()) -> type:
    """The registered class ``key`` (``kind`` "module" or "function"); a key in ``allow`` is
    imported and registered first."""
    table = _MODULES if kind == "module" else _FUNCTIONS
    if key not in table and key in set(allow):
        module_name, _, qualname = key.rpartition(".")
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        (register_module if kind == "module" else register_function)(cls)
    if key not in table:
        raise ModelFileError(
            f"the file names {kind} class {key!r}, which is not registered: call "
            f"skyfit.register_module (or register_function) on it, or pass "
            f"allow=[{key!r}] to load_model if you trust the file")
    return table[key]


def _register_skyfit() -> None:
    """Register every module and pointer-function class of skyfit."""
    from .. import instruments, lenses, lightcurves, likelihoods, scenes, sources, spectra
    from ..lenses import pointers
    from ..lightcurves.link import LightCurveFlux

    for package in (instruments, lenses, lightcurves, scenes, sources, spectra, likelihoods):
        for name in package.__all__:
            obj = getattr(package, name)
            if isinstance(obj, type) and issubclass(obj, ck.Module):
                register_module(obj)
    for cls in (LightCurveFlux, pointers.SISEinsteinRadius, pointers.PointMassEinsteinRadius,
                pointers.NFWAngle):
        register_function(cls)


_register_skyfit()
