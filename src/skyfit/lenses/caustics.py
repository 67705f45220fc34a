"""Critical curves (``det A = 0`` in the image plane) and caustics (their source-plane images)."""

from __future__ import annotations

import contourpy
import torch

from .base import ThinLens

__all__ = ["critical_curves"]


def critical_curves(lens: ThinLens, extent=(-3.0, 3.0, -3.0, 3.0), n: int = 400):
    """Critical curves and caustics of ``lens`` inside ``extent = (left, right, bottom, top)``.

    ``det A`` is evaluated on an ``n x n`` grid and contoured at zero (marching squares, by
    contourpy); every curve is then ray traced to the source plane. The zero of ``det A`` at a
    singular centre (an isothermal core) is not a critical curve and is dropped.

    Returns:
        ``(critical, caustics)``: two lists of ``(x, y)`` tensors (arcsec), one per curve.

    Example:
        >>> from skyfit import SIS
        >>> crit, caus = critical_curves(SIS(theta_E=1.0), n=200)
        >>> x, y = crit[0]
        >>> round(torch.hypot(x, y).mean().item(), 3)  # the Einstein ring
        1.0
    """
    left, right, bottom, top = (float(v) for v in extent)
    with torch.no_grad():
        xs = torch.linspace(left, right, n, dtype=torch.float64)
        ys = torch.linspace(bottom, top, n, dtype=torch.float64)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        det = 1 / lens.magnification(x=gx, y=gy)
        lines = contourpy.contour_generator(xs.numpy(), ys.numpy(), det.numpy()).lines(0.0)
        step = max((right - left), (top - bottom)) / (n - 1)
        critical, caustics = [], []
        for line in lines:
            x, y = torch.as_tensor(line[:, 0]), torch.as_tensor(line[:, 1])
            if len(x) < 4 or max(float(x.max() - x.min()), float(y.max() - y.min())) < 2 * step:
                continue  # a grid-scale contour around a singular centre
            critical.append((x, y))
            caustics.append(tuple(t.detach() for t in lens.raytrace(x=x, y=y)))
    return critical, caustics
