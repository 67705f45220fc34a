"""Pixel grids: where pixels sit on the sky and how surface brightness becomes flux per pixel."""

from __future__ import annotations

import math

import caskade as ck
import torch

from .._display import ModuleDisplay
from ..errors import ShapeError

__all__ = ["PixelGrid"]


class PixelGrid(ModuleDisplay, ck.Module):
    """A rectangular grid of square pixels on the sky.

    Conventions (used everywhere in skyfit):

    - Angles on the sky are in arcsec; ``x`` grows to the right (columns), ``y`` grows up (rows).
    - An image array is indexed ``image[..., row, column]`` = ``image[..., y, x]``; plot it with
      ``origin="lower"``.
    - Pixel ``(i, j)`` has its centre at
      ``x = x_center + (j - (nx - 1) / 2) * pixel_scale``,
      ``y = y_center + (i - (ny - 1) / 2) * pixel_scale``.
    - Images are **flux per pixel**: the integral of the surface brightness (flux / arcsec^2) over
      the pixel, so an image sums to the total flux of everything it shows. The integral is the
      midpoint rule on ``supersample x supersample`` sub-pixels.
    - ``rotation`` (rad, ccw) turns the pixel axes on the sky about ``center``: pixel offsets
      ``(dx, dy)`` from the centre sit at ``center + R(rotation) (dx, dy)``. ``coordinates()``
      and the sampling grids are on the sky; :meth:`pixel_edges` and :attr:`extent` are in the
      grid's own (unrotated) frame, and :meth:`to_grid_frame` maps sky positions into it.
    - From a FITS WCS (:meth:`from_wcs`): sky ``(x, y)`` are tangent-plane offsets in arcsec
      from the WCS reference point ``CRVAL``, ``x`` towards the west (``-dRA cos(dec)``: to the
      right on a north-up, east-left image) and ``y`` towards the north.

    Arguments:
        shape: ``(ny, nx)`` number of pixel rows and columns.
        pixel_scale: pixel side in arcsec.
        center: ``(x, y)`` sky position of the grid centre, arcsec.
        supersample: sub-pixels per pixel side used to integrate extended sources.
        dtype, device: of the coordinate tensors (default float64 on the CPU).
        rotation: angle of the pixel axes on the sky, rad, counter-clockwise.

    Example:
        >>> grid = PixelGrid((50, 50), pixel_scale=0.04, supersample=3)
        >>> x, y = grid.coordinates()
        >>> tuple(x.shape), round(grid.pixel_area, 4)
        ((50, 50), 0.0016)
    """

    def __init__(
        self,
        shape: tuple[int, int],
        pixel_scale: float,
        center: tuple[float, float] = (0.0, 0.0),
        supersample: int = 1,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str | None = None,
        rotation: float = 0.0,
    ):
        super().__init__(name)
        if len(shape) != 2 or min(shape) < 1:
            raise ShapeError(f"grid shape must be (ny, nx) with positive sizes, got {shape}")
        if not pixel_scale > 0:
            raise ValueError(f"pixel_scale must be positive (arcsec), got {pixel_scale}")
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.pixel_scale = float(pixel_scale)
        self.center = (float(center[0]), float(center[1]))
        self.supersample = int(supersample)
        self.rotation = float(rotation)
        self.dtype = dtype
        self.device = device
        self._coords = self._make(1)
        self._edges = self._make_edges()
        self._subcoords = self._make(self.supersample)
        self._samples = self._make_samples()

    def _make_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.supersample
        if s == 1:
            return self._coords
        x, y = self._coords
        kw = dict(dtype=self.dtype, device=self.device)
        offset = (torch.arange(s, **kw) - (s - 1) / 2) * (self.pixel_scale / s)
        # (s * s, ny, nx): sub-pixel (row, column) offset first, then the pixel
        dx, dy = self._rotate(offset.repeat(s)[:, None, None],
                              offset.repeat_interleave(s)[:, None, None])
        return (x + dx).contiguous(), (y + dy).contiguous()

    def _rotate(self, dx, dy, sign: float = 1.0):
        if self.rotation == 0.0:
            return dx, dy
        c, s = math.cos(self.rotation), sign * math.sin(self.rotation)
        return c * dx - s * dy, s * dx + c * dy

    def to_grid_frame(self, x, y):
        """Sky positions ``(x, y)`` (arcsec) in the grid's own frame, where :meth:`pixel_edges`
        are (the identity for ``rotation=0``)."""
        if self.rotation == 0.0:
            return x, y
        cx, cy = self.center
        dx, dy = self._rotate(x - cx, y - cy, sign=-1.0)
        return dx + cx, dy + cy

    def _make_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        ny, nx = self.shape
        kw = dict(dtype=self.dtype, device=self.device)
        xe = self.center[0] + (torch.arange(nx + 1, **kw) - nx / 2) * self.pixel_scale
        ye = self.center[1] + (torch.arange(ny + 1, **kw) - ny / 2) * self.pixel_scale
        return xe, ye

    def _make(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        ny, nx = self.shape
        step = self.pixel_scale / s
        kw = dict(dtype=self.dtype, device=self.device)
        xs = self.center[0] + (torch.arange(nx * s, **kw) - (nx * s - 1) / 2) * step
        ys = self.center[1] + (torch.arange(ny * s, **kw) - (ny * s - 1) / 2) * step
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        if self.rotation != 0.0:  # pixel offsets from the centre, turned onto the sky
            cx, cy = self.center
            dx, dy = self._rotate(x - cx, y - cy)
            x, y = dx + cx, dy + cy
        if s == 1:
            # the pixel centres (the samples of an unsupersampled grid) are contiguous, not
            # meshgrid's broadcast views: a compiled simulator then walks every coordinate array
            # in one flat loop, so inductor fuses the whole ray trace and profile into it (with
            # the views it split them into loops that store their intermediates, 1.3x slower)
            return x.contiguous(), y.contiguous()
        return x, y  # views: (ny s, nx s) arrays of a large grid would cost memory for nothing

    @classmethod
    def from_wcs(cls, wcs, shape: tuple[int, int] | None = None, supersample: int = 1,
                 **kwargs) -> PixelGrid:
        """The grid of an image whose pixels an astropy WCS (or a FITS header) places on the sky.

        Pixel scale (arcsec), rotation and the grid centre follow from the WCS's ``CD`` (or
        ``PC`` x ``CDELT``) matrix and reference pixel ``CRPIX``; sky ``(x, y)`` are arcsec
        offsets from ``CRVAL``, ``x`` west and ``y`` north (see the class conventions). Only
        square pixels and images with the sky's parity (north-up east-left after a rotation)
        are grids; for a mirrored image, flip the array's columns and the WCS first.

        Arguments:
            wcs: an ``astropy.wcs.WCS`` or a FITS header with a celestial WCS.
            shape: ``(ny, nx)``; default the WCS's ``pixel_shape`` (or ``NAXIS2, NAXIS1``).
            supersample, kwargs: as for the constructor.

        Example:
            >>> from astropy.wcs import WCS
            >>> w = WCS(naxis=2)
            >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            >>> w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [25.5, 25.5]
            >>> w.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
            >>> grid = PixelGrid.from_wcs(w, (50, 50))
            >>> round(grid.pixel_scale, 6), grid.rotation, grid.center
            (0.04, 0.0, (0.0, 0.0))
        """
        from astropy.wcs import WCS

        if not isinstance(wcs, WCS):
            wcs = WCS(wcs)
        wcs = wcs.celestial
        if shape is None:
            if wcs.pixel_shape is None:
                raise ShapeError("the WCS has no image size: pass shape=(ny, nx)")
            shape = tuple(wcs.pixel_shape[::-1])
        # (dxi, deta) per pixel step (column, row), arcsec; x = -xi (west), y = eta (north)
        matrix = wcs.pixel_scale_matrix * 3600.0
        matrix = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64) @ torch.tensor(
            matrix, dtype=torch.float64)
        det = float(torch.linalg.det(matrix))
        if det <= 0:
            raise ValueError("the WCS mirrors the sky (east to the right on a north-up image): "
                             "flip the image's columns and the WCS before making a PixelGrid")
        scale = math.sqrt(det)
        rotation = math.atan2(float(matrix[1, 0]), float(matrix[0, 0]))
        if not torch.allclose(matrix / scale, torch.tensor(
                [[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation),
                                                              math.cos(rotation)]],
                dtype=torch.float64), atol=1e-6):
            raise ValueError("the WCS's pixels are not square (skewed or of two sizes)")
        ny, nx = shape
        offset = torch.tensor([(nx - 1) / 2, (ny - 1) / 2], dtype=torch.float64) - (
            torch.tensor(wcs.wcs.crpix, dtype=torch.float64) - 1.0)  # FITS pixels count from 1
        center = (matrix @ offset).tolist()
        return cls(shape, scale, center=(center[0], center[1]), supersample=supersample,
                   rotation=rotation % (2 * math.pi), **kwargs)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in arcsec^2."""
        return self.pixel_scale**2

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` pixel edges in arcsec, for ``imshow(extent=...)``."""
        ny, nx = self.shape
        hx, hy = nx * self.pixel_scale / 2, ny * self.pixel_scale / 2
        return (self.center[0] - hx, self.center[0] + hx, self.center[1] - hy, self.center[1] + hy)

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates ``(x, y)``, each of shape ``(ny, nx)``, arcsec."""
        return self._coords

    def pixel_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel edges along each axis, arcsec: ``x (nx + 1,)`` and ``y (ny + 1,)``, increasing."""
        return self._edges

    def subpixel_coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sub-pixel-centre coordinates, each ``(ny * s, nx * s)`` for ``s = supersample``."""
        return self._subcoords

    def integrate(self, surface_brightness: torch.Tensor) -> torch.Tensor:
        """Flux per pixel from surface brightness sampled on :meth:`subpixel_coordinates`.

        ``surface_brightness`` has shape ``(..., ny * s, nx * s)`` in flux / arcsec^2; the result
        has shape ``(..., ny, nx)`` in flux per pixel (midpoint rule).
        """
        s = self.supersample
        ny, nx = self.shape
        if tuple(surface_brightness.shape[-2:]) != (ny * s, nx * s):
            raise ShapeError(
                f"surface brightness has trailing shape {tuple(surface_brightness.shape[-2:])}, "
                f"expected {(ny * s, nx * s)} for a {self.shape} grid supersampled {s}x"
            )
        batch = surface_brightness.shape[:-2]
        blocks = surface_brightness.reshape(*batch, ny, s, nx, s)
        return blocks.mean(dim=(-3, -1)) * self.pixel_area

    def sample_coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The sub-pixel centres of :meth:`subpixel_coordinates` in the layout that
        :meth:`integrate_samples` takes: ``(s * s, ny, nx)`` (sub-pixel offset first), or
        ``(ny, nx)`` without supersampling.

        Scenes render in this layout: the pixel rows stay contiguous, so the integral is a sum
        of whole planes, which vectorises (about 1.6x faster than the image layout's
        ``reshape(ny, s, nx, s).mean`` for a compiled SIE + Sersic simulator).
        """
        return self._samples

    def integrate_samples(self, surface_brightness: torch.Tensor) -> torch.Tensor:
        """:meth:`integrate` for surface brightness sampled on :meth:`sample_coordinates`:
        ``(..., s * s, ny, nx)`` (or ``(..., ny, nx)`` when ``s = 1``) to ``(..., ny, nx)``."""
        expected = tuple(self._samples[0].shape)
        if tuple(surface_brightness.shape[-len(expected):]) != expected:
            raise ShapeError(
                f"surface brightness has trailing shape "
                f"{tuple(surface_brightness.shape[-len(expected):])}, expected {expected} (the "
                f"shape of sample_coordinates() of a {self.shape} grid supersampled "
                f"{self.supersample}x)")
        if self.supersample == 1:
            return surface_brightness * self.pixel_area
        return surface_brightness.mean(dim=-3) * self.pixel_area

    def to(self, device=None, dtype=None) -> PixelGrid:
        """Move the coordinate tensors to another device or dtype (in place; returns self)."""
        if dtype is not None:
            self.dtype = dtype
        if device is not None:
            self.device = device
        self._coords = self._make(1)
        self._edges = self._make_edges()
        self._subcoords = self._make(self.supersample)
        self._samples = self._make_samples()
        super().to(device=device, dtype=dtype)
        return self
