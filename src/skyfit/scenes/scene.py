"""A scene: sources on a pixel grid, seen through a PSF."""

from __future__ import annotations

from collections.abc import Sequence

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from .._graph import ModuleList
from ..errors import ShapeError
from ..instruments.grid import PixelGrid
from ..instruments.psf import PSF
from ..sources.base import Source
from ..sources.point import PointSource

__all__ = ["Scene", "ImageStack"]


class Scene(ModuleDisplay, ck.Module):
    """Extended sources and point sources on a :class:`PixelGrid`, seen through a PSF.

    ``scene()`` returns the model image in flux per pixel, shape ``batch + grid.shape``. Extended
    sources are sampled on the supersampled grid, integrated to pixels and convolved with the
    PSF on a grid padded by half the kernel (so light from just outside the field scatters in);
    point sources are drawn by the PSF directly (exact sub-pixel positions).

    **Many epochs in one call.** Any parameter may carry a leading epoch axis: a point source
    whose ``flux`` has shape ``(n_epochs,)`` (for instance from
    :func:`~skyfit.link_flux_to_light_curve`) makes ``scene()`` return ``(n_epochs, ny, nx)``
    while the static host galaxy is rendered and convolved once. This is the batched
    multi-epoch model; :class:`ImageStack` is the same model as one Scene per epoch.

    Arguments:
        grid: the pixel grid of the data.
        sources: extended :class:`~skyfit.Source` modules (anything with ``brightness(x, y)``).
        psf: a :class:`~skyfit.PSF` or None (then point sources are not allowed).
        point_sources: :class:`~skyfit.PointSource` modules.

    Example:
        >>> from skyfit import Scene, PixelGrid, Sersic, PointSource, GaussianPSF
        >>> grid = PixelGrid((50, 50), 0.04, supersample=3)
        >>> scene = Scene(grid, [Sersic(flux=10.0, Re=0.2)], GaussianPSF(sigma=0.05, size=15),
        ...               [PointSource(x0=0.1, flux=2.0)])
        >>> scene().shape
        torch.Size([50, 50])
    """

    def __init__(
        self,
        grid: PixelGrid,
        sources: Sequence[Source] = (),
        psf: PSF | None = None,
        point_sources: Sequence[PointSource] = (),
        name: str | None = None,
    ):
        super().__init__(name)
        if psf is None and len(point_sources) > 0:
            raise ValueError("point sources are drawn by the PSF: give the Scene a `psf`")
        self.grid = grid
        self.sources = ModuleList(sources, name="sources")
        self.point_sources = ModuleList(point_sources, name="point_sources")
        self.psf = psf
        pad = psf.size // 2 if psf is not None else 0
        if pad and pad * 2 + 1 > 2 * max(grid.shape) + 1:
            raise ShapeError(f"PSF of {psf.size} pixels is larger than twice the grid {grid.shape}")
        self.pad = pad
        ny, nx = grid.shape
        render_grid = (
            PixelGrid((ny + 2 * pad, nx + 2 * pad), grid.pixel_scale, grid.center,
                      grid.supersample, grid.dtype, grid.device, rotation=grid.rotation)
            if pad else grid
        )
        # a private helper grid, not a node of the model graph
        self.__dict__["render_grid"] = render_grid

    @forward
    def extended_image(self) -> torch.Tensor:
        """Flux per pixel of the extended sources, before the PSF, on the padded grid."""
        return self._extended_image()

    def _extended_image(self) -> torch.Tensor:
        # plain method: called inside __call__'s active context, saving a forward-call overhead
        x, y = self.render_grid.sample_coordinates()
        total = None
        for source in self.sources:
            sb = source.brightness(x, y)
            total = sb if total is None else total + sb
        return self.render_grid.integrate_samples(total)

    @forward
    def __call__(self) -> torch.Tensor:
        ny, nx = self.grid.shape
        image = None
        if self.sources:
            image = self._extended_image()
            if self.psf is not None:
                image = self.psf.convolve(image, self.grid.pixel_scale, crop=self.pad)
        for ps in self.point_sources:
            # inside this forward call the Params hold their current values
            x0, y0, flux = ps.x0.value, ps.y0.value, ps.flux.value
            point = self.psf.point_image(self.grid, x0, y0, flux)
            image = point if image is None else image + point
        if image is None:
            x, _ = self.grid.coordinates()
            image = torch.zeros((ny, nx), dtype=x.dtype, device=x.device)
        return image


class ImageStack(ModuleDisplay, ck.Module):
    """Several scenes (one per epoch or band) returned as one ``(n_images, ny, nx)`` stack.

    Parameters are shared between the scenes by caskade links, e.g.
    ``stack.scenes[i].point_sources[0].x0 = stack.scenes[0].point_sources[0].x0``. Simple and
    flexible (each scene may differ in anything), but it calls every module once per image: for
    many epochs of one grid prefer a single :class:`Scene` with an epoch axis on the parameters.

    Example:
        >>> from skyfit import Gaussian, PixelGrid, Scene
        >>> grid = PixelGrid((16, 16), pixel_scale=0.1)
        >>> galaxy = Gaussian(sigma=0.2, flux=10.0)  # in both scenes: its Params are shared
        >>> stack = ImageStack([Scene(grid, [galaxy], name="a"), Scene(grid, [galaxy], name="b")])
        >>> tuple(stack().shape)
        (2, 16, 16)
    """

    def __init__(self, scenes: Sequence[ck.Module], name: str | None = None):
        super().__init__(name)
        if len(scenes) == 0:
            raise ValueError("ImageStack needs at least one scene")
        self.scenes = ModuleList(scenes, name="scenes")

    @forward
    def __call__(self) -> torch.Tensor:
        return torch.stack([scene() for scene in self.scenes], dim=0)
