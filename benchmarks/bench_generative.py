"""Neural source prior: cost of a log-posterior gradient with the latent through an IAF (one
pass) versus through a MAF's inverse (one pass per latent dimension and layer)."""

from __future__ import annotations

import harness
import torch
from harness import Benchmark, best_times, median_of_rounds, spread

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
    from skyfit.examples import lensed_galaxy_problem

    prob = lensed_galaxy_problem(model, seed=0, prior=prior)
    return prob.posterior, prob.truth


def _time_grads(problems: dict, quick: bool) -> tuple[dict[str, float], list]:
    """ms per value+gradient of each ``name: (posterior, x)``, timed interleaved, in rounds:
    the round of the median stamp ratio, and the spread of that ratio."""
    fns = {name: (lambda p=post, v=x: p.value_and_grad(v)) for name, (post, x) in problems.items()}
    ratio = lambda r: r["stamp_maf"] / r["stamp_iaf"]  # noqa: E731
    _, times, rounds = median_of_rounds(
        lambda _: best_times(fns, repeat=3 if quick else 5, number=3 if quick else 10),
        2 if quick else harness.ROUNDS, ratio)
    return {f"{name}_ms": 1e3 * t for name, t in times.items()}, spread(rounds, ratio)


def vae_prior_gradient(quick: bool) -> tuple[float, dict]:
    model = load_pretrained("galaxy32")
    # the same architecture at D = 8 (timing only: the weights do not change the cost): the
    # MAF's inverse costs D passes per layer, so the IAF's advantage grows with D
    torch.manual_seed(0)
    narrow = GalaxyModel(GalaxyVAE(latent_dim=8), LatentFlow(8, "iaf"), LatentFlow(8, "maf"))
    problems = {}
    for prior in ("iaf", "maf"):
        problems[f"stamp_{prior}"] = _stamp_posterior(model, prior)
        problems[f"lens_{prior}"] = _lens_posterior(model, prior)
        problems[f"stamp8_{prior}"] = _stamp_posterior(narrow, prior)
    times, lo_hi = _time_grads(problems, quick)
    ratio = times["stamp_maf_ms"] / times["stamp_iaf_ms"]
    details = dict(spread=lo_hi, **times)
    details["lens_ratio"] = times["lens_maf_ms"] / times["lens_iaf_ms"]
    details["stamp8_ratio"] = times["stamp8_maf_ms"] / times["stamp8_iaf_ms"]
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
        "Time of one log-posterior value+gradient of a VAESource (pretrained galaxy32, D=16) "
        "fitted to a 32x32 image, latent eps mapped to z through the MAF's inverse (D passes "
        "per layer) over through the IAF (one pass). Details: the same for the lensed-galaxy "
        "problem of tutorial 04 (lens_ratio) and for a D=8 model (stamp8_ratio).",
    ),
]
