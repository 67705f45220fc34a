"""Example problem: a supernova in a host galaxy over five epochs (after caskade's light-curve
tutorial), simulated with a seed, and the models that fit it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import (
    GaussianLightCurve,
    GaussianLikelihood,
    GaussianPSF,
    ImageStack,
    PixelGrid,
    PointSource,
    Posterior,
    ReadPoissonNoise,
    Scene,
    Sersic,
    link_flux_to_light_curve,
)

__all__ = ["SupernovaData", "simulate_supernova", "supernova_light_curve_model",
           "linked_epoch_stack", "aperture_flux", "host_galaxy", "perturbed_start", "HOST_TRUTH",
           "SN_TRUTH", "LIGHT_CURVE_TRUTH"]

HOST_TRUTH = dict(x0=0.20, y0=0.18, q=0.6, phi=0.5, n=1.5, Re=0.30, flux=400.0)
SN_TRUTH = dict(x0=-0.35, y0=-0.20)
LIGHT_CURVE_TRUTH = dict(t0=-3.0, sigma=2.0, peak_flux=120.0)
TIMES = (-8.0, -5.0, -2.0, 1.0, 4.0)


@dataclass
class SupernovaData:
    """Seeded mock observations: ``images (n_epochs, 50, 50)`` in e-/s per pixel, and the truth."""

    images: torch.Tensor
    times: torch.Tensor
    grid: PixelGrid
    psf_sigma: float
    noise: ReadPoissonNoise
    truth: dict[str, float] = field(default_factory=dict)
    true_fluxes: torch.Tensor | None = None


def host_galaxy(name: str = "host", **values) -> Sersic:
    """The host's Sersic at the true values, but for ``values``."""
    return Sersic(name, **{**HOST_TRUTH, **values})


def simulate_supernova(seed: int = 0, dtype: torch.dtype = torch.float64) -> SupernovaData:
    """Simulate the five epochs (0.04" pixels, Gaussian PSF of 0.06", 25 s exposures, 5 e- read
    noise) with read + Poisson noise from ``torch.Generator().manual_seed(seed)``."""
    grid = PixelGrid((50, 50), pixel_scale=0.04, supersample=3, dtype=dtype)
    times = torch.tensor(TIMES, dtype=dtype)
    lightcurve = GaussianLightCurve("lightcurve", **LIGHT_CURVE_TRUTH)
    sn = PointSource("sn", **SN_TRUTH)
    link_flux_to_light_curve(sn, lightcurve, times)
    psf = GaussianPSF("psf", sigma=0.06, size=15)
    scene = Scene(grid, [host_galaxy()], psf, [sn], name="truth")
    noise = ReadPoissonNoise("noise", exposure_time=25.0, read_noise=5.0)
    with torch.no_grad():
        clean = scene()
        images = noise.sample(clean, torch.Generator().manual_seed(seed))
        fluxes = lightcurve.flux(times)
    truth = {f"host.{k}": v for k, v in HOST_TRUTH.items()}
    truth.update({f"sn.{k}": v for k, v in SN_TRUTH.items()})
    truth.update({f"lightcurve.{k}": v for k, v in LIGHT_CURVE_TRUTH.items()})
    for i, f in enumerate(fluxes.tolist()):
        truth[f"sn.flux[{i}]"] = f
    return SupernovaData(images, times, grid, 0.06, noise, truth, fluxes)


def aperture_flux(image: torch.Tensor, grid: PixelGrid, x0: float, y0: float,
                  radius: float = 4.0) -> float:
    """Aperture photometry: flux within ``radius`` pixels of ``(x0, y0)`` minus the local level
    (median of an annulus at 5-8 pixels) times the aperture's area; at least 1. The fits' start
    for the SN flux: it knows nothing of the truth."""
    x, y = grid.coordinates()
    r = torch.hypot(x - x0, y - y0) / grid.pixel_scale
    inside, annulus = r <= radius, (r > radius + 1) & (r <= radius + 4)
    level = image[annulus].median()
    return max(float(image[inside].sum() - inside.sum() * level), 1.0)


def perturbed_start(values: dict, seed: int, frac: float = 0.05) -> dict:
    """``values`` each scaled by ``1 + frac * N(0, 1)`` (seeded): a start away from the truth."""
    g = torch.Generator().manual_seed(seed)
    return {k: v * (1 + frac * torch.randn((), generator=g, dtype=torch.float64).item())
            for k, v in values.items()}


def supernova_light_curve_model(data: SupernovaData, start_seed: int = 1):
    """The final model: one host, one SN position, SN flux = Gaussian light curve at each epoch,
    evaluated for all epochs in one batched call. Returns ``(posterior, modules)``; dynamic
    parameters start 5% off the truth."""
    s = perturbed_start({**HOST_TRUTH, **{f"sn_{k}": v for k, v in SN_TRUTH.items()},
                    **{f"lc_{k}": v for k, v in LIGHT_CURVE_TRUTH.items()}}, start_seed)
    host = host_galaxy(**{k: s[k] for k in HOST_TRUTH})
    host.phi = HOST_TRUTH["phi"] + 0.05  # a relative kick on an angle means little
    sn = PointSource("sn", x0=s["sn_x0"], y0=s["sn_y0"])
    lightcurve = GaussianLightCurve("lightcurve", t0=s["lc_t0"], sigma=s["lc_sigma"],
                                    peak_flux=s["lc_peak_flux"])
    link_flux_to_light_curve(sn, lightcurve, data.times)
    psf = GaussianPSF("psf", sigma=data.psf_sigma, size=15)
    scene = Scene(data.grid, [host], psf, [sn], name="scene")
    host.to_dynamic()
    sn.x0.to_dynamic()
    sn.y0.to_dynamic()
    lightcurve.to_dynamic()
    like = GaussianLikelihood(scene, data.images, noise=data.noise, name="likelihood")
    return Posterior(like), dict(host=host, sn=sn, lightcurve=lightcurve, scene=scene, psf=psf)


def linked_epoch_stack(data: SupernovaData, host: Sersic, sn_x0: float, sn_y0: float,
                       fluxes) -> ImageStack:
    """One Scene per epoch sharing ``host`` and, by caskade links, one SN position; each epoch's
    SN flux is its own dynamic Param (names ``sn{i}.flux``), the position is ``sn0.x0/y0``."""
    psf = GaussianPSF("psf", sigma=data.psf_sigma, size=15)
    scenes, sns = [], []
    for i, flux in enumerate(fluxes):
        sn = PointSource(f"sn{i}", x0=sn_x0, y0=sn_y0, flux=float(flux))
        sn.flux.to_dynamic()
        if i == 0:
            sn.x0.to_dynamic()
            sn.y0.to_dynamic()
        else:  # one SN position for all epochs
            sn.x0, sn.y0 = sns[0].x0, sns[0].y0
        sns.append(sn)
        scenes.append(Scene(data.grid, [host], psf, [sn], name=f"image{i}"))
    return ImageStack(scenes, name="stack")
