"""Bad input raises the clear exception its docstring promises (lensing, generative, samplers).

One row per promise: the call, the exception type, and words its message must contain.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skyfit
from skyfit.errors import DataError, LogDensityError, ParameterVectorError, ShapeError
from skyfit.generative import (
    GalaxyModel,
    GalaxyVAE,
    LatentFlow,
    check_stamps,
    distill_flow,
    fit_flow,
    make_galaxies,
)
from skyfit.inference import FunctionDensity, Samples, laplace, sample_emcee, sample_nuts
from skyfit.inference.checkpoint import save_checkpoint
from skyfit.inference.mcmc import Metric
from skyfit.lenses import ThinLens

GAUSS = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)


def _thin_lens_without_methods():
    class Incomplete(ThinLens):
        @staticmethod
        def deflection(x, y):
            return x, y

    return Incomplete()


def _small_vae():
    return GalaxyVAE(size=16, latent_dim=4, channels=(8, 16), hidden=16)


def _grid():
    return skyfit.PixelGrid((8, 8), 0.1)


def _light_curve():
    return skyfit.GaussianLightCurve(t0=0.0, sigma=1.0, peak_flux=1.0)


CASES = {
    # lensing
    "thin lens without its methods": (_thin_lens_without_methods, TypeError, "convergence"),
    "composite of a non-lens": (lambda: skyfit.CompositeLens([object()]), TypeError,
                                "not a ThinLens"),
    "lensed source behind a non-lens": (lambda: skyfit.LensedSource(object(), []), TypeError,
                                        "ThinLens"),
    "lensed image with a non point source": (
        lambda: skyfit.LensedImage(_grid(), skyfit.SIS(),
                                   psf=skyfit.GaussianPSF(sigma=0.1, size=5),
                                   point_sources=[object()]), TypeError, "LensedPointSource"),
    "lensed supernova without geometry": (
        lambda: skyfit.LensedSupernova(skyfit.SIS(), None, _light_curve(), [0.0, 1.0]),
        ValueError, "LensGeometry"),
    "lensed supernova with 2-d times": (
        lambda: skyfit.LensedSupernova(skyfit.SIS(), skyfit.LensGeometry(), _light_curve(),
                                       [[0.0, 1.0]]), ValueError, "vector"),
    "time delays without geometry": (
        lambda: skyfit.LensedPointSource(skyfit.SIS(), x0=0.1).time_delays(), ValueError,
        "LensGeometry"),
    "source in front of the lens": (lambda: skyfit.LensGeometry(z_l=1.0, z_s=1.0), ValueError,
                                    "behind the lens"),
    # generative
    "VAE source with an unknown latent": (
        lambda: skyfit.VAESource(GalaxyModel(_small_vae(), iaf=LatentFlow(4, "iaf")),
                                 latent="x"), ValueError, "latent must be one of"),
    "VAE source with an unknown prior": (
        lambda: skyfit.VAESource(GalaxyModel(_small_vae(), iaf=LatentFlow(4, "iaf")),
                                 prior="foo"), ValueError, "prior must be one of"),
    "VAE source with a missing flow": (
        lambda: skyfit.VAESource(GalaxyModel(_small_vae(), iaf=LatentFlow(4, "iaf")),
                                 prior="maf"), ValueError, "no maf flow"),
    "galaxy model with a flow of the wrong kind": (
        lambda: GalaxyModel(_small_vae(), iaf=LatentFlow(4, "maf")), ValueError, "kind 'iaf'"),
    "galaxy model with a flow of the wrong size": (
        lambda: GalaxyModel(_small_vae(), iaf=LatentFlow(3, "iaf")), ShapeError, "latent_dim=4"),
    "one-dimensional latent flow": (lambda: LatentFlow(1), ValueError, "at least 2"),
    "flow fit on NaN latents": (
        lambda: fit_flow(LatentFlow(2, "maf"), torch.tensor([[float("nan"), 0.0]] * 4),
                         torch.zeros(4, 2), epochs=1), ValueError, "finite"),
    "distillation between flows of different sizes": (
        lambda: distill_flow(LatentFlow(2, "iaf"), LatentFlow(3, "maf"), torch.zeros(4, 2)),
        ValueError, "features"),
    "no galaxies": (lambda: make_galaxies(0), ValueError, "at least one"),
    "noise levels of the wrong shape": (
        lambda: check_stamps(torch.zeros(3, 8, 8), torch.ones(2)), ShapeError, "one noise level"),
    "non-positive noise level": (
        lambda: check_stamps(torch.zeros(3, 8, 8), torch.tensor([1.0, 0.0, 1.0])), DataError,
        "positive"),
    # samplers and results
    "NUTS with an unknown mass matrix": (
        lambda: sample_nuts(GAUSS, init=torch.zeros(2), mass="full", progress=False), ValueError,
        "mass"),
    "NUTS without chains": (
        lambda: sample_nuts(GAUSS, init=torch.zeros(2), n_chains=0, progress=False), ValueError,
        "n_chains"),
    "NUTS target acceptance above 1": (
        lambda: sample_nuts(GAUSS, init=torch.zeros(2), target_accept=1.5, progress=False),
        ValueError, "target_accept"),
    "NUTS tree depth 0": (
        lambda: sample_nuts(GAUSS, init=torch.zeros(2), max_tree_depth=0, progress=False),
        ValueError, "max_tree_depth"),
    "emcee walkers of the wrong length": (
        lambda: sample_emcee(GAUSS, init=torch.zeros(5, 3), progress=False),
        ParameterVectorError, "expected 2"),
    "emcee resume without a file": (
        lambda: sample_emcee(GAUSS, init=torch.zeros(2), resume=True, progress=False),
        ValueError, "checkpoint"),
    "Laplace at a point with a non-finite Hessian": (
        lambda: laplace(FunctionDensity(lambda x: (x**3).sum(-1).abs().sqrt(), 2),
                        torch.zeros(2)), LogDensityError, "NaN or inf"),
    "draws that are not (chain, draw, parameter)": (
        lambda: Samples(np.zeros((2, 3)), ["a"], np.zeros((2, 3)), "test"), ValueError, "draws"),
    "names that do not match the draws": (
        lambda: Samples(np.zeros((2, 3, 2)), ["a"], np.zeros((2, 3)), "test"), ValueError,
        "names"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_raises_a_clear_error(name):
    call, error, words = CASES[name]
    with pytest.raises(error, match=words):
        call()


def test_files_of_another_kind_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "other"}, path)
    with pytest.raises(ValueError, match="not a skyfit.GalaxyVAE file"):
        GalaxyVAE.load(path)
    with pytest.raises(ValueError, match="not a skyfit checkpoint"):
        sample_nuts(GAUSS, init=torch.zeros(2), checkpoint=path, resume=True, progress=False)
    save_checkpoint(path, {"format": "other"})
    with pytest.raises(ValueError, match="not a skyfit HMC/NUTS checkpoint"):
        sample_nuts(GAUSS, init=torch.zeros(2), checkpoint=path, resume=True, progress=False)
    _small_vae().save(path)
    with pytest.raises(ValueError, match="not a skyfit.GalaxyModel file"):
        GalaxyModel.load(path)


def test_a_metric_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="chain, dim, dim"):
        Metric(torch.ones(3, 2, 4))
    with pytest.raises(ValueError, match="chain, dim"):
        Metric(torch.ones(3))
