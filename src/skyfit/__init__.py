"""skyfit: differentiable forward models for astronomy and the inference that fits them.

The names a model-and-fit needs are here (``skyfit.Sersic``, ``skyfit.fit_map``, ...); the rest
stays in its subpackage: the pure torch functions (``skyfit.sources.profiles``,
``skyfit.lenses.functions``, ``skyfit.lightcurves``), result types, diagnostics and checkpoints
(``skyfit.inference``), sampler kernels (``skyfit.inference.mcmc``,
``skyfit.inference.adaptation``), generative-model training (``skyfit.generative``), figures
(``skyfit.plots``), exceptions (``skyfit.errors``), and the example problems and demo
(``skyfit.examples``, not imported here).
"""

from . import (
    errors,
    generative,
    inference,
    instruments,
    io,
    lenses,
    lightcurves,
    plots,
    scenes,
    sources,
)
from ._ellipticity import e1e2_to_q_phi, q_phi_to_e1e2, use_ellipticity
from .generative import GalaxyModel, load_pretrained
from .inference import (
    LogDensity,
    Samples,
    compile,
    fit_map,
    fit_vi,
    laplace,
    sample_emcee,
    sample_hmc,
    sample_nuts,
)
from .instruments import GaussianPSF, PixelatedPSF, PixelGrid, ReadPoissonNoise
from .io import load_model, register_module, save_model
from .lens_start import init_to_lensed_image
from .lenses import (
    EPL,
    NFW,
    SIE,
    SIS,
    CompositeLens,
    ExternalShear,
    FlatLambdaCDM,
    LensedPointSource,
    LensedSupernova,
    LensGeometry,
    MassSheet,
    PointMass,
    critical_curves,
    find_images,
)
from .lightcurves import Bazin, GaussianLightCurve, Villar, link_flux_to_light_curve
from .likelihoods import GaussianLikelihood, PhotometryLikelihood, PoissonLikelihood
from .params import Param
from .posterior import Posterior
from .scenes import ImageStack, LensedImage, LensedSource, Scene
from .sources import Gaussian, Pixelated, PointSource, Sersic, VAESource

__all__ = [
    "use_ellipticity", "q_phi_to_e1e2", "e1e2_to_q_phi",
    # subpackages
    "errors", "generative", "inference", "instruments", "io", "lenses", "lightcurves", "plots",
    "scenes", "sources",
    # parameters
    "Param",
    # instruments
    "PixelGrid", "GaussianPSF", "PixelatedPSF", "ReadPoissonNoise",
    # light sources and light curves
    "Sersic", "Gaussian", "PointSource", "Pixelated", "VAESource",
    "GaussianLightCurve", "Bazin", "Villar", "link_flux_to_light_curve",
    # lenses
    "SIS", "SIE", "EPL", "NFW", "PointMass", "ExternalShear", "MassSheet", "CompositeLens",
    "FlatLambdaCDM", "LensGeometry", "find_images", "critical_curves", "LensedPointSource",
    "LensedSupernova",
    # scenes, likelihoods, posterior
    "Scene", "ImageStack", "LensedImage", "LensedSource", "init_to_lensed_image",
    "GaussianLikelihood", "PoissonLikelihood", "PhotometryLikelihood", "Posterior",
    # inference
    "LogDensity", "compile", "fit_map", "laplace", "fit_vi", "sample_emcee", "sample_nuts",
    "sample_hmc",
    "Samples",
    # saving and loading models
    "save_model", "load_model", "register_module",
    # neural source priors
    "GalaxyModel", "load_pretrained",
]
from ._version import __version__ as __version__  # noqa: E402
