"""The supernova example (skyfit.examples.supernova): seeded mock fits recover the truth within
their errors; the demo (``python -m skyfit demo``) writes its report."""

import json
import math

import pytest
import torch

import skyfit
from skyfit.cli import main
from skyfit.examples.supernova import aperture_flux, simulate_supernova, supernova_light_curve_model


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
    assert main(["demo", "--out", str(tmp_path), "--samplers", "quick", "--quiet"]) == 0
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
        # a 60-step smoke run cannot have converged, and Samples.check says why
        assert run["verdict"].startswith("NOT converged") and "ESS < 400" in run["verdict"]
    assert "autocorrelation times" in data["samplers"]["emcee"]["verdict"]
    assert (tmp_path / "corner_nuts.png").exists() and (tmp_path / "chains_nuts.h5").exists()
    graph = [f for f in data["files"] if "model_graph" in f]
    assert graph and (tmp_path / graph[0].split("/")[-1]).exists()


def test_aperture_flux_recovers_a_point_source_on_a_sloped_background():
    grid = skyfit.PixelGrid((50, 50), 0.04)
    x, y = grid.coordinates()
    psf = skyfit.GaussianPSF(sigma=0.06, size=15)
    image = psf.point_image(grid, -0.3, 0.1, 80.0) + 2.0 + 0.5 * x  # flux 80 on a gradient
    estimate = aperture_flux(image, grid, -0.3, 0.1)
    # a 4-pixel (2.7 sigma) aperture holds 97.5% of a Gaussian PSF's light
    assert estimate == pytest.approx(80.0 * (1 - math.exp(-0.5 * (4 * 0.04 / 0.06) ** 2)),
                                     rel=0.02)
