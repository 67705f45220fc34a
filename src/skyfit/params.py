"""``Param``: caskade's Param, with float64 as the default dtype for plain Python numbers."""

from __future__ import annotations

import numbers

import caskade as ck
import torch

from .units import from_quantity, is_quantity, to_quantity

__all__ = ["Param"]


def _is_plain_number(value) -> bool:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(_is_plain_number(v) for v in value)
    return False


def _from_quantity(param: ck.Param, value):
    if is_quantity(value):
        return from_quantity(value, getattr(param, "units", None), param.name)
    return value


class Param(ck.Param):
    """A ``caskade.Param`` whose plain Python numbers become float64 tensors, and that takes
    astropy Quantities (converted to its declared ``units``, :mod:`skyfit.units`).

    torch turns ``0.06`` into float32 by default, which would make every fixed parameter of a
    float64 inference slightly off (``0.06`` is ``0.0599999986`` in float32). Tensors keep their
    own dtype, so float32 models are built by passing float32 tensors or by
    ``module.to(dtype=...)``.

    Example:
        >>> p = Param("flux", 0.06, valid=(0.0, None), units="e-/s", description="total flux")
        >>> p.value.dtype, p.units  # a Python number is stored in float64
        (torch.float64, 'e-/s')
    """

    def __init__(self, name: str, value=None, *args, dtype=None, units=None, **kwargs):
        if is_quantity(value):
            value = from_quantity(value, units, name)
        if dtype is None and _is_plain_number(value):
            dtype = torch.float64
        super().__init__(name, value, *args, dtype=dtype, units=units, **kwargs)

    value = property(ck.Param.value.fget,
                     lambda self, value: ck.Param.value.fset(self, _from_quantity(self, value)),
                     doc=ck.Param.value.__doc__)

    def to_static(self, value=ck.param.NULL):
        """Make the Param static (fixed), optionally with a new value (a Quantity is converted
        to the declared units); caskade's ``to_static`` otherwise."""
        return super().to_static(_from_quantity(self, value))

    def to_dynamic(self, value=ck.param.NULL):
        """Make the Param dynamic (fitted), optionally with a new default value (a Quantity is
        converted to the declared units); caskade's ``to_dynamic`` otherwise."""
        return super().to_dynamic(_from_quantity(self, value))

    def quantity(self):
        """The value as an astropy Quantity in the declared units."""
        return to_quantity(self.value, getattr(self, "units", None))
