"""The supernova light-curve workflow: seeded mock fits recover the truth within their errors."""

import json
import math

import numpy as np
import pytest
import torch

import skyfit
import skyfit.demo
from skyfit.demo import simulate_supernova, supernova_light_curve_model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_light_curve_fit_recovers_truth_within_3_sigma(seed):
    data = simulate_supernova(seed)
    post, _ = supernova_light_curve_model(data, start_seed=seed + 1)
    res = skyfit.fit_map(post)
    assert res.converged
    lap = skyfit.laplace(post, res.x)
    assert not lap.repaired
    truth = torch.tensor([data.truth[n] for n in post.names], dtype=torch.float64)
    pulls = (res.x - truth) / lap.std
    assert pulls.abs().max() < 3.0, dict(zip(post.names, pulls.tolist()))


def test_demo_writes_figures_graph_and_summary(tmp_path):
    summary = skyfit.demo.run_demo(tmp_path, seed=0, progress=False, samplers="quick")
    assert summary["converged"]
    data = json.loads((tmp_path / "summary.json").read_text())
    names = {p["name"] for p in data["parameters"]}
    assert {"lightcurve.t0", "lightcurve.sigma", "lightcurve.peak_flux", "sn.x0"} <= names
    for p in data["parameters"]:
        assert set(p) >= {"name", "value", "uncertainty", "truth"}
        assert abs(p["value"] - p["truth"]) < 3 * p["uncertainty"]
    assert (tmp_path / "images.png").stat().st_size > 10_000
    assert (tmp_path / "light_curve.png").stat().st_size > 10_000
    assert set(data["samplers"]) == {"emcee", "nuts"}
    for run in data["samplers"].values():
        assert {"max_rhat", "min_ess_bulk", "min_ess_tail", "n_divergent", "verdict"} <= set(run)
        # a 60-step smoke run cannot have converged, and says so
        assert run["verdict"].startswith("NOT converged")
    assert (tmp_path / "corner_nuts.png").exists() and (tmp_path / "chains_nuts.h5").exists()
    graph = [f for f in data["files"] if "model_graph" in f]
    assert graph and (tmp_path / graph[0].split("/")[-1]).exists()


def test_aperture_flux_recovers_a_point_source_on_a_sloped_background():
    grid = skyfit.PixelGrid((50, 50), 0.04)
    x, y = grid.coordinates()
    psf = skyfit.GaussianPSF(sigma=0.06, size=15)
    image = psf.point_image(grid, -0.3, 0.1, 80.0) + 2.0 + 0.5 * x  # flux 80 on a gradient
    estimate = skyfit.demo.aperture_flux(image, grid, -0.3, 0.1)
    # a 4-pixel (2.7 sigma) aperture holds 97.5% of a Gaussian PSF's light
    assert estimate == pytest.approx(80.0 * (1 - math.exp(-0.5 * (4 * 0.04 / 0.06) ** 2)),
                                     rel=0.02)


def test_demo_sampler_verdict_names_what_is_missing():
    rng = np.random.default_rng(0)
    good = skyfit.Samples(rng.normal(size=(4, 1000, 2)), ["a", "b"], np.zeros((4, 1000)), "nuts")
    verdict = skyfit.demo._verdict(good, skyfit.demo._sampler_summary(good, {"a": 0, "b": 0}))
    assert verdict == "converged"
    # an ensemble too short for its autocorrelation time, with too few effective draws
    walk = np.cumsum(rng.normal(size=(32, 100, 1)), axis=1)
    short = skyfit.Samples(walk, ["a"], np.zeros((32, 100)), "emcee",
                           info={"autocorr_time": np.array([60.0])})
    verdict = skyfit.demo._verdict(short, skyfit.demo._sampler_summary(short, {"a": 0}))
    assert verdict.startswith("NOT converged") and "100 steps < 50 tau = 3000" in verdict
    assert "R-hat > 1.01" in verdict and "ESS < 400" in verdict
