"""MAPResult, LaplaceResult and VIResult written to safetensors files and read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skyfit
from skyfit.errors import CorruptFileError, DataMismatchError, ModelFileError
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


def test_damaged_result_file_is_refused(posterior, tmp_path):
    # a flipped byte in a tensor loaded silently as a wrong optimum (safetensors checks only
    # its header)
    fit = skyfit.fit_map(posterior)
    path = tmp_path / "map.safetensors"
    fit.save(path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # inside the last tensor's bytes
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="bad.safetensors: checksum mismatch"):
        MAPResult.load(tmp_path / "bad.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file  # a file without the checksum (older skyfit)

    with safe_open(str(path), framework="pt") as handle:
        metadata = {"skyfit": handle.metadata()["skyfit"]}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    with pytest.raises(CorruptFileError, match="no checksum"):
        MAPResult.load(tmp_path / "old.safetensors")


def test_result_loaded_with_another_density_is_refused(posterior, tmp_path):
    fit = skyfit.fit_map(posterior)
    fit.save(tmp_path / "map.safetensors")
    lc = skyfit.GaussianLightCurve("other", t0=0.0, sigma=5.0, peak_flux=1.0)
    lc.to_dynamic()
    t = torch.linspace(-5, 5, 6, **f64)
    other = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, torch.ones(6, **f64),
                                                         torch.ones(6, **f64)))
    # same dimension, other parameters: apply() wrote the numbers into the wrong Params
    with pytest.raises(DataMismatchError, match="other.t0"):
        MAPResult.load(tmp_path / "map.safetensors", density=other)
