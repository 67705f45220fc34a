"""Image positions of a point source: solve the lens equation ``beta(theta) = beta_s``.

Method. (1) Candidates: the image plane is covered by triangles (a square grid over the search
window, plus a logarithmic polar grid around every mass centre, where images of cuspy profiles
crowd); every triangle whose image under the lens mapping contains ``beta_s`` holds an image
(Schramm & Kayser 1987 triangle mapping; as in lenstronomy's and glafic's solvers). (2) Each
candidate is polished by damped Newton steps with the autograd Jacobian until
``|beta(theta) - beta_s| < tol``; candidates that do not converge are dropped, duplicates merged.

Central images and the image count. The index theorem says that the parities of the images
(``sign det A``: +1 for minima and maxima, -1 for saddles) add up to the winding number of the
field ``beta(theta) - beta_s`` along any closed curve enclosing them. The solver measures that
winding number along the window's edge and along a circle of radius ``r_min`` around every mass
centre, and compares. Around the centre of a singular profile (point mass, SIS/SIE, power law
with ``gamma >= 2``) the winding is +1 when the source is inside the radial caustic: the
"central image" is absorbed by the singularity (infinitely demagnified) and does not exist. For
profiles whose deflection vanishes at the centre (NFW, power law with ``gamma < 2``, cored
models) the central image exists and is returned when it lies farther than ``r_min`` from the
centre; closer in, it is reported in ``LensImages.unresolved_centres`` (its magnification is
then negligible, e.g. ``|mu| < 1e-6`` for ``r_min = 1e-4"`` and a ~1" lens). Any other mismatch
means that images were missed (typically a close pair at a fold): the solver refines locally,
and if the count still does not add up it warns with :class:`ImageCountWarning`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .base import ThinLens

__all__ = ["LensImages", "find_images", "ImageCountWarning"]


class ImageCountWarning(UserWarning):
    """The image finder found fewer images than the index theorem requires for this lens."""


@dataclass
class LensImages:
    """Images of one point source, sorted by arrival time (increasing Fermat potential).

    Attributes:
        x, y: positions (arcsec), ``(n,)``. magnification: signed ``1 / det A``, ``(n,)``.
        fermat: Fermat potential (arcsec^2), ``(n,)``. parity: ``sign det A``.
        unresolved_centres: mass centres ``(x0, y0)`` around which the lens mapping winds once
            with no image found: a singular centre or a central image closer than ``r_min``.
        winding: winding number of ``beta(theta) - beta_s`` along the window edge.

    Example:
        >>> import torch
        >>> from skyfit import SIS, find_images
        >>> images = find_images(SIS(theta_E=1.0), torch.tensor(0.3), torch.tensor(0.0))
        >>> images.n, [round(x, 4) for x in images.x.tolist()], images.parity.tolist()
        (2, [1.3, -0.7], [1, -1])
    """

    x: torch.Tensor
    y: torch.Tensor
    magnification: torch.Tensor
    fermat: torch.Tensor
    unresolved_centres: list = field(default_factory=list)
    winding: int = 1

    @property
    def n(self) -> int:
        """Number of images found."""
        return int(self.x.shape[0])

    @property
    def parity(self) -> torch.Tensor:
        """Sign of each image's magnification: +1 (minimum or maximum), -1 (saddle), int64."""
        return torch.sign(self.magnification).to(torch.int64)


def _triangle_candidates(bx, by, gx, gy, sx, sy, tri):
    """Image-plane points (barycentric interpolation) of the triangles ``tri (T, 3)`` (vertex
    indices into the flattened grids) whose source-plane image contains ``(sx, sy)``."""
    ax, ay = bx[tri[:, 0]], by[tri[:, 0]]
    ex1, ey1 = bx[tri[:, 1]] - ax, by[tri[:, 1]] - ay
    ex2, ey2 = bx[tri[:, 2]] - ax, by[tri[:, 2]] - ay
    px, py = sx - ax, sy - ay
    det = ex1 * ey2 - ey1 * ex2
    det = torch.where(det == 0, torch.full_like(det, 1e-300), det)
    u = (px * ey2 - py * ex2) / det
    v = (ex1 * py - ey1 * px) / det
    eps = 1e-9
    inside = (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps)
    idx = torch.nonzero(inside).flatten()
    u, v, t = u[idx], v[idx], tri[idx]
    cx = gx[t[:, 0]] + u * (gx[t[:, 1]] - gx[t[:, 0]]) + v * (gx[t[:, 2]] - gx[t[:, 0]])
    cy = gy[t[:, 0]] + u * (gy[t[:, 1]] - gy[t[:, 0]]) + v * (gy[t[:, 2]] - gy[t[:, 0]])
    return cx, cy


