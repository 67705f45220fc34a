"""The benchmark problems, built here from skyfit's public modules (not from a demo module), and
the same models as their peers' users would write them: numpy log-densities for emcee and a
plain-torch image model for the overhead row.

- ``supernova``: the seed-style posterior: five 50x50 epochs (0.04" pixels, supersample 3),
  Sersic host + point-source SN whose flux follows a Gaussian light curve, Gaussian PSF
  (sigma 0.06", 15x15), read + Poisson noise (25 s, 5 e-); 12 parameters.
- ``joint``: the same data, SN flux free per epoch (14 parameters): the optimiser row.
- ``bump``: a Gaussian bump on a line, 50 points, 5 parameters.
- ``gauss10``: a 10-D AR(0.9) Gaussian with scales 0.1-10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import caskade as ck
import numpy as np
import torch

import skyfit
from skyfit.inference import FunctionDensity

HOST = dict(x0=0.20, y0=0.18, q=0.6, phi=0.5, n=1.5, Re=0.30, flux=400.0)
SN = dict(x0=-0.35, y0=-0.20)
LIGHT_CURVE = dict(t0=-3.0, sigma=2.0, peak_flux=120.0)
TIMES = (-8.0, -5.0, -2.0, 1.0, 4.0)
PIXELS, PIXEL_SCALE, SUPERSAMPLE, PSF_SIGMA, PSF_SIZE = 50, 0.04, 3, 0.06, 15
EXPOSURE, READ_NOISE = 25.0, 5.0


@dataclass
class SupernovaData:
    images: torch.Tensor  # (epoch, 50, 50), e-/s per pixel
    times: torch.Tensor
    grid: skyfit.PixelGrid
    noise: skyfit.ReadPoissonNoise
    truth: dict
    true_fluxes: torch.Tensor


def _scene(grid, times, host, sn_x0, sn_y0, light_curve, name):
    sn = skyfit.PointSource("sn", x0=sn_x0, y0=sn_y0)
    skyfit.link_flux_to_light_curve(sn, light_curve, times)
    psf = skyfit.GaussianPSF("psf", sigma=PSF_SIGMA, size=PSF_SIZE)
    return skyfit.Scene(grid, [host], psf, [sn], name=name), sn


def supernova_data(seed: int = 0) -> SupernovaData:
    """Five epochs simulated from the truth with read + Poisson noise (``seed``)."""
    grid = skyfit.PixelGrid((PIXELS, PIXELS), PIXEL_SCALE, supersample=SUPERSAMPLE)
    times = torch.tensor(TIMES, dtype=torch.float64)
    light_curve = skyfit.GaussianLightCurve("lightcurve", **LIGHT_CURVE)
    scene, _ = _scene(grid, times, skyfit.Sersic("host", **HOST), SN["x0"], SN["y0"],
                      light_curve, "truth")
    noise = skyfit.ReadPoissonNoise("noise", exposure_time=EXPOSURE, read_noise=READ_NOISE)
    with torch.no_grad():
        images = noise.sample(scene(), torch.Generator().manual_seed(seed))
        fluxes = light_curve.flux(times)
    truth = {f"host.{k}": v for k, v in HOST.items()}
    truth.update({f"sn.{k}": v for k, v in SN.items()})
    truth.update({f"lightcurve.{k}": v for k, v in LIGHT_CURVE.items()})
    return SupernovaData(images, times, grid, noise, truth, fluxes)


def supernova(seed: int = 0) -> tuple[skyfit.Posterior, SupernovaData]:
    """The 12-parameter light-curve posterior, parameters starting 5% off the truth."""
    data = supernova_data(seed)
    host = skyfit.Sersic("host", **{k: v * 1.05 for k, v in HOST.items()})
    host.phi = HOST["phi"] + 0.05
    light_curve = skyfit.GaussianLightCurve(
        "lightcurve", **{k: v * 1.05 for k, v in LIGHT_CURVE.items()})
    scene, sn = _scene(data.grid, data.times, host, SN["x0"] + 0.02, SN["y0"] - 0.02,
                       light_curve, "scene")
    host.to_dynamic()
    sn.x0.to_dynamic()
    sn.y0.to_dynamic()
    light_curve.to_dynamic()
    return skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images, noise=data.noise)), data


def joint(data: SupernovaData) -> skyfit.Posterior:
    """Host + one SN position + a free SN flux per epoch (batched over epochs): 14 parameters
    on one epoch's worth of host (10 with ``data`` cut to one epoch)."""
    host = skyfit.Sersic("host", **{k: v * 1.05 for k, v in HOST.items()})
    sn = skyfit.PointSource("sn", x0=SN["x0"] + 0.02, y0=SN["y0"] - 0.02,
                            flux=data.true_fluxes.clamp(min=1.0) * 1.1)
    scene = skyfit.Scene(data.grid, [host], skyfit.GaussianPSF(sigma=PSF_SIGMA, size=PSF_SIZE),
                         [sn])
    host.to_dynamic()
    sn.to_dynamic()
    return skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images, noise=data.noise))


