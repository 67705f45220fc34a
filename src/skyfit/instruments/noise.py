"""CCD noise: Poisson photon noise plus Gaussian read noise."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from ..params import Param

__all__ = ["ReadPoissonNoise"]


class ReadPoissonNoise(ModuleDisplay, ck.Module):
    """Photon (Poisson) noise plus read noise, for images in flux per pixel (electrons / s).

    A pixel receiving ``m`` e-/s (model + sky) for ``exposure_time`` s collects ``N ~ Poisson(m t)``
    electrons and is read with Gaussian noise of ``read_noise`` electrons; the data are
    ``(N + read) / t - sky``. Its variance in (e-/s)^2 is ``m / t + (read_noise / t)^2``.

    Arguments:
        exposure_time: seconds. read_noise: electrons (rms) per pixel. sky: sky level in e-/s per
        pixel, added to the model for the noise only (the data are sky-subtracted).

    Example:
        >>> import torch
        >>> noise = ReadPoissonNoise(exposure_time=25.0, read_noise=2.5)
        >>> v = noise.variance(torch.tensor([0.0, 1.0], dtype=torch.float64))  # (2.5/25)^2, + 1/25
        >>> [round(value, 12) for value in v.tolist()]
        [0.01, 0.05]
    """

    def __init__(self, name: str | None = None, exposure_time=1.0, read_noise=0.0, sky=0.0):
        super().__init__(name)
        for label, v in (("read_noise", read_noise), ("sky", sky)):
            if v is not None and (torch.as_tensor(v) < 0).any():
                raise ValueError(f"{label} must be >= 0, got {v}")
        if exposure_time is not None and not (torch.as_tensor(exposure_time) > 0).all():
            raise ValueError(f"exposure_time must be > 0 seconds, got {exposure_time}")
        self.exposure_time = Param(
            "exposure_time", exposure_time, valid=(0.0, None), units="s", description="exposure"
        )
        self.read_noise = Param(
            "read_noise", read_noise, units="e-", description="read noise rms"
        )
        self.sky = Param("sky", sky, units="e-/s/pixel",
                            description="sky level (subtracted from the data, kept in the noise)")

    @forward
    def variance(self, model: torch.Tensor, exposure_time=None, read_noise=None, sky=None):
        """Per-pixel variance of the data given the noiseless ``model`` image, (e-/s)^2."""
        rate = (model + sky).clamp(min=0.0)
        return rate / exposure_time + (read_noise / exposure_time) ** 2

    @forward
    def sample(self, model: torch.Tensor, generator: torch.Generator | None = None,
               exposure_time=None, read_noise=None, sky=None) -> torch.Tensor:
        """Draw one noisy realisation of ``model`` (seeded through ``generator``)."""
        with torch.no_grad():
            rate = (model + sky).clamp(min=0.0) * exposure_time
            counts = torch.poisson(rate, generator=generator)
            read = torch.randn(model.shape, generator=generator, dtype=model.dtype,
                               device=model.device) * read_noise
            return (counts + read) / exposure_time - sky
