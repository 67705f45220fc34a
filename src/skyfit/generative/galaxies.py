"""Synthetic galaxy stamps for training generative source models (no download needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import DataError, ShapeError
from ..instruments.convolution import fft_convolve
from ..sources.profiles import sersic_b_exact, sersic_profile

__all__ = ["GalaxySet", "make_galaxies", "check_stamps"]


@dataclass
class GalaxySet:
    """A stack of galaxy stamps with the noise that each was drawn with.

    Every noiseless stamp sums to 1 (unit flux), so a model of the set learns shapes only and a
    source built on it carries its flux as a separate parameter. Units are stamp pixels.

    Attributes:
        images: ``(n, size, size)`` noisy stamps (float32).
        sigma: ``(n,)`` standard deviation of the Gaussian pixel noise of each stamp.
        truth: ``(n, size, size)`` noiseless stamps (PSF-convolved), each summing to 1.
        params: generating parameters, each ``(n,)``: ``n`` (Sersic index), ``Re`` (pixels),
            ``q``, ``phi`` (rad), ``x0``, ``y0`` (pixels from the stamp centre), ``n_clumps``,
            ``clump_fraction`` (of the flux), ``snr``.

    Example:
        >>> import torch
        >>> galaxies = make_galaxies(6, size=16, seed=0)
        >>> tuple(galaxies.images.shape), torch.allclose(galaxies.truth.sum((1, 2)), torch.ones(6))
        ((6, 16, 16), True)
        >>> train, val = galaxies.split(4)
        >>> len(train.images), len(val.images)
        (4, 2)
    """

    images: torch.Tensor
    sigma: torch.Tensor
    truth: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        """Stamp side in pixels."""
        return self.images.shape[-1]

    def __getitem__(self, index) -> GalaxySet:
        """A subset (slice, index tensor or boolean mask), as a new :class:`GalaxySet`."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return GalaxySet(self.images[index], self.sigma[index], self.truth[index],
                         {k: v[index] for k, v in self.params.items()})

    def split(self, n_first: int) -> tuple[GalaxySet, GalaxySet]:
        """The first ``n_first`` stamps and the rest (the set is already in random order)."""
        return self[:n_first], self[n_first:]


