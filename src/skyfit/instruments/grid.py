"""Pixel grids: where pixels sit on the sky and how surface brightness becomes flux per pixel."""

from __future__ import annotations

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

    Arguments:
        shape: ``(ny, nx)`` number of pixel rows and columns.
        pixel_scale: pixel side in arcsec.
        center: ``(x, y)`` sky position of the grid centre, arcsec.
        supersample: sub-pixels per pixel side used to integrate extended sources.
        dtype, device: of the coordinate tensors (default float64 on the CPU).

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
        dx = offset.repeat(s)[:, None, None]
        dy = offset.repeat_interleave(s)[:, None, None]
        return (x + dx).contiguous(), (y + dy).contiguous()

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
        if s == 1:
            # the pixel centres (the samples of an unsupersampled grid) are contiguous, not
            # meshgrid's broadcast views: a compiled simulator then walks every coordinate array
            # in one flat loop, so inductor fuses the whole ray trace and profile into it (with
            # the views it split them into loops that store their intermediates, 1.3x slower)
            return x.contiguous(), y.contiguous()
        return x, y  # views: (ny s, nx s) arrays of a large grid would cost memory for nothing

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
