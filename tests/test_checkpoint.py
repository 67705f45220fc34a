"""Checkpoints: atomic writes, plain-tensor files, and resumed runs equal uninterrupted ones."""

import io

import numpy as np
import pytest
import torch

from skyfit.inference import FunctionDensity, sample_hmc, sample_nuts
from skyfit.inference.checkpoint import load_checkpoint, save_checkpoint


def test_checkpoint_roundtrip_is_plain_and_atomic(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"iteration": 7, "x": torch.arange(3.0), "nested": {"a": [1, None]}})
    payload = path.read_bytes().split(b"\n", 2)[2]  # after the marker and the header lines
    state = torch.load(io.BytesIO(payload), weights_only=True)  # no arbitrary unpickling needed
    assert state["iteration"] == 7 and torch.equal(state["x"], torch.arange(3.0))
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(path, {"iteration": 8, "bad": object()})
    assert load_checkpoint(path)["iteration"] == 7  # the failed write left the old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary files left


def _density(kill_after=None, exc=SystemExit):
    calls = {"n": 0}

    def logp(x):
        calls["n"] += 1
        if kill_after is not None and calls["n"] > kill_after:
            raise exc
        return -0.5 * ((x - 1) ** 2 / torch.tensor([0.5, 2.0, 1.0], dtype=x.dtype) ** 2).sum(-1)

    return FunctionDensity(logp, ["a", "b", "c"], lower=[0.0, -torch.inf, -torch.inf])


@pytest.mark.parametrize("sampler", [sample_nuts, sample_hmc])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, sampler):
    kw = dict(init=torch.ones(3), n_chains=3, n_warmup=120, n_draws=60, seed=5, progress=False)
    ref = sampler(_density(), **kw)
    path = tmp_path / "ck.pt"
    # a hard kill at 60% of the run's density calls (a fixed count, 1,200, was past the end of
    # the HMC run on another CPU: 1,196 calls, where rounding changed the adapted step size)
    kill_after = int(0.6 * ref.info["n_density_calls"])
    with pytest.raises(SystemExit):  # a hard kill: only the periodic checkpoints survive
        sampler(_density(kill_after=kill_after), checkpoint=path, checkpoint_every=25, **kw)
    state = load_checkpoint(path)
    assert state["iteration"] % 25 == 0 and 0 < state["iteration"] < 180
    # the checkpoint is the states' fields: the kernel's (where the chains are) and the warm-up's
    assert set(state["kernel_state"]) == {"position", "log_density", "grad"}
    assert {"step_size", "inv_mass", "dual_averaging", "welford"} <= set(state["adaptation_state"])
    for key in ("rng_state", "stage", "iteration"):
        assert key in state
    out = sampler(_density(), checkpoint=path, checkpoint_every=25, resume=True, **kw)
    assert out.info["resumed_from"] == state["iteration"]
    np.testing.assert_array_equal(out.draws, ref.draws)
    for key, value in ref.sample_stats.items():
        np.testing.assert_array_equal(out.sample_stats[key], value)
    np.testing.assert_array_equal(out.info["inv_mass_matrix"], ref.info["inv_mass_matrix"])


def test_ctrl_c_keeps_draws_and_resumes_from_the_last_iteration(tmp_path):
    kw = dict(init=torch.ones(3), n_chains=2, n_warmup=60, n_draws=80, seed=6, progress=False)
    ref = sample_nuts(_density(), **kw)
    path = tmp_path / "ck.pt"
    kill_after = int(0.9 * ref.info["n_density_calls"])  # deterministic: during sampling
    with pytest.warns(Warning, match="KeyboardInterrupt"):
        part = sample_nuts(_density(kill_after, KeyboardInterrupt), checkpoint=path,
                           checkpoint_every=1000, **kw)
    assert part.info["interrupted"] and 0 < part.n_draws < 80
    np.testing.assert_array_equal(part.draws, ref.draws[:, :part.n_draws])
    assert load_checkpoint(path)["iteration"] == 60 + part.n_draws
    out = sample_nuts(_density(), checkpoint=path, resume=True, **kw)
    np.testing.assert_array_equal(out.draws, ref.draws)
    assert not out.info["interrupted"]


def test_resume_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    kw = dict(init=torch.ones(3), n_warmup=30, n_draws=10, progress=False, checkpoint=path)
    sample_nuts(_density(), n_chains=2, **kw)
    with pytest.raises(ValueError, match="n_chains"):
        sample_nuts(_density(), n_chains=3, resume=True, **kw)
    finished = sample_nuts(_density(), n_chains=2, resume=True, **kw)  # nothing left to do
    assert finished.n_draws == 10 and finished.info["resumed_from"] == 40


def test_interrupt_at_the_end_of_an_adaptation_window_resumes_exactly(tmp_path, monkeypatch):
    import skyfit.inference.adaptation.window_adaptation as sampling

    d = FunctionDensity(lambda x: -0.5 * ((x - 1) ** 2).sum(-1), 2)
    kw = dict(init=torch.ones(2), n_chains=2, n_warmup=150, n_draws=20, seed=0, progress=False)
    reference = sample_nuts(d, **kw)
    original = sampling.find_reasonable_step_size
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-size search at the end of the first slow window
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "find_reasonable_step_size", interrupted)
    path = tmp_path / "chain.pt"
    with pytest.warns(Warning):
        part = sample_nuts(d, checkpoint=path, **kw)
    assert part.info["interrupted"]
    monkeypatch.setattr(sampling, "find_reasonable_step_size", original)
    resumed = sample_nuts(d, checkpoint=path, resume=True, **kw)
    np.testing.assert_array_equal(resumed.draws, reference.draws)
