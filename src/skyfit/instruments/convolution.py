"""FFT convolution of image stacks with PSF kernels (pure torch)."""

from __future__ import annotations

import torch

from ..errors import ShapeError

__all__ = ["fft_convolve", "kernel_transform", "fft_convolve_transformed"]


def fft_convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve ``image (..., H, W)`` with ``kernel (..., k, k)`` (odd ``k``, centre at ``k // 2``).

    Zero-padded linear convolution cropped to the input size ("same"); batch dimensions of the
    image and the kernel broadcast. Cost ``O(H W log(H W))`` whatever the kernel size.

    Example:
        >>> import torch
        >>> image = torch.zeros(9, 9, dtype=torch.float64); image[4, 4] = 1.0  # a point source
        >>> kernel = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)).double()
        >>> out = fft_convolve(image, kernel)
        >>> bool(torch.allclose(out[2:7, 2:7], kernel)), round((out.sum() / kernel.sum()).item(), 6)
        (True, 1.0)
    """
    return fft_convolve_transformed(image, kernel_transform(kernel, image.shape[-2:]),
                                    kernel.shape[-2:])


def kernel_transform(kernel: torch.Tensor, image_shape) -> torch.Tensor:
    """The kernel's real FFT on the zero-padded grid that :func:`fft_convolve` uses for images
    of ``image_shape``; compute it once when the kernel is fixed."""
    kh, kw = kernel.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ShapeError(f"PSF kernel sides must be odd so it has a centre pixel, got {(kh, kw)}")
    H, W = image_shape
    return torch.fft.rfft2(kernel, s=(H + kh - 1, W + kw - 1))


def fft_convolve_transformed(image: torch.Tensor, kernel_ft: torch.Tensor, kernel_shape,
                             crop: int = 0):
    """:func:`fft_convolve` with the kernel given by :func:`kernel_transform`; ``crop`` pixels
    are also removed from every edge of the result."""
    kh, kw = kernel_shape
    H, W = image.shape[-2:]
    if not 0 <= 2 * crop < min(H, W):
        raise ShapeError(f"cannot crop {crop} pixels from each edge of a {(H, W)} image")
    shape = (H + kh - 1, W + kw - 1)
    out = torch.fft.irfft2(torch.fft.rfft2(image, s=shape) * kernel_ft, s=shape)
    i, j = kh // 2 + crop, kw // 2 + crop
    return out[..., i : i + H - 2 * crop, j : j + W - 2 * crop]