def naive_torch_supernova(data: SupernovaData):
    """The light-curve image model as a torch user writes it without skyfit: a meshgrid of
    sub-pixel centres made once, the Sersic profile with ``pow`` and Ciotti & Bertin's b(n)
    expansion (as most codes use), ``conv2d`` with the 15x15 Gaussian PSF (zero-padded, so the
    host is rendered on a padded grid as skyfit does), the SN as a pixel-integrated Gaussian PSF
    (CDF differences) and the read + Poisson Gaussian likelihood. Returns ``log_like(p)`` for
    ``p`` ordered as the Posterior's names."""
    n_pix, s, scale, k = PIXELS, SUPERSAMPLE, PIXEL_SCALE, PSF_SIZE
    pad = k // 2
    size = n_pix + 2 * pad
    fine = (torch.arange(size * s, dtype=torch.float64) - (size * s - 1) / 2) * (scale / s)
    Y, X = torch.meshgrid(fine, fine, indexing="ij")
    r = (torch.arange(k, dtype=torch.float64) - k // 2) * scale
    kernel = torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / PSF_SIGMA**2)
    kernel = (kernel / kernel.sum())[None, None]
    edges = (torch.arange(n_pix + 1, dtype=torch.float64) - n_pix / 2) * scale
    images, times = data.images, data.times
    norm = torch.distributions.Normal(0.0, 1.0)

    def log_like(p):
        hx, hy, q, phi, n, Re, flux, sx, sy, t0, width, peak = p
        xr = (X - hx) * torch.cos(phi) + (Y - hy) * torch.sin(phi)
        yr = -(X - hx) * torch.sin(phi) + (Y - hy) * torch.cos(phi)
        R = torch.sqrt(q * xr**2 + yr**2 / q + 1e-12)
        b = 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2) + 131 / (1148175 * n**3)
        Ie = flux * b ** (2 * n) / (2 * math.pi * n * Re**2 * torch.exp(b) * torch.exp(
            torch.lgamma(2 * n)))
        sb = Ie * torch.exp(-b * ((R / Re) ** (1 / n) - 1))
        host = sb.reshape(size, s, size, s).mean((1, 3)) * scale**2
        host = torch.nn.functional.conv2d(host[None, None], kernel)[0, 0]  # (50, 50)
        sn_flux = peak * torch.exp(-0.5 * ((times - t0) / width) ** 2)
        px = torch.diff(norm.cdf((edges - sx) / PSF_SIGMA))
        py = torch.diff(norm.cdf((edges - sy) / PSF_SIGMA))
        model = host + sn_flux[:, None, None] * py[:, None] * px[None, :]
        var = model.clamp(min=0) / EXPOSURE + (READ_NOISE / EXPOSURE) ** 2
        return -0.5 * (((images - model) ** 2 / var + torch.log(2 * math.pi * var)).sum())

    return log_like


def supernova_flop_estimate(data: SupernovaData) -> dict:
    """FLOP-equivalents of one value+gradient of ``supernova``, counted by stage: an
    exp/log/sqrt counts as ``TRANSCENDENTAL`` flops (the cost of a vectorised polynomial
    evaluation), the backward pass as twice the forward (each elementwise op's local
    derivatives and their products), an FFT of N points as 2.5 N log2 N real flops."""
    pad = PSF_SIZE // 2
    sub = (PIXELS + 2 * pad) ** 2 * SUPERSAMPLE**2  # host sub-pixels, rendered once
    # quadratic form 7, log, exp(scale + log), exp(b - ...), 3 multiply-adds
    host = sub * (7 + 3 * TRANSCENDENTAL + 6)
    fft_n = (PIXELS + 2 * pad + PSF_SIZE - 1) ** 2
    conv = 2 * 2.5 * fft_n * math.log2(fft_n) + 6 * fft_n  # forward + inverse, spectrum product
    pixels = len(data.times) * PIXELS**2
    sn_and_like = pixels * (3 + 8 + TRANSCENDENTAL)  # outer product + model add; var, log, sums
    forward = host + conv + sn_and_like
    return dict(host=host, convolution=conv, sn_and_likelihood=sn_and_like, forward=forward,
                value_and_grad=3 * forward)


TRANSCENDENTAL = 10


