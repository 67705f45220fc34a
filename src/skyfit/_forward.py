"""``forward``: caskade's ``@forward`` with positional inputs bound by name.

Only caskade's public API is used (``caskade.forward``, ``Module.children``, ``Module.online``).
"""

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
    """caskade's ``@forward`` for skyfit's modules: :func:`keyword_inputs` (inputs bound by name,
    through ``caskade.forward``), nothing more."""
    return keyword_inputs(method)
