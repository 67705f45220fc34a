"""Pure torch functions for light profiles; the Modules in this package are thin layers over them.

Conventions (stated once for all of skyfit):

- Positions and sizes in arcsec; position angle ``phi`` in radians, counter-clockwise from +x
  to the major axis; ``q`` = minor / major axis ratio in (0, 1].
- Sizes (``sigma``, ``Re``) are circularised radii: the elliptical radius is
  ``R^2 = q x'^2 + y'^2 / q`` (as lenstronomy), so total fluxes do not depend on ``q``.
- Surface brightness is flux per arcsec^2. Every parameter may carry leading batch dimensions;
  they broadcast in front of the coordinate dimensions (see :func:`batch_param`).
"""

from __future__ import annotations

import math

import torch

from .._tensor import batch_param

__all__ = [
    "batch_param",
    "bilinear_interpolate",
    "elliptical_radius_squared",
    "gaussian_profile",
    "sersic_b",
    "sersic_b_exact",
    "sersic_profile",
    "sersic_total_flux",
]


def _quadratic_form_coefficients(q, phi):
    c, s = torch.cos(phi), torch.sin(phi)
    return q * c**2 + s**2 / q, 2 * c * s * (q - 1 / q), q * s**2 + c**2 / q


def _quadratic_form(x, y, x0, y0, a, b, d):
    """``a dx^2 + b dx dy + d dy^2``, factored as ``dx (a dx + b dy) + d dy dy``: the fewest
    operations on the (large) coordinate arrays, forward and backward (``torch.addcmul`` saves
    none: its backward pays an extra multiplication per operand)."""
    dx, dy = x - x0, y - y0
    return dx * (a * dx + b * dy) + d * dy * dy


def elliptical_radius_squared(x, y, x0, y0, q, phi):
    """Circularised elliptical radius squared ``q x'^2 + y'^2 / q`` (arcsec^2), with ``x'`` along
    the major axis. Written as a quadratic form in ``(x - x0, y - y0)`` whose coefficients are
    computed on the (small) parameters: fewer operations on the (large) coordinate arrays."""
    return _quadratic_form(x, y, x0, y0, *_quadratic_form_coefficients(q, phi))


def gaussian_profile(x, y, x0, y0, q, phi, sigma):
    """Unit-flux elliptical Gaussian surface brightness (1 / arcsec^2); integrates to 1.

    Example:
        >>> import torch
        >>> axis = torch.linspace(-2, 2, 401, dtype=torch.float64)  # arcsec, 0.01 apart
        >>> x, y = torch.meshgrid(axis, axis, indexing="xy")
        >>> x0, y0, q, phi, sigma = torch.tensor([0.0, 0.0, 0.7, 0.3, 0.2], dtype=torch.float64)
        >>> sb = gaussian_profile(x, y, x0, y0, q, phi, sigma)  # 1 / arcsec^2
        >>> round((sb.sum() * 0.01**2).item(), 6)  # times the pixel area (arcsec^2): unit flux
        1.0
    """
    scale = -0.5 / sigma**2  # folded into the coefficients: one pass less over the arrays
    a, b, d = (scale * c for c in _quadratic_form_coefficients(q, phi))
    return torch.exp(_quadratic_form(x, y, x0, y0, a, b, d) - torch.log(2 * math.pi * sigma**2))


def _series_prefactor_ratio(a, b, log_ak, lgamma_a1):
    # For P(a, b) = b^a e^-b / Gamma(a+1) * S with S = sum_k b^k / ((a+1)...(a+k)) (every b; here
    # b ~ a, so 160 terms reach machine precision for n <= 10) and P' = b^(a-1) e^-b / Gamma(a):
    # (P - 1/2) / P' = b / a * (S - 1/2 Gamma(a+1) e^b / b^a). Written out because
    # torch.special.gammainc has no derivative in `a`, which b(n) needs (and its Hessian too).
    log_b = torch.log(b)
    series = 1 + torch.exp(torch.cumsum(log_b[..., None] - log_ak, dim=-1)).sum(-1)
    return b / a * (series - 0.5 * torch.exp(lgamma_a1 + b - a * log_b))


