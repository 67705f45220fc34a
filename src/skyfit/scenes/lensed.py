"""Lensed images: sources seen through a mass model, plus lens light and lensed point sources."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._forward import forward
from .._graph import ModuleList
from ..errors import ParameterRangeError
from ..instruments.grid import PixelGrid
from ..instruments.psf import PSF
from ..lenses.base import ThinLens
from ..lenses.point_source import LensedPointSource
from ..sources.base import Source
from .scene import Scene

__all__ = ["LensedSource", "LensedImage", "ResolutionWarning"]


class ResolutionWarning(UserWarning):
    """The pixel grid (with its supersampling) is too coarse for a source it renders."""


class LensedSource(Source):
    """Surface brightness of ``sources`` behind ``lens``, at image-plane coordinates.

    Ray tracing: ``I(theta) = sum_k I_k(beta(theta))`` with ``beta = theta - alpha(theta)``
    (surface brightness is conserved by lensing), computed once for all the sources. Any
    :class:`~skyfit.Source` can be lensed. Batch many lens parameter sets with ``torch.vmap``
    (native leading batch dimensions of the lens would be taken by the sources as their own).

    Example:
        >>> import torch
        >>> from skyfit import SIS, Sersic
        >>> arc = LensedSource(SIS(theta_E=1.0), [Sersic(Re=0.1)])
        >>> arc.brightness(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.0])).shape
        torch.Size([2])
    """

    def __init__(self, lens: ThinLens, sources: Sequence[Source], name: str | None = None):
        super().__init__(name)
        if not isinstance(lens, ThinLens):
            raise TypeError(f"lens must be a ThinLens mass model, got {type(lens).__name__}")
        self.lens = lens
        self.sources = ModuleList(sources, name="sources")

    @forward
    def brightness(self, x, y):
        """Surface brightness (flux / arcsec^2) seen at image-plane ``(x, y)`` (arcsec): the sources
        evaluated at the ray-traced source-plane positions (lensing conserves surface
        brightness)."""
        bx, by = self.lens.raytrace(x, y)
        total = torch.zeros((), dtype=bx.dtype, device=bx.device)
        for source in self.sources:
            total = total + source.brightness(bx, by)
        return total


class LensedImage(ModuleDisplay, ck.Module):
    """Simulator of a strong lens: lensed sources + lens light + lensed point sources.

    ``image()`` (or calling the module) returns flux per pixel on ``grid``: the lensed sources
    and the lens light are sampled on the supersampled grid (``grid.supersample``), integrated to
    pixels and convolved with the PSF exactly as by :class:`~skyfit.Scene` (which does the
    rendering); each image of each lensed point source is drawn by the PSF at its sub-pixel
    position with its magnified flux. To simulate many parameter sets at once, ``torch.vmap``
    over flat parameter vectors (point sources excepted: their number of images varies). On a
    CPU, ``torch.compile(torch.vmap(sim))`` fuses the ray tracing and the light profiles into one
    loop (the speed-up over eager is in ``benchmarks/RESULTS.md``); call it on chunks of a few
    parameter sets (about a million sub-pixels per call) so the supersampled images stay in
    cache until the PSF is applied (see ``benchmarks/bench_lensing.py``).

    Arguments:
        grid: the pixel grid. lens: the mass model (:class:`~skyfit.ThinLens`).
        sources: extended sources behind the lens. lens_light: unlensed sources (the deflector's
            light). psf: a :class:`~skyfit.PSF` or None. point_sources:
            :class:`~skyfit.LensedPointSource` / :class:`~skyfit.LensedSupernova` behind ``lens``.

    Raises ``ParameterRangeError`` for a parameter value outside its Param's ``valid`` range and
    warns with :class:`ResolutionWarning` when a source is smaller than the sub-pixels.

    Example:
        >>> from skyfit import PixelGrid, SIE, Sersic, GaussianPSF
        >>> grid = PixelGrid((64, 64), 0.05, supersample=2)
        >>> sim = LensedImage(grid, SIE(theta_E=1.0, q=0.7), [Sersic(Re=0.2, flux=10.0)],
        ...                   psf=GaussianPSF(sigma=0.05, size=11))
        >>> sim().shape
        torch.Size([64, 64])
    """

    def __init__(
        self,
        grid: PixelGrid,
        lens: ThinLens,
        sources: Sequence[Source] = (),
        lens_light: Sequence[Source] = (),
        psf: PSF | None = None,
        point_sources: Sequence[LensedPointSource] = (),
        name: str | None = None,
    ):
        super().__init__(name)
        sources, lens_light = list(sources), list(lens_light)
        extended = ([LensedSource(lens, sources)] if sources else []) + lens_light
        self.scene = Scene(grid, extended, psf)
        self.grid = grid
        self.lens = lens
        self.psf = psf
        if point_sources and psf is None:
            raise ValueError("lensed point sources are drawn by the PSF: give LensedImage a `psf`")
        for ps in point_sources:
            if not isinstance(ps, LensedPointSource):
                raise TypeError(f"point_sources takes LensedPointSource modules, got "
                                f"{type(ps).__name__}")
            if ps.lens is not lens:
                raise ValueError(f"point source {ps.name} is behind another lens than this "
                                 "image's: build it with the same lens object")
        self.point_sources = ModuleList(point_sources, name="point_sources")
        check_valid_values([lens, *sources, *lens_light, *point_sources])
        check_resolution(grid, sources + lens_light)

    @forward
    def image(self) -> torch.Tensor:
        """Model image, flux per pixel: ``grid.shape`` (with leading epoch dimensions when
        point-source fluxes carry them)."""
        image = self.scene()
        for ps in self.point_sources:
            x, y, flux = ps.position_flux()
            image = image + self.psf.point_image(self.grid, x, y, flux).sum(dim=-3)
        return image

    @forward
    def __call__(self) -> torch.Tensor:
        return self.image()


def check_valid_values(modules: Sequence[ck.Module]) -> None:
    """Raise :class:`~skyfit.errors.ParameterRangeError` naming every Param (of ``modules`` and
    their sub-modules) whose current value lies outside its ``valid`` range."""
    bad, seen = [], set()
    for module in modules:
        for node in module.topological_ordering():
            if not isinstance(node, ck.Param) or id(node) in seen or node.pointer or node.cyclic:
                continue
            seen.add(id(node))
            value, (lo, hi) = node.value, node.valid
            if value is None or (lo is None and hi is None):
                continue
            value = torch.as_tensor(value)
            if (lo is not None and bool((value < lo).any())) or (
                    hi is not None and bool((value > hi).any())):
                owner = sorted(p.name for p in node.parents)
                bad.append(f"{owner[0] if owner else '?'}.{node.name} = {value.tolist()} not in "
                           f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")
    if bad:
        raise ParameterRangeError("parameter values outside their valid range: " + "; ".join(bad))


def check_resolution(grid: PixelGrid, sources: Sequence[Source]) -> None:
    """Warn with :class:`ResolutionWarning` when a source's size (``Re`` or ``sigma``) is below
    the sub-pixel side ``pixel_scale / supersample``: it would be aliased."""
    sub = grid.pixel_scale / grid.supersample
    for source in sources:
        for name in ("Re", "sigma"):
            param = source.children.get(name)
            if not isinstance(param, ck.Param) or param.value is None:
                continue
            size = float(torch.as_tensor(param.value).min())
            if size < sub:
                need = math.ceil(grid.pixel_scale / size)
                warnings.warn(ResolutionWarning(
                    f"{source.name}.{name} = {size:g}\" is smaller than the sub-pixels "
                    f"({grid.pixel_scale:g}\" pixels / supersample {grid.supersample} = "
                    f"{sub:g}\"): "
                    f"the image is aliased and its flux is wrong; use supersample >= {need}"),
                    stacklevel=3)