def _grid_triangles(n_rows: int, n_cols: int, wrap_cols: bool = False) -> torch.Tensor:
    """Two triangles per cell of an ``n_rows x n_cols`` vertex grid (row-major indices)."""
    cols = n_cols if wrap_cols else n_cols - 1
    i, j = torch.meshgrid(torch.arange(n_rows - 1), torch.arange(cols), indexing="ij")
    i, j = i.flatten(), j.flatten()
    j1 = (j + 1) % n_cols
    a, b = i * n_cols + j, i * n_cols + j1
    c, d = (i + 1) * n_cols + j, (i + 1) * n_cols + j1
    return torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])


def _candidates_on_square(lens, sx, sy, cx, cy, size, n, dtype, device):
    s = torch.linspace(-size / 2, size / 2, n, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(cy + s, cx + s, indexing="ij")
    gx, gy = gx.flatten(), gy.flatten()
    bx, by = lens.raytrace(x=gx, y=gy)
    return _triangle_candidates(bx, by, gx, gy, sx, sy, _grid_triangles(n, n))


def _candidates_on_polar(lens, sx, sy, cx, cy, r_min, r_max, n_r, n_phi, dtype, device):
    r = torch.logspace(math.log10(r_min), math.log10(r_max), n_r, dtype=dtype, device=device)
    phi = torch.arange(n_phi, dtype=dtype, device=device) * (2 * math.pi / n_phi)
    rr, pp = torch.meshgrid(r, phi, indexing="ij")
    gx, gy = (cx + rr * torch.cos(pp)).flatten(), (cy + rr * torch.sin(pp)).flatten()
    bx, by = lens.raytrace(x=gx, y=gy)
    return _triangle_candidates(bx, by, gx, gy, sx, sy, _grid_triangles(n_r, n_phi, True))


def _newton(lens, x, y, sx, sy, max_iter: int, tol: float):
    """Damped Newton iterations on ``beta(theta) = beta_s`` for a batch of starting points."""
    def residual(u, v):
        bx, by = lens.raytrace(x=u, y=v)
        return bx - sx, by - sy

    rx, ry = residual(x, y)
    for _ in range(max_iter):
        norm = torch.hypot(rx, ry)
        if bool((norm < tol).all()):
            break
        A = lens.jacobian(x=x, y=y)
        det = A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] * A[..., 1, 0]
        det = torch.where(det == 0, torch.full_like(det, 1e-300), det)
        dx = (A[..., 1, 1] * rx - A[..., 0, 1] * ry) / det
        dy = (-A[..., 1, 0] * rx + A[..., 0, 0] * ry) / det
        step = torch.ones_like(x)
        for _ in range(12):  # halve the step where it does not reduce the residual
            nx, ny = x - step * dx, y - step * dy
            nrx, nry = residual(nx, ny)
            better = torch.hypot(nrx, nry) < norm
            if bool(better.all()):
                break
            step = torch.where(better, step, step / 2)
        ok = better | (norm < tol)
        x, y = torch.where(ok, nx, x), torch.where(ok, ny, y)
        rx, ry = torch.where(ok, nrx, rx), torch.where(ok, nry, ry)
    return x, y, torch.hypot(rx, ry)


def _unique(x, y, tol):
    keep = []
    for i in range(x.shape[0]):
        if all(math.hypot(float(x[i] - x[j]), float(y[i] - y[j])) > tol for j in keep):
            keep.append(i)
    idx = torch.tensor(keep, dtype=torch.long, device=x.device)
    return x[idx], y[idx]


