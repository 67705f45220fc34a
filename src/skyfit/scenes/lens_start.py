"""A data-driven start for strong-lens image fits: the Einstein radius from the lensed light.

A fit of a lensed image from a start far off (an Einstein radius 50% wrong, a source off to the
side) wanders through source shapes that mimic the arcs and ends in a local optimum or pinned
at a bound. Astronomers start it from what the image shows: the arcs lie near the Einstein
radius around the lens centre, the source sits behind the lens, and its brightness is a linear
amplitude. :func:`lensed_image_start` reads that off the image (no fit); the strategy
:func:`~skyfit.lens_start.init_to_lensed_image` turns it into a start that
:func:`~skyfit.inference.fit_map` fits as
one more candidate next to the user's start (``fit_map(post, x0,
candidates=[init_to_lensed_image(sim, image)])``; the higher log p wins).
"""

from __future__ import annotations

import math

import torch

from ..lenses.models import CompositeLens, ExternalShear
from .lensed import LensedImage, LensedSource

__all__ = ["lensed_image_start", "lens_components"]

SIGNIFICANCE = 5.0  # pixels of the smoothed image this many noise sigma up are "lensed light"
SMOOTHING_PIXELS = 1.5  # sigma of the Gaussian smoothing: arcs faint per pixel add up
# the start's mild ellipticities (q = 0.9, lenstronomy-style "small e1, e2") and source index:
# shapes the image does not tell before a fit, and a round, exponential start is closest to all
START_Q, START_N = 0.9, 1.0
RE_FACTORS = (0.25, 0.5, 1.0, 2.0)  # source sizes tried, in units of the traced spread


def _noise_sd(image: torch.Tensor, variance) -> float:
    if variance is not None:
        return float(torch.as_tensor(variance, dtype=image.dtype).median().sqrt())
    return float(1.4826 * (image - image.median()).abs().median())  # robust: MAD of the sky


def _smoothed(image: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``image`` smoothed by a Gaussian of ``SMOOTHING_PIXELS`` sigma (arcs too faint per pixel
    stand out), and the factor by which that lowers white noise (the kernel's L2 norm)."""
    offsets = torch.arange(-4, 5, dtype=image.dtype, device=image.device)
    k1 = torch.exp(-0.5 * (offsets / SMOOTHING_PIXELS) ** 2)
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :])[None, None]
    out = torch.nn.functional.conv2d(image[None, None], kernel, padding=4)[0, 0]
    return out, float(kernel.square().sum().sqrt())


def lens_components(sim: LensedImage):
    """(the main mass model: the first component with a ``theta_E``, the shears, the first
    lensed source) of ``sim``."""
    lenses = list(sim.lens.lenses) if isinstance(sim.lens, CompositeLens) else [sim.lens]
    mass = next((m for m in lenses if "theta_E" in m.children), None)
    lensed = [s for s in sim.scene.sources if isinstance(s, LensedSource)]
    if mass is None or not lensed:
        raise ValueError("lensed_image_start needs a LensedImage with a mass model that has a "
                         "theta_E (SIS, SIE, EPL, PointMass) and at least one lensed source")
    return mass, [m for m in lenses if isinstance(m, ExternalShear)], lensed[0].sources[0]


def _weighted_moments(w, dx, dy):
    total = w.sum()
    mx, my = (w * dx).sum() / total, (w * dy).sum() / total
    cxx = (w * (dx - mx) ** 2).sum() / total
    cyy = (w * (dy - my) ** 2).sum() / total
    cxy = (w * (dx - mx) * (dy - my)).sum() / total
    return float(mx), float(my), float(cxx), float(cyy), float(cxy)


def lensed_image_start(sim: LensedImage, image, variance=None) -> tuple[dict, list[float]]:
    """Start values of a lens image fit read off the image (no fit), and source sizes to try.

    The pixels of the image smoothed by a Gaussian of 1.5 pixels that stand 5 noise sigma above
    zero (noise from ``variance``, else the median absolute deviation of the image, lowered by
    the smoothing) are the lensed light, weighted by their smoothed brightness. The lens centre
    is their weighted centroid when the mass model's ``x0``/``y0`` are free, else their current
    values. Then ``theta_E`` is the weighted mean distance of that light from the centre (arcs
    and rings lie near the Einstein radius); the mass is mildly elliptical (``q = 0.9``) along
    the light's long axis; external shears are zero; the source sits where the light traces
    back to through a singular isothermal sphere of that ``theta_E`` (the weighted mean of
    ``beta = theta (1 - theta_E / |theta|)``), with ``q = 0.9`` and Sersic ``n = 1``. Its size
    and flux are left to :func:`init_to_lensed_image`, which tries sizes of ``RE_FACTORS`` times
    the spread of the traced light and solves for the flux. Subtract lens light first (the
    centre's light would shrink ``theta_E``).

    Arguments:
        sim: the :class:`~skyfit.LensedImage` being fitted.
        image: the observed image, ``sim.grid.shape``.
        variance: per-pixel noise variance (scalar or map), or ``None``.

    Returns ``({Param: value}, [source size candidates])``.

    Example:
        >>> import torch
        >>> from skyfit import PixelGrid, SIE, Sersic, LensedImage
        >>> sim = LensedImage(PixelGrid((60, 60), 0.05), SIE(theta_E=1.2, q=0.8),
        ...                   [Sersic(Re=0.1, flux=5.0)])
        >>> values, sizes = lensed_image_start(sim, sim().detach(), variance=1e-4)
        >>> round(values[sim.lens.theta_E], 1)
        1.2
    """
    image = torch.as_tensor(image, dtype=sim.grid.dtype)
    mass, shears, source = lens_components(sim)
    x, y = sim.grid.coordinates()
    smooth, noise_factor = _smoothed(image)
    bright = smooth > SIGNIFICANCE * noise_factor * _noise_sd(image, variance)
    if int(bright.sum()) < 3:
        raise ValueError(f"lensed_image_start: fewer than 3 pixels of the smoothed image are "
                         f"{SIGNIFICANCE:g} noise sigma up; there is no lensed light to start from")
    w, px, py = smooth[bright], x[bright], y[bright]
    free = mass.x0.dynamic or mass.y0.dynamic
    cx, cy = (_weighted_moments(w, px, py)[:2] if free else
              (float(mass.x0.value), float(mass.y0.value)))
    dx, dy = px - cx, py - cy
    r = torch.hypot(dx, dy).clamp_min(1e-12)
    theta_e = float((w * r).sum() / w.sum())
    _, _, cxx, cyy, cxy = _weighted_moments(w, dx, dy)
    bx, by = dx * (1 - theta_e / r), dy * (1 - theta_e / r)
    sx, sy, vxx, vyy, _ = _weighted_moments(w, bx, by)
    spread = max(math.sqrt(max(vxx + vyy, 0.0) / 2), sim.grid.pixel_scale / sim.grid.supersample)
    values = {mass.x0: cx, mass.y0: cy, mass.theta_E: theta_e}
    if "q" in mass.children:
        values[mass.q], values[mass.phi] = START_Q, 0.5 * math.atan2(2 * cxy, cxx - cyy) % math.pi
    for shear in shears:
        values[shear.gamma1], values[shear.gamma2] = 0.0, 0.0
    for name, value in dict(x0=cx + sx, y0=cy + sy, q=START_Q, phi=0.0, n=START_N).items():
        if name in source.children:
            values[source.children[name]] = value
    return values, [f * spread for f in RE_FACTORS]
