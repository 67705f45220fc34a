"""The one result type: diagnostics from ArviZ, warnings, conversion, plots, HDF5 round trip."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from skyfit import plots
from skyfit.errors import ConvergenceWarning
from skyfit.inference import Samples
from skyfit.inference.diagnostics import (
    ess,
    ks_uniform,
    mcse,
    rhat,
    sbc_chi2,
    sbc_ranks,
)


def iid_samples(n_chains=4, n_draws=1000, seed=0, **kw):
    rng = np.random.default_rng(seed)
    draws = rng.normal(size=(n_chains, n_draws, 2)) * [1.0, 3.0] + [0.0, 5.0]
    return Samples(draws=draws, names=["a", "b"], log_density=rng.normal(size=draws.shape[:2]),
                   sampler="test", **kw)


def ar1_chains(rho, n_chains=4, n_draws=4000, seed=1):
    rng = np.random.default_rng(seed)
    x = np.zeros((n_chains, n_draws))
    eps = rng.normal(size=(n_chains, n_draws)) * np.sqrt(1 - rho**2)
    x[:, 0] = rng.normal(size=n_chains)
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x


def test_ess_of_ar1_chain_matches_theory():
    rho = 0.8
    x = ar1_chains(rho)
    expected = x.size * (1 - rho) / (1 + rho)  # N / tau for an AR(1) process
    assert ess(x) == pytest.approx(expected, rel=0.15)
    # MCSE of the mean is sd / sqrt(ESS)
    assert mcse(x) == pytest.approx(x.std() / np.sqrt(expected), rel=0.1)


def test_rhat_flags_chains_that_disagree():
    x = ar1_chains(0.5)
    assert rhat(x) < 1.01
    shifted = x + np.arange(4)[:, None] * 0.5
    assert rhat(shifted) > 1.1


def test_summary_has_moments_quantiles_and_diagnostics_without_warning_when_converged():
    s = iid_samples()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        table = s.summary()
    assert list(table.index) == ["a", "b"]
    for col in ["mean", "sd", "q5%", "q50%", "q95%", "mcse_mean", "mcse_sd", "ess_bulk",
                "ess_tail", "r_hat"]:
        assert col in table.columns
    np.testing.assert_allclose(table["mean"], [0.0, 5.0], atol=0.1)
    np.testing.assert_allclose(table["sd"], [1.0, 3.0], rtol=0.03)
    np.testing.assert_allclose(table["q50%"], [0.0, 5.0], atol=0.1)
    assert (table["ess_bulk"] > 3000).all()
    # iid draws: MCSE of the mean is sd / sqrt(number of draws)
    np.testing.assert_allclose(table["mcse_mean"], np.array([1.0, 3.0]) / np.sqrt(4000),
                               rtol=0.15)
    np.testing.assert_allclose(s.rhat(), table["r_hat"])
    np.testing.assert_allclose(s.ess(), table["ess_bulk"])
    np.testing.assert_allclose(s.ess("tail"), table["ess_tail"])


def test_check_warns_on_high_rhat_low_ess_and_divergences():
    s = iid_samples(n_draws=50)
    s.draws[0] += 10.0  # one chain elsewhere
    s.sample_stats["diverging"] = np.zeros((4, 50), dtype=bool)
    s.sample_stats["diverging"][1, :3] = True
    with pytest.warns(ConvergenceWarning) as record:
        problems = s.check()
    text = " ".join(problems)
    assert "R-hat > 1.01" in text and "ESS < 400" in text and "3 divergent" in text
    assert len(record) == len(problems) == 3
    assert s.n_divergent == 3
    with pytest.warns(ConvergenceWarning):
        s.summary()


def test_check_flags_an_ensemble_shorter_than_50_autocorrelation_times():
    rng = np.random.default_rng(0)
    good = Samples(rng.normal(size=(4, 1000, 2)), ["a", "b"], np.zeros((4, 1000)), "nuts",
                   info={"autocorr_time": np.array([1.0, 1.2])})
    assert good.check(warn=False) == []
    # a random walk of 100 steps with tau = 60: too short, and too few effective draws
    walk = np.cumsum(rng.normal(size=(32, 100, 1)), axis=1)
    short = Samples(walk, ["a"], np.zeros((32, 100)), "emcee",
                    info={"autocorr_time": np.array([60.0])})
    text = " ".join(short.check(warn=False))
    assert "100 steps < 50 autocorrelation times (3000)" in text
    assert "R-hat > 1.01" in text and "ESS < 400" in text
    # tau not estimable (nan) counts as too short
    short.info["autocorr_time"] = np.array([np.nan])
    assert any("autocorrelation times" in p for p in short.check(warn=False))


def test_to_arviz_keeps_names_and_sample_stats():
    s = iid_samples(sample_stats={"diverging": np.zeros((4, 1000), dtype=int),
                                  "tree_depth": np.full((4, 1000), 3)})
    idata = s.to_arviz()
    assert set(idata.posterior.data_vars) == {"a", "b"}
    assert idata.posterior["b"].shape == (4, 1000)
    np.testing.assert_array_equal(idata.posterior["b"].values, s["b"])
    assert idata.sample_stats["diverging"].dtype == bool
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, s.log_density)
    assert int(idata.sample_stats["tree_depth"].sum()) == 3 * 4000


def test_save_load_round_trip(tmp_path):
    s = iid_samples(sample_stats={"diverging": np.zeros((4, 1000), dtype=bool)},
                    info={"wall_time": 1.5, "n_evals": 123, "step_size": np.array([0.1, 0.2]),
                          "mass": {"diag": np.ones(2), "kind": "diag"}, "note": None,
                          "tags": ["x", "y"], "converged": True, "a/b": 2})
    path = tmp_path / "draws.h5"
    s.save(path)
    t = Samples.load(path)
    np.testing.assert_array_equal(t.draws, s.draws)
    np.testing.assert_array_equal(t.log_density, s.log_density)
    assert t.names == s.names and t.sampler == s.sampler
    np.testing.assert_array_equal(t.sample_stats["diverging"], s.sample_stats["diverging"])
    assert t.info["wall_time"] == 1.5 and t.info["n_evals"] == 123
    np.testing.assert_array_equal(t.info["step_size"], [0.1, 0.2])
    np.testing.assert_array_equal(t.info["mass"]["diag"], np.ones(2))
    assert t.info["mass"]["kind"] == "diag" and t.info["note"] is None
    assert t.info["tags"] == ["x", "y"] and t.info["converged"] is True and t.info["a/b"] == 2


def test_load_rejects_other_hdf5_files(tmp_path):
    import h5py
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a skyfit Samples file"):
        Samples.load(path)


def test_concatenate_stacks_chains_and_checks_names():
    a, b = iid_samples(seed=0), iid_samples(n_chains=2, seed=1)
    a.sample_stats["diverging"] = np.zeros((4, 1000), dtype=bool)
    b.sample_stats["diverging"] = np.ones((2, 1000), dtype=bool)
    c = Samples.concatenate([a, b])
    assert c.draws.shape == (6, 1000, 2)
    np.testing.assert_array_equal(c.draws[4:], b.draws)
    assert c.n_divergent == 2000 and len(c.info["parts"]) == 2
    other = Samples(draws=b.draws, names=["a", "c"], log_density=b.log_density, sampler="x")
    with pytest.raises(ValueError, match="names differ"):
        Samples.concatenate([a, other])


def test_corner_and_trace_plots_show_every_parameter():
    s = iid_samples()
    fig = plots.corner_plot(s, truths={"a": 0.0, "b": 5.0})
    assert len(fig.axes) == 4
    assert fig.axes[2].get_xlabel() == "a" and fig.axes[2].get_ylabel() == "b"
    plt.close(fig)
    fig = plots.trace_plot(s)
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "a"
    assert len(fig.axes[0].lines) == 4  # one line per chain
    plt.close(fig)


def test_ks_uniform_accepts_uniform_and_rejects_normal():
    rng = np.random.default_rng(0)
    assert ks_uniform(rng.uniform(2, 5, 2000), 2, 5) > 0.01
    assert ks_uniform(np.clip(rng.normal(3.5, 0.5, 2000), 2, 5), 2, 5) < 1e-6


def test_sbc_ranks_uniform_for_calibrated_and_not_for_overconfident_posterior():
    # conjugate normal model: theta ~ N(0, 1), y ~ N(theta, 1) -> posterior N(y / 2, 1 / 2)
    rng = np.random.default_rng(0)
    n_rep, n_draws = 500, 99
    theta = rng.normal(size=(n_rep, 1))
    y = theta + rng.normal(size=(n_rep, 1))
    good = y[:, None, :] / 2 + np.sqrt(0.5) * rng.normal(size=(n_rep, n_draws, 1))
    bad = y[:, None, :] / 2 + 0.3 * rng.normal(size=(n_rep, n_draws, 1))
    ranks = sbc_ranks(theta, good)
    assert ranks.shape == (n_rep, 1) and ranks.min() >= 0 and ranks.max() <= n_draws
    assert sbc_chi2(ranks, n_draws, n_bins=10)[0] > 0.01
    assert sbc_chi2(sbc_ranks(theta, bad), n_draws, n_bins=10)[0] < 1e-6