def _winding(lens, sx, sy, px, py) -> int:
    """Winding number of ``beta(theta) - beta_s`` along the closed polygon ``(px, py)``."""
    bx, by = lens.raytrace(x=px, y=py)
    angle = torch.atan2(by - sy, bx - sx)
    d = torch.diff(torch.cat([angle, angle[:1]]))
    d = (d + math.pi) % (2 * math.pi) - math.pi
    return int(round(float(d.sum()) / (2 * math.pi)))


def _square_edge(cx, cy, size, n, dtype, device):
    t = torch.linspace(-size / 2, size / 2, n + 1, dtype=dtype, device=device)[:-1]
    h = size / 2
    px = torch.cat([t, torch.full_like(t, h), -t, torch.full_like(t, -h)]) + cx
    py = torch.cat([torch.full_like(t, -h), t, torch.full_like(t, h), -t]) + cy
    return px, py


def _circle(cx, cy, r, n, dtype, device):
    a = torch.arange(n, dtype=dtype, device=device) * (2 * math.pi / n)
    return cx + r * torch.cos(a), cy + r * torch.sin(a)


def find_images(
    lens: ThinLens,
    beta_x,
    beta_y,
    window: float = 8.0,
    centre: tuple[float, float] | None = None,
    resolution: float = 0.02,
    r_min: float = 1e-4,
    tol: float = 1e-12,
    max_iter: int = 50,
    warn: bool = True,
) -> LensImages:
    """All images of a point source at ``(beta_x, beta_y)`` (arcsec) inside a square window.

    See the module docstring for the method and the treatment of central images. Runs on the
    current values of the lens parameters, without gradients (see
    :class:`~skyfit.LensedPointSource` for differentiable image positions).

    Arguments:
        lens: any :class:`ThinLens`. beta_x, beta_y: source position (arcsec).
        window: side of the square search window (arcsec). centre: its centre (default: the mean
            of the mass centres, else the origin). resolution: grid spacing (arcsec).
        r_min: inner radius of the polar grids around mass centres (arcsec).
        tol: required ``|beta(theta) - beta_s|`` (arcsec). max_iter: Newton iterations.
        warn: issue :class:`ImageCountWarning` when images are missing.

    Example:
        >>> from skyfit import SIS
        >>> images = find_images(SIS(theta_E=1.0), 0.2, 0.0)
        >>> [round(v, 6) for v in images.x.tolist()]
        [1.2, -0.8]
        >>> [round(m, 4) for m in images.magnification.tolist()]
        [6.0, -4.0]
    """
    with torch.no_grad():
        centres = [(float(cx), float(cy)) for cx, cy in lens.centres()]
        dtype, device = torch.float64, None
        sx = torch.as_tensor(beta_x, dtype=dtype).reshape(())
        sy = torch.as_tensor(beta_y, dtype=dtype).reshape(())
        if centre is None:
            centre = ((sum(c[0] for c in centres) / len(centres), sum(c[1] for c in centres)
                       / len(centres)) if centres else (0.0, 0.0))
        cx, cy = float(centre[0]), float(centre[1])
        unique_centres = _distinct_centres(centres, r_min)
        x, y = _grid_candidates(lens, sx, sy, cx, cy, window, resolution, r_min, unique_centres,
                                dtype, device)
        images = _polish(lens, x, y, sx, sy, max_iter, tol, resolution)

        # index theorem: parities inside the window must add up to its winding number
        edge = _square_edge(cx, cy, window, 2000, dtype, device)
        winding = _winding(lens, sx, sy, *edge)
        central = {}
        for c in unique_centres:
            central[c] = _winding(lens, sx, sy, *_circle(c[0], c[1], r_min, 720, dtype, device))
        parities = _parity_sum(lens, *images, unique_centres, r_min)
        expected = winding - sum(central.values())
        if parities != expected and images[0].numel() > 0:
            images = _refine_near_images(lens, images, sx, sy, resolution, max_iter, tol, dtype,
                                         device)
            parities = _parity_sum(lens, *images, unique_centres, r_min)
        ix, iy = images
        if parities != expected and warn:
            warnings.warn(ImageCountWarning(_missing_images_message(
                ix.numel(), sx, sy, parities, winding, window, sum(central.values()), expected,
                resolution)), stacklevel=2)
        return _sorted_images(lens, ix, iy, sx, sy, central, r_min, winding)


