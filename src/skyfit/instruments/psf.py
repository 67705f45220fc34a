"""Point-spread functions: a normalised kernel, convolution, and point-source images."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..errors import ShapeError
from ..params import Param
from .convolution import fft_convolve_transformed, kernel_transform
from .grid import PixelGrid

__all__ = ["PSF", "GaussianPSF", "PixelatedPSF"]


class PSF(ModuleDisplay, ck.Module):
    """Base class: a PSF sampled on the image pixel grid as an odd ``size x size`` kernel.

    Subclasses define ``kernel(pixel_scale, dtype=torch.float64)`` (normalised to sum 1, computed in
    ``dtype``, whatever the dtype of the parameters) and
    ``point_image(grid, x0, y0, flux)``.

    Example:
        >>> from skyfit import GaussianPSF
        >>> psf = GaussianPSF(sigma=0.1, size=7)
        >>> kernel = psf.kernel(0.05)  # pixel scale 0.05 arcsec
        >>> isinstance(psf, PSF), tuple(kernel.shape), round(kernel.sum().item(), 12)
        (True, (7, 7), 1.0)
    """

    size: int

    def convolve(self, image: torch.Tensor, pixel_scale: float, crop: int = 0) -> torch.Tensor:
        """Convolve ``image (..., H, W)`` (flux per pixel) with the PSF; flux is conserved.

        ``crop`` pixels are then removed from every edge (a scene rendered on a grid padded by
        half the kernel keeps the central ``(H - 2 crop, W - 2 crop)``; one slice, not two).
        """
        kernel = self.kernel(pixel_scale, dtype=image.dtype)
        return fft_convolve_transformed(image, kernel_transform(kernel, image.shape[-2:]),
                                        (self.size, self.size), crop)


def _trailing_axis(v, like: torch.Tensor) -> torch.Tensor:
    """``v`` as a tensor like ``like``, with one trailing axis if it has batch dimensions."""
    if not (isinstance(v, torch.Tensor) and v.dtype == like.dtype and v.device == like.device):
        v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v if v.ndim == 0 else v[..., None]


def _check_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ShapeError(f"PSF size must be a positive odd number of pixels, got {size}")
    return int(size)


class GaussianPSF(PSF):
    """Circular Gaussian PSF of standard deviation ``sigma`` (arcsec).

    The convolution kernel is the PSF sampled at pixel centres, normalised; a point source is
    rendered exactly, as the PSF integrated over each pixel (error functions), so a point source's
    image sums to its flux and its position is continuous below a pixel.

    Arguments:
        sigma: standard deviation (arcsec); FWHM = 2.3548 sigma. May be batched (one per epoch).
        size: kernel side in pixels (odd); should cover about +-4 sigma.

    Example:
        >>> psf = GaussianPSF(sigma=0.1, size=11)
        >>> round(psf.kernel(0.05).sum().item(), 12)
        1.0
    """

    def __init__(self, name: str | None = None, sigma=0.1, size: int = 21):
        super().__init__(name)
        self.size = _check_size(size)
        self.sigma = Param(
            "sigma", sigma, valid=(0.0, None), units="arcsec", description="PSF standard deviation"
        )

    @forward
    def kernel(self, pixel_scale: float, dtype=torch.float64, sigma=None) -> torch.Tensor:
        """Normalised ``(..., size, size)`` kernel on pixels of side ``pixel_scale`` arcsec."""
        sigma = torch.as_tensor(sigma).to(dtype)
        r = (torch.arange(self.size, dtype=sigma.dtype, device=sigma.device) - self.size // 2)
        r = r * pixel_scale
        s = sigma[..., None, None]
        k = torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / s**2)
        return k / k.sum(dim=(-2, -1), keepdim=True)

    @forward
    def point_image(self, grid: PixelGrid, x0, y0, flux, sigma=None) -> torch.Tensor:
        """Image (flux per pixel) of a point source of ``flux`` at ``(x0, y0)``; batch dims of
        ``x0, y0, flux, sigma`` broadcast in front of the grid shape."""
        x_edges, y_edges = grid.pixel_edges()
        x0, y0 = grid.to_grid_frame(x0, y0)
        # scalars broadcast against the edges as they are (no unsqueeze, no autograd node)
        x0, y0 = _trailing_axis(x0, x_edges), _trailing_axis(y0, x_edges)
        flux, sigma = _trailing_axis(flux, x_edges), _trailing_axis(sigma, x_edges)
        ndtr = torch.special.ndtr
        # the PSF integrated over each pixel: differences of the normal CDF at the pixel edges
        px = torch.diff(ndtr((x_edges - x0) / sigma), dim=-1)
        py = torch.diff(ndtr((y_edges - y0) / sigma), dim=-1)
        # flux on the (short) column profile first: one pass less over the image
        rows, columns = (flux * py)[..., :, None], px[..., None, :]
        if torch.compiler.is_compiling():
            # as a (K = 1) matrix product, the same numbers: inductor then computes the two
            # profiles once instead of fusing their error functions into every image pixel
            return torch.matmul(rows, columns)
        return rows * columns


class PixelatedPSF(PSF):
    """A PSF given as an image (for instance from stars), normalised to sum 1.

    The kernel must be sampled on the image pixel grid with an odd side and its centre at the middle
    pixel. Point sources are shifted by a Fourier phase ramp, so sub-pixel positions are continuous
    and differentiable and the image sums to the flux.

    Arguments:
        kernel: ``(k, k)`` PSF image (any positive normalisation).

    Example:
        >>> import torch
        >>> psf = PixelatedPSF(kernel=torch.ones(5, 5))
        >>> round(psf.kernel(0.1).sum().item(), 12)
        1.0
    """

    def __init__(self, name: str | None = None, kernel=None):
        super().__init__(name)
        if kernel is None:
            raise ValueError("PixelatedPSF needs `kernel`: an odd-sided square PSF image")
        kernel = torch.as_tensor(kernel)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
            raise ShapeError(f"PSF kernel must be square 2-D, got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all() or kernel.sum() <= 0:
            raise ValueError("PSF kernel must be finite with a positive sum")
        self.size = _check_size(kernel.shape[0])
        self.pixels = Param(
            "pixels", kernel / kernel.sum(), shape=tuple(kernel.shape), units="dimensionless",
            description="PSF image on the data pixel grid",
        )

    @forward
    def kernel(self, pixel_scale: float, dtype=torch.float64, pixels=None) -> torch.Tensor:
        """The convolution kernel: the PSF image normalised to sum 1, in ``dtype`` (``pixel_scale``
        must match the grid it was sampled on; it is not resampled)."""
        pixels = pixels.to(dtype)
        return pixels / pixels.sum(dim=(-2, -1), keepdim=True)

    @forward
    def point_image(self, grid: PixelGrid, x0, y0, flux, pixels=None) -> torch.Tensor:
        """Image (flux per pixel) of point sources of total ``flux`` at ``(x0, y0)`` (arcsec) on
        ``grid``: the PSF image shifted by a Fourier phase ramp, so positions are continuous
        below a pixel."""
        x, y = grid.coordinates()
        ny, nx = grid.shape
        k = self.size
        pad = k
        Hc, Wc = ny + 2 * pad, nx + 2 * pad
        kern = pixels / pixels.sum(dim=(-2, -1), keepdim=True)
        canvas = torch.zeros(kern.shape[:-2] + (Hc, Wc), dtype=kern.dtype, device=kern.device)
        canvas[..., :k, :k] = kern
        # roll so the kernel centre sits on canvas pixel (0, 0); the phase ramp then moves it
        canvas = torch.roll(canvas, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))
        as_t = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
        # in the grid's own frame (the identity unless the grid is rotated on the sky)
        (x0, y0), (x00, y00) = grid.to_grid_frame(as_t(x0), as_t(y0)), \
            grid.to_grid_frame(x[0, 0], y[0, 0])
        u = (x0 - x00) / grid.pixel_scale + pad  # canvas column of the source
        v = (y0 - y00) / grid.pixel_scale + pad  # canvas row of the source
        fy = torch.fft.fftfreq(Hc, dtype=x.dtype, device=x.device)
        fx = torch.fft.rfftfreq(Wc, dtype=x.dtype, device=x.device)
        phase = fy[:, None] * v[..., None, None] + fx[None, :] * u[..., None, None]
        shifted = torch.fft.irfft2(torch.fft.rfft2(canvas) * torch.exp(-2j * torch.pi * phase),
                                   s=(Hc, Wc))
        img = shifted[..., pad : pad + ny, pad : pad + nx]
        # the phase ramp shifts on a periodic canvas: a source far outside the field would wrap
        # around into it. The kernel has finite support, so a source more than half a kernel
        # (plus the pixel) beyond the edge puts no light in the image: zero it exactly.
        reach = k // 2 + 1
        col, row = u - pad, v - pad
        on = (col > -reach) & (col < nx - 1 + reach) & (row > -reach) & (row < ny - 1 + reach)
        return (as_t(flux) * on.to(img.dtype))[..., None, None] * img
