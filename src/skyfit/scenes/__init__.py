"""Scenes: sources, PSF and grid combined into model images (single and multi-epoch)."""

from .scene import ImageStack, Scene

__all__ = ["Scene", "ImageStack"]

from .lensed import LensedImage, LensedSource, ResolutionWarning  # noqa: E402

__all__ += ["LensedImage", "LensedSource", "ResolutionWarning"]

from .lens_start import lensed_image_start  # noqa: E402

__all__ += ["lensed_image_start"]