class BumpOnLine(ck.Module):
    """A Gaussian bump on a linear baseline, ``y(t) = a exp(-(t - t0)^2 / 2 w^2) + b + c t``."""

    def __init__(self, t, name="bump"):
        super().__init__(name)
        self.t = t
        self.amplitude = skyfit.Param("amplitude", 2.0, valid=(0, 20), units="flux")
        self.center = skyfit.Param("center", 0.3, valid=(-5, 5), units="day")
        self.width = skyfit.Param("width", 0.8, valid=(0.05, 5), units="day")
        self.intercept = skyfit.Param("intercept", 1.0, valid=(-10, 10), units="flux")
        self.slope = skyfit.Param("slope", 0.2, valid=(-5, 5), units="flux/day")

    @ck.forward
    def __call__(self, amplitude=None, center=None, width=None, intercept=None, slope=None):
        bump = amplitude * torch.exp(-0.5 * ((self.t - center) / width) ** 2)
        return bump + intercept + slope * self.t


BUMP_SIGMA = 0.3


def bump(seed: int = 0) -> skyfit.Posterior:
    """The 5-parameter bump + line fit to 50 points with Gaussian errors 0.3 (uniform priors on
    the valid ranges)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-5, 5, 50, dtype=torch.float64)
    model = BumpOnLine(t)
    data = model().detach() + BUMP_SIGMA * torch.randn(50, generator=g, dtype=torch.float64)
    model.to_dynamic()
    variance = torch.full_like(data, BUMP_SIGMA**2)
    return skyfit.Posterior(skyfit.GaussianLikelihood(model, data, variance=variance))


def bump_numpy(post: skyfit.Posterior):
    """The bump posterior as an emcee user writes it: numpy, vectorised over walkers
    (``x (walkers, 5)``), ``-inf`` outside the prior box; equal to ``post`` (checked by the
    benchmarks)."""
    t = post.likelihood.model.t.numpy()
    y = post.likelihood.data.numpy()
    lo, hi = post.lower.numpy(), post.upper.numpy()
    log_prior = -float(np.log(hi - lo).sum())
    const = -0.5 * len(t) * math.log(2 * math.pi * BUMP_SIGMA**2)

    def log_prob(x):
        a, c, w, b, s = (x[:, i : i + 1] for i in range(5))
        mean = a * np.exp(-0.5 * ((t - c) / w) ** 2) + b + s * t
        lp = const + log_prior - 0.5 * (((y - mean) / BUMP_SIGMA) ** 2).sum(1)
        inside = np.all((x >= lo) & (x <= hi), axis=1)
        return np.where(inside, lp, -np.inf)

    return log_prob


def _gauss10_matrices():
    i = np.arange(10.0)
    scales = np.logspace(-1, 1, 10)
    cov = 0.9 ** np.abs(i[:, None] - i[None, :]) * scales[:, None] * scales[None, :]
    return i, np.linalg.inv(cov)


def gauss10() -> FunctionDensity:
    """The 10-D correlated Gaussian: AR(0.9) correlation, standard deviations 0.1 to 10, mean
    0..9 (unnormalised)."""
    mean, prec = (torch.as_tensor(a) for a in _gauss10_matrices())
    return FunctionDensity(lambda x: -0.5 * ((x - mean) @ prec * (x - mean)).sum(-1), 10)


def gauss10_numpy():
    """``gauss10`` in numpy, vectorised over walkers."""
    mean, prec = _gauss10_matrices()

    def log_prob(x):
        d = x - mean
        return -0.5 * np.einsum("wi,ij,wj->w", d, prec, d)

    return log_prob


def linked_epoch_stack(data: SupernovaData) -> skyfit.Posterior:
    """``joint``'s model as an ImageStack of one Scene per epoch sharing the host and (by caskade
    links) one SN position, each epoch's SN flux its own Param: the per-epoch way to write it."""
    host = skyfit.Sersic("host", **{k: v * 1.05 for k, v in HOST.items()})
    host.to_dynamic()
    psf = skyfit.GaussianPSF("psf", sigma=PSF_SIGMA, size=PSF_SIZE)
    scenes, sns = [], []
    for i, flux in enumerate((data.true_fluxes.clamp(min=1.0) * 1.1).tolist()):
        sn = skyfit.PointSource(f"sn{i}", x0=SN["x0"] + 0.02, y0=SN["y0"] - 0.02, flux=flux)
        sn.flux.to_dynamic()
        if i == 0:
            sn.x0.to_dynamic()
            sn.y0.to_dynamic()
        else:
            sn.x0, sn.y0 = sns[0].x0, sns[0].y0
        sns.append(sn)
        scenes.append(skyfit.Scene(data.grid, [host], psf, [sn], name=f"image{i}"))
    stack = skyfit.ImageStack(scenes, name="stack")
    return skyfit.Posterior(skyfit.GaussianLikelihood(stack, data.images, noise=data.noise))
