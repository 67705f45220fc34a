"""Test fixtures: a supernova on a Sersic host over five seeded epochs, built here so that the
tests do not depend on the demo or the example problems (which may change on their own)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import skyfit

HOST = dict(x0=0.20, y0=0.18, q=0.6, phi=0.5, n=1.5, Re=0.30, flux=400.0)
SN = dict(x0=-0.35, y0=-0.20)
LIGHT_CURVE = dict(t0=-3.0, sigma=2.0, peak_flux=120.0)
PSF_SIGMA = 0.06


def supernova_data(seed: int = 0) -> SimpleNamespace:
    """Five 50x50 epochs (0.04" pixels, Gaussian PSF, read + Poisson noise) of a Gaussian light
    curve's point source on a Sersic host: ``images``, ``times``, ``grid``, ``noise``,
    ``true_fluxes``."""
    grid = skyfit.PixelGrid((50, 50), pixel_scale=0.04, supersample=3)
    times = torch.tensor([-8.0, -5.0, -2.0, 1.0, 4.0], dtype=torch.float64)
    true_fluxes = skyfit.lightcurves.gaussian_light_curve(times, **LIGHT_CURVE)
    sn = skyfit.PointSource(**SN, flux=true_fluxes)
    scene = skyfit.Scene(grid, [skyfit.Sersic(**HOST)],
                         skyfit.GaussianPSF(sigma=PSF_SIGMA, size=15), [sn])
    noise = skyfit.ReadPoissonNoise(exposure_time=25.0, read_noise=5.0)
    with torch.no_grad():
        images = noise.sample(scene(), torch.Generator().manual_seed(seed))
    return SimpleNamespace(images=images, times=times, grid=grid, noise=noise,
                           psf_sigma=PSF_SIGMA, true_fluxes=true_fluxes)


def supernova_problem(seed: int = 0) -> tuple[skyfit.Posterior, torch.Tensor]:
    """``(posterior, truth)``: host, SN position and light curve free (12 parameters), the SN
    flux of each epoch given by the light curve, all epochs in one batched scene."""
    data = supernova_data(seed)
    host = skyfit.Sersic("host", **HOST)
    sn = skyfit.PointSource("sn", **SN)
    curve = skyfit.GaussianLightCurve("lightcurve", **LIGHT_CURVE)
    skyfit.link_flux_to_light_curve(sn, curve, data.times)
    scene = skyfit.Scene(data.grid, [host], skyfit.GaussianPSF("psf", sigma=PSF_SIGMA, size=15),
                         [sn], name="scene")
    host.to_dynamic()
    sn.x0.to_dynamic()
    sn.y0.to_dynamic()
    curve.to_dynamic()
    posterior = skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images, noise=data.noise))
    return posterior, posterior.initial()  # the modules were built at the truth


def epoch_stack(data: SimpleNamespace, host: skyfit.Sersic) -> skyfit.ImageStack:
    """One Scene per epoch, all sharing ``host`` and one SN position (``sn0.x0/y0``, caskade
    links), each epoch's SN flux its own dynamic Param at the true flux."""
    psf = skyfit.GaussianPSF("psf", sigma=data.psf_sigma, size=15)
    first = None
    scenes = []
    for i, flux in enumerate(data.true_fluxes.tolist()):
        sn = skyfit.PointSource(f"sn{i}", **SN, flux=flux)
        sn.flux.to_dynamic()
        if first is None:
            first = sn
            sn.x0.to_dynamic()
            sn.y0.to_dynamic()
        else:
            sn.x0, sn.y0 = first.x0, first.y0
        scenes.append(skyfit.Scene(data.grid, [host], psf, [sn], name=f"image{i}"))
    return skyfit.ImageStack(scenes, name="stack")
