"""Neural source prior: cost of a log-posterior gradient with the latent through an IAF (one
pass) versus through a MAF's inverse (one pass per latent dimension and layer)."""

from __future__ import annotations

import torch
from harness import Benchmark, best_time

import skyfit
from skyfit.generative import GalaxyModel, GalaxyVAE, LatentFlow, load_pretrained


def _stamp_posterior(model: GalaxyModel, prior: str) -> tuple[skyfit.Posterior, torch.Tensor]:
    """A VAESource seen directly (no lens) in a 32x32 image: decoder + flow + likelihood."""
    src = skyfit.VAESource(model, prior=prior, scale=0.05, flux=10.0,
                           latent_value=0.3 * torch.ones(model.latent_dim))
    scene = skyfit.Scene(skyfit.PixelGrid((32, 32), 0.05), [src],
                         skyfit.GaussianPSF(sigma=0.05, size=7))
    data = scene().detach()
    for p in (src.latent, src.x0, src.y0, src.flux):
        p.to_dynamic()
    post = skyfit.Posterior(skyfit.GaussianLikelihood(scene, data, variance=torch.full_like(
        data, 0.01)))
    return post, post.initial()


def _lens_posterior(model: GalaxyModel, prior: str) -> tuple[skyfit.Posterior, torch.Tensor]:
    from skyfit.generative.lensing import lensed_galaxy_problem

    prob = lensed_galaxy_problem(model, seed=0, prior=prior)
    return prob.posterior, prob.truth


def _time_grad(post, x, quick) -> float:
    return best_time(lambda: post.value_and_grad(x), repeat=3 if quick else 7,
                     number=3 if quick else 10)


def vae_prior_gradient(quick: bool) -> tuple[float, dict]:
    model = load_pretrained("galaxy32")
    times = {}
    for prior in ("iaf", "maf"):
        post, x = _stamp_posterior(model, prior)
        times[f"stamp_{prior}_ms"] = 1e3 * _time_grad(post, x, quick)
        post, x = _lens_posterior(model, prior)
        times[f"lens_{prior}_ms"] = 1e3 * _time_grad(post, x, quick)
    # the same architecture at D = 16 (timing only: the weights do not change the cost)
    torch.manual_seed(0)
    wide = GalaxyModel(GalaxyVAE(latent_dim=16), LatentFlow(16, "iaf"), LatentFlow(16, "maf"))
    for prior in ("iaf", "maf"):
        post, x = _stamp_posterior(wide, prior)
        times[f"stamp16_{prior}_ms"] = 1e3 * _time_grad(post, x, quick)
    ratio = times["stamp_maf_ms"] / times["stamp_iaf_ms"]
    details = dict(times)
    details["lens_ratio"] = times["lens_maf_ms"] / times["lens_iaf_ms"]
    details["stamp16_ratio"] = times["stamp16_maf_ms"] / times["stamp16_iaf_ms"]
    details["latent_dim"] = model.latent_dim
    details["threads"] = torch.get_num_threads()
    return ratio, details


BENCHMARKS = [
    Benchmark(
        "vae_prior_gradient",
        "maf_inverse_time/iaf_time",
        ">=",
        5.0,
        vae_prior_gradient,
        "Time of one log-posterior value+gradient of a VAESource (pretrained galaxy32, D=8) "
        "fitted to a 32x32 image, latent eps mapped to z through the MAF's inverse (D passes "
        "per layer) over through the IAF (one pass). Details: the same for the lensed-galaxy "
        "problem of tutorial 04 (lens_ratio) and for a D=16 model (stamp16_ratio).",
    ),
]
