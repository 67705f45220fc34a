"""Base class of extended light sources."""

from __future__ import annotations

import caskade as ck

from .._display import ModuleDisplay

__all__ = ["Source"]


class Source(ModuleDisplay, ck.Module):
    """An extended source: surface brightness (flux / arcsec^2) at any sky coordinates.

    Subclasses implement ``brightness(x, y)`` as a ``@forward`` method. Parameters may carry
    leading batch dimensions (for instance a flux per epoch, shape ``(n_epochs,)``); the result
    then has shape ``batch + x.shape``. Lensing ray-traces a source by calling ``brightness`` at
    deflected coordinates, so any ``Source`` can be lensed.

    Example:
        >>> import torch
        >>> from skyfit import Gaussian
        >>> g = Gaussian(sigma=1.0, flux=2 * torch.pi)  # peak brightness flux / (2 pi sigma^2)
        >>> isinstance(g, Source), round(g.brightness(torch.zeros(1), torch.zeros(1)).item(), 6)
        (True, 1.0)
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "brightness", None)):
            raise TypeError(f"{cls.__name__} must define a @forward brightness(x, y) method")
