"""The start strategy of lens-image posteriors: :func:`init_to_lensed_image` puts a fit where
the image puts it (:func:`~skyfit.scenes.lens_start.lensed_image_start`, read off the image
without a fit), with the source size and flux of highest likelihood. It sits above the scenes
layer because it resolves a start for a :class:`~skyfit.Posterior` (the inference layer's
:class:`~skyfit.inference.initialization.InitStrategy`)."""

from __future__ import annotations

import torch

from .inference.start_strategy import InitStrategy, Start
from .posterior import Posterior
from .scenes.lens_start import lens_components, lensed_image_start
from .scenes.lensed import LensedImage

__all__ = ["init_to_lensed_image"]


class _LensedImageStart(InitStrategy):
    def __init__(self, sim: LensedImage, image, variance):
        self.sim, self.image, self.variance = sim, image, variance

    def __call__(self, u, n, random, space, scale):
        density = u.density
        if not isinstance(density, Posterior):
            raise TypeError("init_to_lensed_image starts a Posterior of the lens image, got a "
                            f"{type(density).__name__}")
        values, sizes = lensed_image_start(self.sim, self.image, self.variance)
        _, _, source = lens_components(self.sim)
        x = density.initial().clone()  # parameters the image does not tell keep their value
        where = {p: sl for sl, _, p in density.slices.values()}
        for param, value in values.items():
            if param in where:
                x[where[param]] = value
        x = self._size_and_flux(density, x, where, source, sizes)
        x = torch.minimum(torch.maximum(x, density.lower), density.upper)
        u.density.check_inside(x)
        base = u.to_unconstrained(x) if space == "unconstrained" else x
        return Start(base.expand(n, u.dim).clone(), None)

    @staticmethod
    def _size_and_flux(density, x, where, source, sizes) -> torch.Tensor:
        """The source size of ``sizes`` and flux of highest likelihood: the image is linear in
        the flux, so a Gaussian log-likelihood is a parabola in it, solved from three fluxes
        per size (one batched evaluation of ``3 * len(sizes)`` points)."""
        size_param = source.children.get("Re")
        flux_param = source.children.get("flux")
        if flux_param not in where:
            return x
        sizes = sizes if size_param in where else [None]  # a fixed size stays as it is
        points = x.expand(3 * len(sizes), -1).clone()
        for i, size in enumerate(sizes):
            for j, flux in enumerate((1.0, 2.0, 3.0)):
                points[3 * i + j, where[flux_param]] = flux
                if size is not None:
                    points[3 * i + j, where[size_param]] = size
        with torch.no_grad():
            logl = density.log_likelihood(points).reshape(len(sizes), 3)
        # logl(f) = a f^2 + b f + c through f = 1, 2, 3
        a = (logl[:, 2] - 2 * logl[:, 1] + logl[:, 0]) / 2
        b = logl[:, 1] - logl[:, 0] - 3 * a
        c = logl[:, 0] - a - b
        flux = torch.where(a < 0, -b / (2 * a), torch.ones_like(a)).clamp_min(1e-3)
        best = int(torch.where(a < 0, c - b**2 / (4 * a), -torch.inf).nan_to_num(-torch.inf)
                   .argmax())
        x = x.clone()
        x[where[flux_param]] = flux[best]
        if sizes[best] is not None:
            x[where[size_param]] = sizes[best]
        return x


def init_to_lensed_image(sim: LensedImage, image, variance=None) -> InitStrategy:
    """Start a lens image fit where the image puts it (:func:`lensed_image_start`), with the
    source size of highest likelihood among a few and its flux solved for (the image is linear
    in it); parameters the image does not tell (e.g. a second source) keep the density's
    ``initial()`` values. Meant as a ``candidates`` entry of
    :func:`~skyfit.inference.fit_map`, next to the user's own start: a fit from broad starts
    then ends at the global optimum where one start alone ends in a local optimum (the quad
    lens of ``benchmarks/bench_hard_fits.py``).

    Arguments:
        sim: the :class:`~skyfit.LensedImage` of the posterior.
        image: the observed image.
        variance: per-pixel noise variance (scalar or map), or ``None`` (estimated).

    Example:
        >>> import torch
        >>> from skyfit import (PixelGrid, SIE, Sersic, LensedImage, GaussianLikelihood,
        ...                     Posterior)
        >>> from skyfit.inference.initialization import resolve_point
        >>> lens, src = SIE("lens", theta_E=1.2, q=0.8), Sersic("src", Re=0.1, flux=5.0)
        >>> sim = LensedImage(PixelGrid((60, 60), 0.05), lens, [src])
        >>> image = sim().detach()
        >>> lens.theta_E.to_dynamic(); src.flux.to_dynamic()
        >>> post = Posterior(GaussianLikelihood(sim, image, variance=1e-4))
        >>> x = resolve_point(post, init_to_lensed_image(sim, image, 1e-4))
        >>> {k: round(v, 1) for k, v in zip(post.names, x.tolist())}  # flux solved for
        {'src.flux': 5.0, 'lens.theta_E': 1.2}
    """
    if not isinstance(sim, LensedImage):
        raise TypeError(f"init_to_lensed_image takes a LensedImage, got {type(sim).__name__}")
    return _LensedImageStart(sim, image, variance)