def sersic_b_exact(n: torch.Tensor, steps: int = 2, terms: int = 160) -> torch.Tensor:
    """Sersic ``b(n)`` to machine precision: the root of ``P(2n, b) = 1/2`` (``Re`` encloses half
    the light).

    Starts from the Ciotti & Bertin (1999, A&A 352, 447; arXiv:astro-ph/9911078) expansion
    (within 10% at n = 0.2 and 5e-4 above n = 0.36; below n = 0.2, where it diverges, from the
    series' first term) and takes ``steps`` Halley steps (cubic convergence) on a differentiable
    series for the incomplete gamma function, so values, gradients and Hessians are exact to
    machine precision: relative error < 1e-13 in float64 against ``scipy.special.gammaincinv``
    for 0.01 <= n <= 20 (the Sersic ``n`` Param's ``valid`` range is 0.2-10).

    About 300 torch operations per call (the 160-term series, twice): :func:`sersic_b` gives
    ``b(n)`` to 4e-9 relative for ``n >= 0.2`` in about 20 and is what the profiles use.

    Example:
        >>> round(sersic_b_exact(torch.tensor(4.0, dtype=torch.float64)).item(), 6)
        7.669249
    """
    n = torch.as_tensor(n)
    inv = 1 / n
    b = 2 * n - 1 / 3 + inv * (4 / 405 + inv * (46 / 25515 + inv * (
        131 / 1148175 - inv * (2194697 / 30690717750))))
    a = 2 * n
    lgamma_a1 = torch.lgamma(a + 1)
    # below n = 0.2 the expansion diverges; there the series' first term, b^a / Gamma(a+1) = 1/2,
    # starts closer (within 8% for n < 0.2)
    b = torch.where(n < 0.2, torch.exp((lgamma_a1 - math.log(2)) / a), b)
    k = torch.arange(1, terms, dtype=n.dtype, device=n.device)
    log_ak = torch.log(a[..., None] + k)  # the series' denominators do not change with b
    for _ in range(steps):
        ratio = _series_prefactor_ratio(a, b, log_ak, lgamma_a1)  # f / f'
        # Halley: b -= (f / f') / (1 - (f / f') f'' / (2 f')), with f'' / f' = (a - 1) / b - 1
        b = b - ratio / (1 - 0.5 * ratio * ((a - 1) / b - 1))
    return b

# sersic_b's rational function in x = 1/n: b = 2n - 1/3 + x N(x) / D(x), N and D of degree 4
# (coefficients from the constant term up). Fitted by weighted linear least squares (iterated
# denominator weights) to the relative error of b against scipy.special.gammaincinv(2n, 1/2) on
# 3300 points of n in [0.2, 1e4]; its poles are complex (|x| > 2.5), away from [0, 5]. N(0)
# equals Ciotti & Bertin's 4/405 to 2e-6, so the fit keeps their expansion's large-n accuracy.
_SERSIC_B_NUM = (0.009876565175569934, 0.007313878847327634, 0.0031689846394522586,
                 0.0005394715914794994, -6.390213970543755e-06)
_SERSIC_B_DEN = (1.0, 0.5579803817515483, 0.21090804412910488, 0.018762782447543105,
                 0.0010414589760707458)
SERSIC_B_FIT_MIN_N = 0.2  # below this n the fit's error grows (1e-5 at 0.15, 0.4% at 0.1)


