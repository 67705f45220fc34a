"""Pure torch lensing functions: deflection, convergence and potential of each mass model.

The Modules of :mod:`skyfit.lenses` are thin layers over these. Every function takes sky
coordinates ``x, y`` (arcsec) and parameters that broadcast against them, and returns the
deflection ``(alpha_x, alpha_y)`` (arcsec), the dimensionless convergence ``kappa`` or the lensing
potential ``psi`` (arcsec^2, defined up to a constant). Conventions are those of the package
docstring (:mod:`skyfit.lenses`): ``phi`` counter-clockwise from +x to the major axis, ``q`` =
minor/major, Einstein radii in lenstronomy's intermediate-axis convention.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "to_major_axis_frame",
    "from_major_axis_frame",
    "sis_deflection", "sis_convergence", "sis_potential",
    "sie_deflection", "sie_convergence", "sie_potential",
    "point_mass_deflection", "point_mass_convergence", "point_mass_potential",
    "shear_deflection", "shear_convergence", "shear_potential",
    "mass_sheet_deflection", "mass_sheet_convergence", "mass_sheet_potential",
    "nfw_deflection", "nfw_convergence", "nfw_potential",
    "epl_deflection", "epl_convergence", "epl_potential",
]

# Squared softening (arcsec^2) added to radii so that profiles singular at their centre return
# finite values and gradients there; 1e-12 arcsec is far below any pixel or image separation.
_EPS2 = 1e-24


def _radius(dx, dy):
    return torch.sqrt(dx**2 + dy**2 + _EPS2)


def to_major_axis_frame(x, y, x0, y0, phi):
    """Coordinates relative to ``(x0, y0)`` rotated so the major axis (angle ``phi``) is +x."""
    dx, dy = x - x0, y - y0
    c, s = torch.cos(phi), torch.sin(phi)
    return c * dx + s * dy, -s * dx + c * dy


def from_major_axis_frame(ax, ay, phi):
    """Rotate a vector field back from the major-axis frame to the sky frame."""
    c, s = torch.cos(phi), torch.sin(phi)
    return c * ax - s * ay, s * ax + c * ay


# --- singular isothermal sphere ------------------------------------------------------------------

def sis_deflection(x, y, x0, y0, theta_E):
    """SIS: ``alpha = theta_E r_hat``."""
    dx, dy = x - x0, y - y0
    r = _radius(dx, dy)
    return theta_E * dx / r, theta_E * dy / r


def sis_convergence(x, y, x0, y0, theta_E):
    """SIS: ``kappa = theta_E / (2 r)``."""
    return theta_E / (2 * _radius(x - x0, y - y0))


def sis_potential(x, y, x0, y0, theta_E):
    """SIS: ``psi = theta_E r``."""
    return theta_E * _radius(x - x0, y - y0)


# --- singular isothermal ellipsoid ---------------------------------------------------------------

def _sie_major_axis(x, y, x0, y0, q, phi, theta_E):
    xp, yp = to_major_axis_frame(x, y, x0, y0, phi)
    b = theta_E * torch.sqrt(q)
    w = torch.sqrt(q**2 * xp**2 + yp**2 + _EPS2)
    inv_w = 1 / w
    u, v = xp * inv_w, yp * inv_w
    # e^2 = 1 - q^2. With u = x/w, v = y/w: alpha_x = b atan(e u)/e, alpha_y = b atanh(e v)/e.
    # Near q = 1 (the SIS) e is floored at 1e-4 (e^2 >= 1e-8, so no 0/0 and no cancellation
    # in autograd's d/de), and the first series term in e^2 of each function,
    # atan(e u)/e = u - e^2 u^3/3 + ..., atanh(e v)/e = v + e^2 v^3/3 + ..., moves the value
    # from the floor back to the true e^2: exact to (1e-8)^2 (|u|, |v| <= 1/q), and it carries
    # the q-derivative through e^2 that the floored e has lost (at q = 1 itself, a valid start).
    e2 = (1 - q) * (1 + q)
    e2_floor = e2.clamp(min=1e-8)
    e = torch.sqrt(e2_floor)
    shift = (e2_floor - e2) / 3  # 0 unless q > 1 - 5e-9
    ev = e * v
    # |e u| < 1, so atan needs no quadrant logic (cheaper than atan2); log1p for atanh
    ax = torch.atan(e * u) / e + shift * u * u * u
    ay = 0.5 * torch.log1p(2 * ev / (1 - ev)) / e - shift * v * v * v
    return xp, yp, b * ax, b * ay


def sie_deflection(x, y, x0, y0, q, phi, theta_E):
    """SIE deflection (Kormann, Schneider & Bartelmann 1994, A&A 284, 285; Keeton & Kochanek
    1998, arXiv:astro-ph/9705194 with zero core). In the major-axis frame, with
    ``b = theta_E sqrt(q)``, ``e = sqrt(1 - q^2)`` and ``w = sqrt(q^2 x^2 + y^2)``:
    ``alpha_x = b/e atan(e x / w)``, ``alpha_y = b/e atanh(e y / w)``.
    """
    _, _, ax, ay = _sie_major_axis(x, y, x0, y0, q, phi, theta_E)
    return from_major_axis_frame(ax, ay, phi)


def sie_convergence(x, y, x0, y0, q, phi, theta_E):
    """SIE: ``kappa = theta_E / (2 sqrt(q x'^2 + y'^2 / q))`` (major-axis frame)."""
    xp, yp = to_major_axis_frame(x, y, x0, y0, phi)
    return theta_E / (2 * torch.sqrt(q * xp**2 + yp**2 / q + _EPS2))


def sie_potential(x, y, x0, y0, q, phi, theta_E):
    """SIE: ``psi = x' alpha_x' + y' alpha_y'`` (the isothermal potential is homogeneous of
    degree 1)."""
    xp, yp, ax, ay = _sie_major_axis(x, y, x0, y0, q, phi, theta_E)
    return xp * ax + yp * ay


# --- point mass ----------------------------------------------------------------------------------

def point_mass_deflection(x, y, x0, y0, theta_E):
    """Point mass: ``alpha = theta_E^2 r_vec / r^2``."""
    dx, dy = x - x0, y - y0
    r2 = dx**2 + dy**2 + _EPS2
    return theta_E**2 * dx / r2, theta_E**2 * dy / r2


def point_mass_convergence(x, y, x0, y0, theta_E):
    """Point mass: zero everywhere but at its position (a delta function, not representable)."""
    return torch.zeros_like(x - x0) * theta_E


def point_mass_potential(x, y, x0, y0, theta_E):
    """Point mass: ``psi = theta_E^2 ln r``."""
    return theta_E**2 * torch.log(_radius(x - x0, y - y0))


# --- external shear ------------------------------------------------------------------------------

def shear_deflection(x, y, x0, y0, gamma1, gamma2):
    """External shear: ``alpha = (g1 dx + g2 dy, g2 dx - g1 dy)`` about the origin ``(x0, y0)``."""
    dx, dy = x - x0, y - y0
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def shear_convergence(x, y, x0, y0, gamma1, gamma2):
    """External shear carries no convergence."""
    return torch.zeros_like(x - x0) * (gamma1 + gamma2)


def shear_potential(x, y, x0, y0, gamma1, gamma2):
    """External shear: ``psi = (g1 (dx^2 - dy^2) + 2 g2 dx dy) / 2``."""
    dx, dy = x - x0, y - y0
    return 0.5 * gamma1 * (dx**2 - dy**2) + gamma2 * dx * dy


# --- mass sheet ----------------------------------------------------------------------------------

def mass_sheet_deflection(x, y, x0, y0, kappa):
    """Uniform sheet of convergence ``kappa``: ``alpha = kappa (dx, dy)``."""
    return kappa * (x - x0), kappa * (y - y0)


def mass_sheet_convergence(x, y, x0, y0, kappa):
    return kappa * torch.ones_like(x - x0)


def mass_sheet_potential(x, y, x0, y0, kappa):
    """Mass sheet: ``psi = kappa r^2 / 2``."""
    return 0.5 * kappa * ((x - x0) ** 2 + (y - y0) ** 2)


# --- NFW -----------------------------------------------------------------------------------------
# Bartelmann (1996, A&A 313, 697; arXiv:astro-ph/9602053), Golse & Kneib (2002,
# arXiv:astro-ph/0112138), in lenstronomy's (Rs, alpha_Rs) parametrisation: alpha_Rs is the
# deflection at r = Rs. With X = r / Rs, everything follows from
#   C(X) = arccosh(1/X) / sqrt(1 - X^2)  (X < 1),   arccos(1/X) / sqrt(X^2 - 1)  (X > 1),
# which is analytic through X = 1; near there C and F = (1 - C) / (X^2 - 1) use Taylor series in
# u = X - 1 (coefficients from the exact expansions) to avoid 0/0.
_NFW_C_SERIES = (1.0, -2 / 3, 7 / 15, -12 / 35, 83 / 315, -146 / 693, 523 / 3003)
_NFW_F_SERIES = (1 / 3, -2 / 5, 13 / 35, -20 / 63, 61 / 231, -94 / 429, 1181 / 6435)
_NFW_NEAR = 1e-2
_LOG_HALF_1 = 1.0 + math.log(0.5)  # g(1) = 1 + ln(1/2)


def _poly(coeffs, u):
    out = torch.zeros_like(u) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * u + c
    return out


def _nfw_C_F(X):
    u = X - 1
    near = u.abs() < _NFW_NEAR
    inner = X.clamp(max=1 - _NFW_NEAR / 2)  # X < 1 branch, kept away from 1
    outer = X.clamp(min=1 + _NFW_NEAR / 2)  # X > 1 branch
    C_in = torch.acosh(1 / inner) / torch.sqrt((1 - inner) * (1 + inner))
    C_out = torch.acos(1 / outer) / torch.sqrt((outer - 1) * (outer + 1))
    C_far = torch.where(X < 1, C_in, C_out)
    X_far = torch.where(X < 1, inner, outer)
    F_far = (1 - C_far) / ((X_far - 1) * (X_far + 1))
    C = torch.where(near, _poly(_NFW_C_SERIES, u), C_far)
    F = torch.where(near, _poly(_NFW_F_SERIES, u), F_far)
    return C, F


def _nfw_X(x, y, x0, y0, Rs):
    dx, dy = x - x0, y - y0
    return dx, dy, _radius(dx, dy) / Rs


def nfw_deflection(x, y, x0, y0, Rs, alpha_Rs):
    """NFW: ``alpha = alpha_Rs g(X) / (g(1) X) r_hat`` with ``g(X) = ln(X/2) + C(X)``."""
    dx, dy, X = _nfw_X(x, y, x0, y0, Rs)
    C, _ = _nfw_C_F(X)
    g = torch.log(X / 2) + C
    a = alpha_Rs * g / (_LOG_HALF_1 * X**2 * Rs)
    return a * dx, a * dy


def nfw_convergence(x, y, x0, y0, Rs, alpha_Rs):
    """NFW: ``kappa = alpha_Rs F(X) / (2 g(1) Rs)``."""
    _, _, X = _nfw_X(x, y, x0, y0, Rs)
    _, F = _nfw_C_F(X)
    return alpha_Rs * F / (2 * _LOG_HALF_1 * Rs)


def nfw_potential(x, y, x0, y0, Rs, alpha_Rs):
    """NFW: ``psi = alpha_Rs Rs h(X) / (2 g(1))`` with ``h = ln^2(X/2) - (1 - X^2) C(X)^2``."""
    _, _, X = _nfw_X(x, y, x0, y0, Rs)
    C, _ = _nfw_C_F(X)
    h = torch.log(X / 2) ** 2 - (1 - X) * (1 + X) * C**2
    return alpha_Rs * Rs * h / (2 * _LOG_HALF_1)


# --- elliptical power law ------------------------------------------------------------------------
# Tessore & Metcalf (2015, A&A 580, A79; arXiv:1507.01819), as lenstronomy's EPL:
#   kappa = (3 - gamma)/2 (theta_E / sqrt(q x'^2 + y'^2/q))^(gamma - 1).
# With t = gamma - 1, b = theta_E sqrt(q), R = sqrt(q^2 x'^2 + y'^2), e^{i phi} = (q x' + i y')/R
# and f = (1 - q)/(1 + q), the complex deflection in the major-axis frame is
#   alpha = 2 b / (1 + q) (b / R)^(t - 1) e^{i phi} 2F1(1, t/2; 2 - t/2; -f e^{2 i phi}),
# and the hypergeometric series is summed term by term (ratio of successive coefficients
# (n - 1 + t/2) / (n + 1 - t/2), geometric convergence with ratio f).
_EPL_MAX_TERMS = 200


def epl_series_terms(q, tol: float = 1e-17) -> int:
    """Number of hypergeometric-series terms that reaches ``tol`` for the smallest ``q`` given.

    Under ``torch.vmap`` (no data-dependent sizes) the value cannot be read; then 100 terms are
    used, exact to machine precision for ``q > 0.2``.
    """
    try:
        f = float(((1 - q) / (1 + q)).detach().max())
    except RuntimeError:  # a batched (vmapped) tensor has no single value
        return 100
    if f <= 0:
        return 2  # the n = 1 term vanishes at q = 1, but its q-derivative does not
    return int(min(_EPL_MAX_TERMS, max(2, math.ceil(math.log(tol) / math.log(f)))))


def _epl_major_axis(x, y, x0, y0, q, phi, theta_E, gamma, terms):
    xp, yp = to_major_axis_frame(x, y, x0, y0, phi)
    t = gamma - 1
    b = theta_E * torch.sqrt(q)
    R = torch.sqrt(q**2 * xp**2 + yp**2 + _EPS2)
    cos1, sin1 = q * xp / R, yp / R
    cos2, sin2 = cos1**2 - sin1**2, 2 * cos1 * sin1
    f = (1 - q) / (1 + q)
    if terms is None:
        terms = epl_series_terms(q)
    wr, wi = torch.ones_like(cos2), torch.zeros_like(cos2)
    sr, si = wr, wi
    for n in range(1, terms):
        ratio = -f * (n - 1 + t / 2) / (n + 1 - t / 2)
        wr, wi = ratio * (wr * cos2 - wi * sin2), ratio * (wr * sin2 + wi * cos2)
        sr, si = sr + wr, si + wi
    amp = 2 * b / (1 + q) * (b / R) ** (t - 1)
    ax = amp * (cos1 * sr - sin1 * si)
    ay = amp * (cos1 * si + sin1 * sr)
    return xp, yp, ax, ay


def epl_deflection(x, y, x0, y0, q, phi, theta_E, gamma, terms: int | None = None):
    """EPL deflection by the Tessore & Metcalf (2015) series; ``terms`` defaults to enough for
    machine precision at the given ``q`` (:func:`epl_series_terms`)."""
    _, _, ax, ay = _epl_major_axis(x, y, x0, y0, q, phi, theta_E, gamma, terms)
    return from_major_axis_frame(ax, ay, phi)


def epl_convergence(x, y, x0, y0, q, phi, theta_E, gamma):
    """EPL: ``kappa = (3 - gamma)/2 (theta_E / sqrt(q x'^2 + y'^2/q))^(gamma - 1)``."""
    xp, yp = to_major_axis_frame(x, y, x0, y0, phi)
    return (3 - gamma) / 2 * (theta_E / torch.sqrt(q * xp**2 + yp**2 / q + _EPS2)) ** (gamma - 1)


def epl_potential(x, y, x0, y0, q, phi, theta_E, gamma, terms: int | None = None):
    """EPL: ``psi = (x' alpha_x' + y' alpha_y') / (3 - gamma)`` (the potential is homogeneous of
    degree 3 - gamma)."""
    xp, yp, ax, ay = _epl_major_axis(x, y, x0, y0, q, phi, theta_E, gamma, terms)
    return (xp * ax + yp * ay) / (3 - gamma)