def check_stamps(images: torch.Tensor, sigma: torch.Tensor | None = None,
                 size: int | None = None) -> None:
    """Raise :class:`ShapeError` or :class:`DataError` if ``images`` cannot be used for training.

    ``images`` must be ``(n, size, size)`` (square; of the network's ``size`` when given), finite;
    ``sigma`` must hold one positive finite noise level per image.

    Example:
        >>> import torch
        >>> check_stamps(torch.zeros(4, 16, 16), torch.ones(4))  # fine: returns None
        >>> check_stamps(torch.zeros(4, 16, 8))
        Traceback (most recent call last):
            ...
        skyfit.errors.ShapeError: ...
    """
    if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
        raise ShapeError(f"stamps must be a (n, size, size) stack of square images, got shape "
                         f"{tuple(images.shape)}")
    if size is not None and images.shape[-1] != size:
        raise ShapeError(f"stamps are {images.shape[-2]}x{images.shape[-1]} but the network takes "
                         f"{size}x{size} stamps")
    bad = ~torch.isfinite(images).flatten(1).all(-1)
    if bad.any():
        idx = torch.nonzero(bad)[:, 0].tolist()
        raise DataError(f"{len(idx)} stamp(s) contain NaN or inf pixels (first indices "
                        f"{idx[:5]}); remove or repair them before training")
    if sigma is not None:
        if sigma.shape != images.shape[:1]:
            raise ShapeError(f"sigma must hold one noise level per stamp, shape "
                             f"{tuple(images.shape[:1])}, got {tuple(sigma.shape)}")
        if not (torch.isfinite(sigma).all() and (sigma > 0).all()):
            raise DataError("noise levels sigma must be positive and finite for every stamp")


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def make_galaxies(
    n: int,
    size: int = 32,
    snr: tuple[float, float] = (15.0, 50.0),
    sersic_n: tuple[float, float] = (0.5, 4.0),
    radius: tuple[float, float] = (2.0, 6.0),
    axis_ratio: tuple[float, float] = (0.3, 1.0),
    center_jitter: float = 1.0,
    max_clumps: int = 4,
    clump_fraction: tuple[float, float] = (0.03, 0.1),
    psf_fwhm: float = 2.0,
    supersample: int = 3,
    seed: int = 0,
    chunk: int = 256,
) -> GalaxySet:
    """Draw ``n`` synthetic galaxy stamps: a Sersic profile plus star-forming clumps, PSF, noise.

    Each galaxy is an elliptical Sersic profile (index, half-light radius, axis ratio, angle and
    a sub-pixel centre offset drawn uniformly in the given ranges; radii in pixels, log-uniform)
    plus 0 to ``max_clumps`` compact Gaussian clumps (0.5-1.2 px) scattered over the disc, each
    carrying ``clump_fraction`` of the light. The sum is integrated over pixels
    (``supersample``^2 sub-pixels), convolved with a Gaussian PSF of ``psf_fwhm`` pixels,
    normalised to unit flux, and given white Gaussian noise of level
    ``sigma = sqrt(sum(image^2)) / snr`` with ``snr`` drawn uniformly: the matched-filter S/N of
    the stamp. Fully determined by ``seed``.

    Arguments:
        n: number of stamps. size: stamp side in pixels.
        snr, sersic_n, radius, axis_ratio, clump_fraction: ``(low, high)`` ranges.
        center_jitter: maximum offset of the centre from the stamp centre (pixels).
        max_clumps: most clumps per galaxy (uniform in 0..max_clumps).
        psf_fwhm: FWHM of the Gaussian PSF in pixels (0 for none).
        supersample: sub-pixels per pixel side for the pixel integration.
        seed: random seed. chunk: stamps rendered at once (memory).

    Example:
        >>> gals = make_galaxies(8, size=32, seed=1)
        >>> tuple(gals.images.shape), round(gals.truth.sum((-2, -1))[0].item(), 5)
        ((8, 32, 32), 1.0)
    """
    if n < 1:
        raise ValueError(f"need at least one galaxy, got n={n}")
    if size < 4:
        raise ShapeError(f"stamp size must be at least 4 pixels, got {size}")
    g = torch.Generator().manual_seed(int(seed))
    # the draw order (parameters, clumps, noise) fixes the stream: the shipped galaxy32 weights
    # were trained on these images bit for bit
    p = _draw_parameters(g, n, snr, sersic_n, radius, axis_ratio, center_jitter, max_clumps)
    c_x, c_y, c_frac, c_sig = _draw_clumps(g, p, n, max_clumps, clump_fraction)
    p["clump_fraction"] = c_frac.sum(-1)
    noise = torch.randn(n, size, size, generator=g, dtype=torch.float64)

    disc = _render_discs(p, n, size, supersample, chunk)
    psf_sig = psf_fwhm / (2 * math.sqrt(2 * math.log(2)))
    if psf_fwhm > 0:
        disc = _convolve_gaussian_psf(disc, psf_fwhm, psf_sig)
    clumps = _render_clumps(c_x, c_y, c_frac, c_sig, psf_sig, size)
    truth = disc * (1 - p["clump_fraction"])[:, None, None] + clumps
    truth = truth / truth.sum((-2, -1), keepdim=True)
    sigma = truth.pow(2).sum((-2, -1)).sqrt() / p["snr"]
    images = truth + sigma[:, None, None] * noise
    return GalaxySet(images.float(), sigma.float(), truth.float(),
                     {k: v.float() if v.is_floating_point() else v for k, v in p.items()})


def _draw_parameters(g: torch.Generator, n: int, snr, sersic_n, radius, axis_ratio,
                     center_jitter: float, max_clumps: int) -> dict[str, torch.Tensor]:
    """Per-galaxy Sersic parameters, clump count and S/N, each ``(n,)``, drawn from ``g``."""
    return {
        "n": _uniform(g, n, *sersic_n),
        "Re": torch.exp(_uniform(g, n, math.log(radius[0]), math.log(radius[1]))),
        "q": _uniform(g, n, *axis_ratio),
        "phi": _uniform(g, n, 0.0, math.pi),
        "x0": _uniform(g, n, -center_jitter, center_jitter),
        "y0": _uniform(g, n, -center_jitter, center_jitter),
        "n_clumps": torch.randint(0, max_clumps + 1, (n,), generator=g),
        "snr": _uniform(g, n, *snr),
    }


