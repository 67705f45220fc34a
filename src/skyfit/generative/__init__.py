"""Generative galaxy models: synthetic training stamps, a VAE, latent flows (MAF / IAF).

Used as a neural source prior for lensing (:class:`~skyfit.VAESource`). The flows need zuko
(``pip install 'skyfit[ml]'``); it is imported only when a flow is built, so ``import skyfit``
works without it.
"""

from .flow_training import distill_flow, fit_flow
from .flows import LatentFlow
from .galaxies import GalaxySet, check_stamps, make_galaxies
from .model import GalaxyModel
from .pretrained import PRETRAINED, load_pretrained, pretrained_path
from .training import (
    TrainingConfig,
    TrainingHistory,
    encode_latents,
    train_galaxy_model,
    train_vae,
    vae_loss,
)
from .vae import GalaxyVAE, VAEConfig

__all__ = [
    "GalaxySet",
    "make_galaxies",
    "check_stamps",
    "VAEConfig",
    "GalaxyVAE",
    "LatentFlow",
    "GalaxyModel",
    "TrainingConfig",
    "TrainingHistory",
    "train_vae",
    "vae_loss",
    "encode_latents",
    "fit_flow",
    "distill_flow",
    "train_galaxy_model",
    "PRETRAINED",
    "load_pretrained",
    "pretrained_path",
]
