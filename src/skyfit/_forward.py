"""``forward``: caskade's ``@forward`` with inputs bound by name, and a shorter path for calls
inside a running model."""

from __future__ import annotations

import functools
import inspect

import caskade as ck

__all__ = ["forward", "keyword_inputs"]

_BY_POSITION = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)


def keyword_inputs(method):
    """``caskade.forward(method)``, with the positional arguments of a call passed by keyword.

    Outside a running model, once a module has dynamic Params, caskade reads the last positional
    argument of a call as the parameter vector: ``lens.deflection(x, y)`` would take ``y`` for
    it. Here positional arguments are bound, in order, to the method's inputs (its arguments
    that do not name a Param of the module) and handed to caskade by keyword, so a call means
    the same with static and with dynamic Params. The parameter vector goes as ``params=``; one
    positional argument beyond all the inputs is read as the vector too (caskade's convention,
    which existing code and ``torch.vmap(module)`` use; it can no longer take an input's place).
    Calls inside a running model pass through unchanged (caskade does not read a vector then).
    """
    wrapped = ck.forward(method)
    arguments = list(inspect.signature(method).parameters.values())[1:]
    if any(a.kind in _BY_POSITION for a in arguments):
        return wrapped
    names = tuple(a.name for a in arguments if a.kind != inspect.Parameter.VAR_KEYWORD)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if not args or self.online:
            return wrapped(self, *args, **kwargs)
        children = self.children
        inputs = [n for n in names if not isinstance(children.get(n), ck.Param)]
        if len(args) == len(inputs) + 1 and "params" not in kwargs:
            *args, kwargs["params"] = args
        elif len(args) > len(inputs):
            raise TypeError(f"{type(self).__name__}.{method.__name__}() takes {len(inputs)} "
                            f"positional input(s) {tuple(inputs)} and a parameter vector, but "
                            f"{len(args)} arguments were given: give Param values by keyword")
        for name, value in zip(inputs, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}.{method.__name__}() got multiple "
                                f"values for argument '{name}'")
            kwargs[name] = value
        return wrapped(self, **kwargs)

    return call


def forward(method):
    """Decorate a Module method as ``caskade.forward`` does, with a shorter path for one case.

    For a call made inside a running simulation (the module "online"), caskade's wrapper opens
    an ``ExitStack``, scans the keyword arguments for Param overrides and matches every argument
    name of the method against the module's children, for each of the several such calls of a
    log-density evaluation. When such a call passes no keyword that names a Param of the module,
    this fills the method's Param arguments from the module's Params directly, which is what
    caskade does then too. Every other call (one that starts a simulation, overrides a Param
    by keyword, finds a Param without a value; modules with sub-graphs) goes to caskade's
    wrapper (through :func:`keyword_inputs`), which also raises caskade's errors.
    """
    wrapped = keyword_inputs(method)
    names = tuple(inspect.signature(method).parameters)[1:]

    @functools.wraps(method)
    def fast(self, *args, **kwargs):
        memos = self._memos
        if not memos or self._subgraphs or not any(m.endswith("_active") for m in memos):
            return wrapped(self, *args, **kwargs)
        children = self._children
        # caskade overrides any Param of the module named by a keyword, in the signature or not;
        # checked before any Param is read (reading a pointer Param caches its value)
        if kwargs and any(isinstance(children.get(key), ck.Param) for key in kwargs):
            return wrapped(self, *args, **kwargs)
        filled = {}
        for name in names:
            param = children.get(name)
            if isinstance(param, ck.Param):
                value = param.value
                if value is None:
                    return wrapped(self, *args, **kwargs)
                filled[name] = value
        return method(self, *args, **kwargs, **filled)

    return fast
