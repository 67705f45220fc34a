"""Base class of thin-lens mass models: ray tracing, Jacobian, magnification and shear."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward

__all__ = ["ThinLens"]


# the docstrings of the three methods of every mass model, given to a model's method without one
MODEL_METHOD_DOCS = {
    "deflection": "Deflection ``(alpha_x, alpha_y)`` of the {model} (arcsec) at sky position "
                  "``(x, y)`` (arcsec), scaled to the system's source plane; Params broadcast "
                  "in front of ``x``.",
    "convergence": "Convergence ``kappa`` (dimensionless) of the {model} at ``(x, y)`` (arcsec).",
    "potential": "Lensing potential ``psi`` (arcsec^2) of the {model} at ``(x, y)`` (arcsec); "
                 "its gradient is the deflection.",
}


class ThinLens(ModuleDisplay, ck.Module):
    """A mass distribution in one lens plane (the conventions are in :mod:`skyfit.lenses`).

    Subclasses define three ``@forward`` methods of sky coordinates ``x, y`` (arcsec):
    ``deflection -> (alpha_x, alpha_y)``, ``convergence -> kappa`` and ``potential -> psi``.
    Parameters may carry leading batch dimensions, which broadcast in front of the coordinate
    dimensions; to evaluate many parameter sets at once, ``torch.vmap`` over a flat parameter
    vector works too.

    Everything else derives from the deflection: :meth:`raytrace` (the lens equation
    ``beta = theta - alpha(theta)``), and, by forward-mode autograd, :meth:`jacobian`,
    :meth:`magnification`, :meth:`shear` and :meth:`hessian`, so a new mass model only writes its
    deflection (and convergence and potential, for maps and time delays).

    Calling convention: the coordinates go by position or keyword, with static or dynamic
    Params alike (``lens.deflection(x, y)`` uses the current values); a parameter vector for
    the dynamic Params goes by keyword, ``lens.deflection(x, y, params=x_vec)``.

    Models with a mass centre ``(x0, y0)`` list it in :meth:`centres`, where the image finder
    looks for (and accounts for) central images (see :func:`~skyfit.find_images`).

    Example:
        >>> import torch
        >>> from skyfit import SIS
        >>> lens = SIS(theta_E=1.0)  # writes only its deflection, convergence and potential
        >>> x, y = torch.tensor([2.0, 0.5]), torch.zeros(2)
        >>> lens.magnification(x, y)  # |theta| / (|theta| - theta_E), by autograd of the deflection
        tensor([ 2., -1.])
    """

    has_centre: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [m for m in MODEL_METHOD_DOCS if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"{cls.__name__} must define @forward methods {missing} (x, y)")
        for name, doc in MODEL_METHOD_DOCS.items():  # one wording for every model's methods
            method = cls.__dict__.get(name)
            if method is not None and not method.__doc__:
                method.__doc__ = doc.format(model=cls.__name__)

    @forward
    def centres(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(x0, y0)]`` of the mass centres (none for a shear or a sheet), current values."""
        if not self.has_centre:
            return []
        return [(self.x0.value, self.y0.value)]

    @forward
    def raytrace(self, x, y):
        """Source-plane position ``beta = theta - alpha(theta)`` of image-plane ``(x, y)``."""
        ax, ay = self.deflection(x, y)
        return x - ax, y - ay

    @forward
    def deflection_jacobian(self, x, y):
        """``(alpha, d alpha / dx, d alpha / dy)``, each a pair ``(x-component, y-component)``.

        Reverse-mode autograd (``torch.func.vjp``, so it also runs under ``torch.vmap``): the
        points are independent, so one vector-Jacobian product with a cotangent of ones per
        deflection component gives every point's derivatives. Differentiable in the parameters.
        """
        x, y = torch.broadcast_tensors(torch.as_tensor(x), torch.as_tensor(y))
        f = lambda u, v: self.deflection(u, v)  # noqa: E731
        alpha, pullback = torch.func.vjp(f, x, y)
        if alpha[0].shape != x.shape:  # parameters with batch dimensions: one point per output
            x, y = x.expand(alpha[0].shape), y.expand(alpha[0].shape)
            alpha, pullback = torch.func.vjp(f, x, y)
        one, zero = torch.ones_like(alpha[0]), torch.zeros_like(alpha[0])
        (axx, axy), (ayx, ayy) = pullback((one, zero)), pullback((zero, one))
        return alpha, (axx, ayx), (axy, ayy)

    @forward
    def hessian(self, x, y):
        """Second derivatives of the potential ``(psi_xx, psi_xy, psi_yy)`` from the deflection
        Jacobian (``psi_xy`` symmetrised)."""
        _, (axx, ayx), (axy, ayy) = self.deflection_jacobian(x, y)
        return axx, 0.5 * (axy + ayx), ayy

    @forward
    def jacobian(self, x, y):
        """Lens-mapping Jacobian ``A = d beta / d theta`` as ``(..., 2, 2)``."""
        _, (axx, ayx), (axy, ayy) = self.deflection_jacobian(x, y)
        row0 = torch.stack([1 - axx, -axy], dim=-1)
        row1 = torch.stack([-ayx, 1 - ayy], dim=-1)
        return torch.stack([row0, row1], dim=-2)

    @forward
    def magnification(self, x, y):
        """Signed magnification ``1 / det A`` (negative for saddle-point images)."""
        _, (axx, ayx), (axy, ayy) = self.deflection_jacobian(x, y)
        return 1 / ((1 - axx) * (1 - ayy) - axy * ayx)

    @forward
    def shear(self, x, y):
        """Shear ``(gamma1, gamma2) = ((psi_xx - psi_yy) / 2, psi_xy)``."""
        psi_xx, psi_xy, psi_yy = self.hessian(x, y)
        return 0.5 * (psi_xx - psi_yy), psi_xy

    @forward
    def fermat_potential(self, x, y, beta_x, beta_y):
        """``|theta - beta|^2 / 2 - psi(theta)`` (arcsec^2); differences are time delays."""
        return 0.5 * ((x - beta_x) ** 2 + (y - beta_y) ** 2) - self.potential(x, y)