def _distinct_centres(centres, r_min):
    """The mass centres with those closer than ``r_min`` to an earlier one dropped (one polar
    grid and one central winding number per distinct centre)."""
    unique_centres = []
    for c in centres:
        if all(math.hypot(c[0] - u[0], c[1] - u[1]) > r_min for u in unique_centres):
            unique_centres.append(c)
    return unique_centres


def _grid_candidates(lens, sx, sy, cx, cy, window, resolution, r_min, unique_centres, dtype,
                     device):
    """Newton starting points from the square grid over the window and the polar grids around
    the distinct mass centres, concatenated in that order."""
    n = max(8, int(math.ceil(window / resolution)) + 1)
    xs, ys = [], []
    cand = _candidates_on_square(lens, sx, sy, cx, cy, window, n, dtype, device)
    xs.append(cand[0]), ys.append(cand[1])
    for c in unique_centres:
        cand = _candidates_on_polar(lens, sx, sy, c[0], c[1], r_min, 4 * resolution + 2 * r_min,
                                    48, 96, dtype, device)
        xs.append(cand[0]), ys.append(cand[1])
    return torch.cat(xs), torch.cat(ys)


def _parity_sum(lens, ix, iy, unique_centres, r_min) -> int:
    """Sum of the parities of the images outside the discs of radius ``r_min`` around the
    centres (those discs are accounted for by their own winding numbers)."""
    mu = lens.magnification(x=ix, y=iy)
    outside = torch.ones_like(ix, dtype=torch.bool)
    for c in unique_centres:
        outside &= torch.hypot(ix - c[0], iy - c[1]) > r_min
    return int(torch.sign(mu[outside]).sum())


def _refine_near_images(lens, images, sx, sy, resolution, max_iter, tol, dtype, device):
    """Search a finer grid around every found image and polish again: missed images sit next
    to found ones (a close pair at a fold)."""
    xs, ys = [images[0]], [images[1]]
    for ix, iy in zip(*images):
        cand = _candidates_on_square(lens, sx, sy, float(ix), float(iy), 8 * resolution,
                                     161, dtype, device)
        xs.append(cand[0]), ys.append(cand[1])
    return _polish(lens, torch.cat(xs), torch.cat(ys), sx, sy, max_iter, tol, resolution)


def _missing_images_message(n_found, sx, sy, parities, winding, window, central_winding,
                            expected, resolution) -> str:
    return (f"found {n_found} image(s) of the source at ({float(sx):.4g}, {float(sy):.4g}) "
            f"with parities summing to {parities}, but the lens mapping winds {winding} "
            f"time(s) around the {window}\" window edge and {central_winding} time(s) "
            f"around the mass centres, so the parities must sum to {expected}: "
            f"{abs(expected - parities)} or more image(s) are missing. Decrease "
            f"`resolution` (now {resolution}\") or enlarge `window`.")


def _sorted_images(lens, ix, iy, sx, sy, central, r_min, winding) -> LensImages:
    """The images with magnifications and Fermat potentials, sorted by arrival time; centres
    that wind with no image within ``r_min`` are reported as unresolved."""
    mu = lens.magnification(x=ix, y=iy)
    fermat = lens.fermat_potential(x=ix, y=iy, beta_x=sx, beta_y=sy)
    order = torch.argsort(fermat)
    unresolved = []
    for c, w in central.items():
        inside = torch.hypot(ix - c[0], iy - c[1]) <= r_min
        if w != 0 and not bool(inside.any()):
            unresolved.append(c)
    return LensImages(ix[order], iy[order], mu[order], fermat[order], unresolved, winding)


def _polish(lens, x, y, sx, sy, max_iter, tol, resolution):
    if x.numel() == 0:
        return x, y
    x, y, res = _newton(lens, x, y, sx, sy, max_iter, tol)
    good = torch.isfinite(res) & (res < tol * 10)
    x, y = x[good], y[good]
    return _unique(x, y, max(1e-8, 1e-6 * resolution))
