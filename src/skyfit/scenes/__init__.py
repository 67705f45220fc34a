"""Scenes: sources, PSF and grid combined into model images (single and multi-epoch)."""

from .scene import ImageStack, Scene

__all__ = ["Scene", "ImageStack"]