def _horner(x: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    out = coefficients[-1] * x + coefficients[-2]
    for c in reversed(coefficients[:-2]):
        out = out * x + c
    return out


def sersic_b(n: torch.Tensor) -> torch.Tensor:
    """Sersic ``b(n)`` (``P(2n, b) = 1/2``: ``Re`` encloses half the light) by a rational fit:
    relative error < 4e-9 for every ``n >= 0.2`` (the Sersic ``n`` Param's valid range is
    0.2-10; tested against :func:`sersic_b_exact` on a dense grid), about 20 operations, smooth
    (its autograd derivatives are those of the fit: within 1e-6 relative of the exact ones).

    Below the fit (``n < 0.2``, outside the Param's range) it returns the incomplete-gamma
    series' first term, ``(Gamma(2n + 1) / 2)^(1 / 2n)`` (within 10%; finite and positive, so
    out-of-range points of a batch stay harmless): call :func:`sersic_b_exact` there. No
    data-dependent branch, so it runs under ``torch.vmap`` and ``torch.compile``.

    Example:
        >>> round(sersic_b(torch.tensor(4.0, dtype=torch.float64)).item(), 6)
        7.669249
    """
    n = torch.as_tensor(n)
    x = 1 / n.clamp(min=SERSIC_B_FIT_MIN_N)
    fit = 2 / x - 1 / 3 + x * _horner(x, _SERSIC_B_NUM) / _horner(x, _SERSIC_B_DEN)
    below = n < SERSIC_B_FIT_MIN_N
    small = n.clamp(max=SERSIC_B_FIT_MIN_N)  # the series' first term, used below the fit only
    first_term = torch.exp((torch.lgamma(2 * small + 1) - math.log(2)) / (2 * small))
    return torch.where(below, first_term, fit)


def sersic_total_flux(Ie, Re, n):
    """Total flux of a Sersic profile with surface brightness ``Ie`` at ``Re``.

    ``L = 2 pi n Ie Re^2 e^b Gamma(2n) / b^(2n)`` (Graham & Driver 2005, PASA 22, 118;
    arXiv:astro-ph/0503176, eq. 2 with circularised Re).

    Example:
        >>> import torch
        >>> one = torch.tensor(1.0, dtype=torch.float64)
        >>> round(sersic_total_flux(one, one, one).item(), 4)  # Ie = 1 at Re = 1 arcsec, n = 1
        11.9485
    """
    Ie, Re, n = (torch.as_tensor(v) for v in (Ie, Re, n))
    b = sersic_b(n)
    return 2 * math.pi * n * Ie * Re**2 * torch.exp(b + torch.lgamma(2 * n) - 2 * n * torch.log(b))


def sersic_profile(x, y, x0, y0, q, phi, n, Re, b=None):
    """Unit-flux Sersic surface brightness (1 / arcsec^2); integrates to 1 over the plane.
    ``b`` is :func:`sersic_b` of ``n`` unless given (e.g. :func:`sersic_b_exact`'s).

    Example:
        >>> import torch
        >>> axis = torch.linspace(-6, 6, 1201, dtype=torch.float64)  # arcsec, 0.01 apart
        >>> x, y = torch.meshgrid(axis, axis, indexing="xy")
        >>> x0, y0, q, phi, n, Re = torch.tensor([0.0, 0.0, 0.8, 0.0, 1.0, 0.5]).double()
        >>> sb = sersic_profile(x, y, x0, y0, q, phi, n, Re)  # exponential disc, 1 / arcsec^2
        >>> round((sb.sum() * 0.01**2).item(), 3)  # unit flux (up to the grid's truncation)
        1.0
    """
    b = sersic_b(n) if b is None else b
    r2 = elliptical_radius_squared(x, y, x0, y0, q, phi)
    log_norm = math.log(2 * math.pi) + torch.log(n) + 2 * torch.log(Re) + b
    log_norm = log_norm + torch.lgamma(2 * n) - 2 * n * torch.log(b)
    # b (R / Re)^(1/n) through exp/log (cheaper gradients than pow), with b and Re folded into
    # one constant; the tiny offset keeps the gradient finite at the cusp R = 0 (1e-6 arcsec: far
    # below any pixel)
    bu = torch.exp((0.5 / n) * torch.log(r2 + 1e-12) + (torch.log(b) - torch.log(Re) / n))
    return torch.exp((b - log_norm) - bu)


def bilinear_interpolate(image: torch.Tensor, x, y, x0, y0, pixel_scale) -> torch.Tensor:
    """Bilinear interpolation of ``image[..., row, col]`` (pixel centres on the PixelGrid
    convention, centred on ``(x0, y0)``, spacing ``pixel_scale``) at coordinates ``x, y``; zero
    outside the stamp.

    Each stamp pixel covers its whole square: between the outer pixel centres and the outer pixel
    edges the value is that of the edge pixel, so the integral of the interpolant is
    ``image.sum() * pixel_scale**2``. Differentiable in the image values, the coordinates and the
    centre; batch dimensions of ``image`` broadcast in front of those of ``x`` (and pair with the
    leading batch dimensions of ``x0, y0``). The result has the dtype of ``x``.

    Example:
        >>> import torch
        >>> stamp = torch.arange(9.0).reshape(3, 3)  # pixels 0.1 arcsec, centred on (0, 0)
        >>> x, y = torch.tensor([0.0, 0.05, 1.0]), torch.tensor([0.0, 0.0, 0.0])
        >>> bilinear_interpolate(stamp, x, y, 0.0, 0.0, 0.1)  # centre, half a pixel right, outside
        tensor([4.0000, 4.5000, 0.0000])
    """
    ny, nx = image.shape[-2:]
    image = image.to(x.dtype)
    u = (x - x0) / pixel_scale + (nx - 1) / 2  # fractional column
    v = (y - y0) / pixel_scale + (ny - 1) / 2  # fractional row
    inside = (u >= -0.5) & (u <= nx - 0.5) & (v >= -0.5) & (v <= ny - 0.5)
    u = u.clamp(0, nx - 1)
    v = v.clamp(0, ny - 1)
    i0 = v.detach().floor().clamp(max=ny - 2).long() if ny > 1 else torch.zeros_like(v).long()
    j0 = u.detach().floor().clamp(max=nx - 2).long() if nx > 1 else torch.zeros_like(u).long()
    fv, fu = v - i0, u - j0
    flat = image.reshape(image.shape[:-2] + (ny * nx,))
    nd = max(x.ndim, y.ndim)  # coordinate dimensions; any in front are parameter batch dimensions

    def at(i, j):
        idx = i * nx + j
        lead, coords = idx.shape[: idx.ndim - nd], idx.shape[idx.ndim - nd :]
        k = max(len(lead), flat.ndim - 1)  # align image batch with parameter batch, then gather
        src = flat.reshape((1,) * (k + 1 - flat.ndim) + flat.shape)
        idx = idx.reshape((1,) * (k - len(lead)) + lead + (-1,))
        got = torch.take_along_dim(src, idx, dim=-1)
        return got.reshape(got.shape[:-1] + coords)

    i1 = (i0 + 1).clamp(max=ny - 1)
    j1 = (j0 + 1).clamp(max=nx - 1)
    out = (
        at(i0, j0) * (1 - fv) * (1 - fu)
        + at(i0, j1) * (1 - fv) * fu
        + at(i1, j0) * fv * (1 - fu)
        + at(i1, j1) * fv * fu
    )
    return out * inside
