"""``Param``: caskade's Param, with float64 as the default dtype for plain Python numbers."""

from __future__ import annotations

import numbers

import caskade as ck
import torch

__all__ = ["Param"]


def _is_plain_number(value) -> bool:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(_is_plain_number(v) for v in value)
    return False


class Param(ck.Param):
    """A ``caskade.Param`` whose plain Python numbers become float64 tensors.

    torch turns ``0.06`` into float32 by default, which would make every fixed parameter of a
    float64 inference slightly off (``0.06`` is ``0.0599999986`` in float32). Tensors keep their
    own dtype, so float32 models are built by passing float32 tensors or by
    ``module.to(dtype=...)``.

    Example:
        >>> p = Param("flux", 0.06, valid=(0.0, None), units="e-/s", description="total flux")
        >>> p.value.dtype, p.units  # a Python number is stored in float64
        (torch.float64, 'e-/s')
    """

    def __init__(self, name: str, value=None, *args, dtype=None, **kwargs):
        if dtype is None and _is_plain_number(value):
            dtype = torch.float64
        super().__init__(name, value, *args, dtype=dtype, **kwargs)
