"""MAPResult, LaplaceResult and VIResult written to safetensors files and read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skyfit
from skyfit.errors import ModelFileError
from skyfit.inference import MAPResult
from skyfit.inference.laplace import LaplaceResult
from skyfit.inference.vi import VIResult

f64 = dict(dtype=torch.float64)


@pytest.fixture(scope="module")
def posterior():
    t = torch.linspace(-20, 20, 14, **f64)
    truth = skyfit.GaussianLightCurve("sn", t0=3.0, sigma=6.0, peak_flux=2.0)
    flux = truth.flux(t).detach() + 0.35 * torch.randn(14, generator=torch.Generator()
                                                       .manual_seed(1), **f64)
    lc = skyfit.GaussianLightCurve("sn", t0=0.0, sigma=5.0, peak_flux=1.0)
    lc.to_dynamic()
    return skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, torch.full_like(t, 0.35)))


def test_map_and_laplace_round_trip(posterior, tmp_path):
    fit = skyfit.fit_map(posterior)
    fit.save(tmp_path / "map.safetensors")
    again = MAPResult.load(tmp_path / "map.safetensors", density=posterior)
    assert torch.equal(again.x, fit.x) and again.names == fit.names
    assert again.converged == fit.converged and again.log_density == fit.log_density
    again.apply()
    with pytest.raises(ValueError, match="no density"):
        MAPResult.load(tmp_path / "map.safetensors").apply()
    lap = skyfit.laplace(posterior, fit.x)
    lap.save(tmp_path / "laplace.safetensors")
    back = LaplaceResult.load(tmp_path / "laplace.safetensors")
    assert torch.equal(back.covariance, lap.covariance) and torch.equal(back.hessian, lap.hessian)
    assert np.array_equal(back.sample(50, seed=2).draws, lap.sample(50, seed=2).draws)
    with pytest.raises(ModelFileError, match="holds a LaplaceResult, not a MAPResult"):
        MAPResult.load(tmp_path / "laplace.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelFileError, match="junk"):
        LaplaceResult.load(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("family", ["fullrank", "meanfield"])
def test_vi_round_trip(posterior, family, tmp_path):
    vi = skyfit.fit_vi(posterior, family=family, n_steps=30, progress=False)
    vi.save(tmp_path / "vi.safetensors")
    again = VIResult.load(tmp_path / "vi.safetensors", density=vi.density, q=vi.q)
    assert torch.equal(again.mean, vi.mean) and torch.equal(again.covariance, vi.covariance)
    assert again.family == family and np.array_equal(again.elbo_history, vi.elbo_history)
    assert again.info == vi.info
    assert np.array_equal(again.sample(20, seed=1).draws, vi.sample(20, seed=1).draws)