def _draw_clumps(g: torch.Generator, p: dict[str, torch.Tensor], n: int, max_clumps: int,
                 clump_fraction) -> tuple[torch.Tensor, ...]:
    """Clump centres ``c_x, c_y`` (stamp pixels), flux fractions (zero past each galaxy's
    ``n_clumps``) and widths, each ``(n, max(max_clumps, 1))``, drawn from ``g``."""
    f64 = torch.float64
    K = max(max_clumps, 1)
    # positions in the galaxy's own frame (radius ~ Re, scaled by the axis ratio)
    c_r = p["Re"][:, None] * 1.2 * torch.sqrt(torch.rand(n, K, generator=g, dtype=f64))
    c_t = 2 * math.pi * torch.rand(n, K, generator=g, dtype=f64)
    c_frac = clump_fraction[0] + (clump_fraction[1] - clump_fraction[0]) * torch.rand(
        n, K, generator=g, dtype=f64)
    c_frac = c_frac * (torch.arange(K)[None, :] < p["n_clumps"][:, None])
    c_sig = 0.5 + 0.7 * torch.rand(n, K, generator=g, dtype=f64)
    sq = torch.sqrt(p["q"])[:, None]
    u, v = c_r * torch.cos(c_t) / sq, c_r * torch.sin(c_t) * sq  # major axis along u
    cph, sph = torch.cos(p["phi"])[:, None], torch.sin(p["phi"])[:, None]
    c_x = p["x0"][:, None] + cph * u - sph * v
    c_y = p["y0"][:, None] + sph * u + cph * v
    return c_x, c_y, c_frac, c_sig


def _render_discs(p: dict[str, torch.Tensor], n: int, size: int, supersample: int,
                  chunk: int) -> torch.Tensor:
    """Unconvolved Sersic discs ``(n, size, size)`` (float64): midpoint rule on
    ``supersample``^2 sub-pixels, in float32 (the set is for training), ``chunk`` at a time."""
    s = int(supersample)
    f32, f64 = torch.float32, torch.float64
    coords = (torch.arange(size * s, dtype=f32) - (size * s - 1) / 2) / s
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    disc = torch.empty(n, size, size, dtype=f64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        e = lambda t: t[a:b, None, None].to(f32)  # noqa: E731, B023
        # the exact b(n): the shipped galaxy32 weights were trained on these images bit for bit
        img = sersic_profile(x, y, e(p["x0"]), e(p["y0"]), e(p["q"]), e(p["phi"]), e(p["n"]),
                             e(p["Re"]), b=sersic_b_exact(e(p["n"])))
        disc[a:b] = img.reshape(b - a, size, s, size, s).mean((-3, -1)).to(f64)
    return disc


def _convolve_gaussian_psf(disc: torch.Tensor, psf_fwhm: float, psf_sig: float) -> torch.Tensor:
    """``disc`` convolved with a normalised pixel-sampled Gaussian of ``psf_sig`` pixels,
    truncated at a half-width of ``ceil(2 * psf_fwhm)`` pixels."""
    k = 2 * int(math.ceil(2 * psf_fwhm)) + 1
    r = torch.arange(k, dtype=torch.float64) - k // 2
    kernel = torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / psf_sig**2)
    return fft_convolve(disc, kernel / kernel.sum())


def _render_clumps(c_x: torch.Tensor, c_y: torch.Tensor, c_frac: torch.Tensor,
                   c_sig: torch.Tensor, psf_sig: float, size: int) -> torch.Tensor:
    """Sum of the clumps ``(n, size, size)``: Gaussians convolved with the Gaussian PSF
    analytically (widths add in quadrature), integrated over pixels exactly (error functions)."""
    f64 = torch.float64
    edges = torch.arange(size + 1, dtype=f64) - size / 2
    width = torch.sqrt(c_sig**2 + psf_sig**2)[..., None]
    px = torch.diff(torch.special.ndtr((edges - c_x[..., None]) / width), dim=-1)  # (n, K, size)
    py = torch.diff(torch.special.ndtr((edges - c_y[..., None]) / width), dim=-1)
    return torch.einsum("nk,nki,nkj->nij", c_frac, py, px)
