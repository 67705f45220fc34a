"""sample_nuts_many: objects x chains in one batch, checked against analytic posteriors and
against the single-object sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skyfit.inference import (
    BatchedDensity,
    ManyResult,
    laplace,
    laplace_many,
    sample_nuts,
    sample_nuts_many,
)
from skyfit.inference.nuts_many import bulk_ess, split_rhat


class NormalGamma(BatchedDensity):
    """Object n: ``a ~ N(mu_n, sd_n)`` (unbounded) and ``b ~ Gamma(k_n, rate_n)`` (``b > 0``),
    independent; so every object's posterior mean and sd are known exactly."""

    def __init__(self, mu, sd, k, rate):
        as64 = dict(dtype=torch.float64)
        self.names = ["a", "b"]
        self.lower = torch.tensor([-torch.inf, 0.0], **as64)
        self.upper = torch.tensor([torch.inf, torch.inf], **as64)
        self.data = {key: torch.as_tensor(v, **as64) for key, v in
                     dict(mu=mu, sd=sd, k=k, rate=rate).items()}

    def object_log_prob(self, x, data):
        a, b = x[0], x[1]
        return (-0.5 * ((a - data["mu"]) / data["sd"]) ** 2
                + (data["k"] - 1) * torch.log(b) - data["rate"] * b)

    def truth(self):
        d = {key: v.numpy() for key, v in self.data.items()}
        mean = np.column_stack([d["mu"], d["k"] / d["rate"]])
        sd = np.column_stack([d["sd"], np.sqrt(d["k"]) / d["rate"]])
        return mean, sd


def normal_gamma(n, seed=0):
    rng = np.random.default_rng(seed)
    # scales differ by up to ~50x between objects: each object's chains adapt their own step
    return NormalGamma(mu=rng.normal(0, 10, n), sd=np.exp(rng.uniform(-2, 2, n)),
                       k=rng.uniform(2, 20, n), rate=np.exp(rng.uniform(-2, 2, n)))


@pytest.fixture(scope="module")
def sampled():
    density = normal_gamma(12)
    mean, _ = density.truth()
    result = sample_nuts_many(density, torch.as_tensor(mean), n_chains=4, n_warmup=300,
                              n_draws=400, seed=1)
    return density, result


def test_per_object_means_and_sds_match_the_analytic_posteriors(sampled):
    density, result = sampled
    mean, sd = density.truth()
    assert isinstance(result, ManyResult) and result.draws.shape == (12, 4, 400, 2)
    # Monte-Carlo standard error of a mean is sd / sqrt(ESS); of an sd about sd / sqrt(2 ESS)
    z_mean = (result.x.numpy() - mean) / (sd / np.sqrt(result.ess))
    z_sd = (result.std.numpy() - sd) / (sd / np.sqrt(2 * result.ess))
    assert np.abs(z_mean).max() < 4.5, z_mean
    assert np.abs(z_sd).max() < 5.0, z_sd
    # and coarsely, without trusting the sampler's own ESS
    np.testing.assert_allclose(result.std.numpy(), sd, rtol=0.2)
    assert (result.ess > 200).all() and (result.rhat < 1.02).all()
    assert result.converged.all() and int(result.extra["n_divergent"].sum()) == 0


def test_each_object_adapts_its_own_step_size(sampled):
    density, result = sampled
    step = result.extra["step_size"].numpy()
    # a's scale spans e^-2 .. e^2 between objects; after the mass matrix absorbs it the
    # per-object step sizes are all O(1), while the mass entries follow each object's variance
    inv_mass_a = result.extra["inv_mass"].numpy()[:, :, 0].mean(1)
    _, sd = density.truth()
    ratio = inv_mass_a / sd[:, 0] ** 2
    assert ratio.max() / ratio.min() < 4, ratio
    assert step.shape == (12, 4) and (step > 0.1).all()


def test_table_has_a_row_per_object_with_diagnostics(sampled):
    _, result = sampled
    table = result.to_pandas()
    assert len(table) == 12
    assert {"a", "a_err", "a_rhat", "a_ess", "b_ess", "n_divergent", "converged"} <= set(table)
    np.testing.assert_allclose(table["b_rhat"], result.rhat[:, 1])


def test_rhat_and_ess_flag_a_chain_stuck_elsewhere():
    rng = np.random.default_rng(0)
    good = rng.standard_normal((2, 4, 500, 1))
    bad = good.copy()
    bad[1, 0] += 3.0  # object 1: one chain in another place
    rhat, ess = split_rhat(bad), bulk_ess(good)
    assert rhat[0, 0] < 1.01 and rhat[1, 0] > 1.1
    # independent draws: ESS about the number of draws (2000)
    assert np.all((ess > 1500) & (ess < 2600)), ess


def test_one_object_is_the_single_object_sampler():
    # the same starts and seed: the batch of one object is sample_nuts on that object
    density = normal_gamma(1, seed=3)
    mean, _ = density.truth()
    many = sample_nuts_many(density, torch.as_tensor(mean), n_chains=3, n_warmup=60,
                            n_draws=30, seed=4, init_scale=0.0, lockstep=True)
    single = sample_nuts(density.object(0),
                         init=torch.as_tensor(mean).expand(3, 2), n_chains=3, n_warmup=60,
                         n_draws=30, seed=4, progress=False)
    np.testing.assert_allclose(many.draws[0], single.draws, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mass", ["diag", "dense"])
def test_one_chain_out_of_step_is_the_single_object_sampler(mass):
    # out of step, a chain runs sample_nuts' warm-up on its own schedule (dual averaging, the
    # window estimates, the step-size search at each window end): with one chain it is that
    # sampler draw for draw, through three slow windows; many chains are independent copies
    density = normal_gamma(1, seed=3)
    mean, _ = density.truth()
    options = dict(n_chains=1, n_warmup=300, n_draws=40, seed=4, mass=mass)
    many = sample_nuts_many(density, torch.as_tensor(mean), init_scale=0.0, **options)
    single = sample_nuts(density.object(0), init=torch.as_tensor(mean), progress=False,
                         **options)
    np.testing.assert_array_equal(many.draws[0], single.draws)
    np.testing.assert_array_equal(many.extra["step_size"][0].numpy(), single.info["step_size"])


def one_narrow_object(narrow_sd):
    """Six objects ``a ~ N(0, 1)``, ``b ~ Gamma(10, 1)``; object 3's ``a`` is ``narrow_sd``
    wide: its widths differ by ``0.33 / narrow_sd`` (``log b`` has sd ``1/3``)."""
    sd = np.ones(6)
    sd[3] = narrow_sd
    density = NormalGamma(mu=np.zeros(6), sd=sd, k=np.full(6, 10.0), rate=np.ones(6))
    mode = torch.as_tensor(np.column_stack([np.zeros(6), np.full(6, 9.0)]))
    return density, mode


def test_each_object_starts_from_its_own_laplace_covariance():
    density, mode = one_narrow_object(1e-3)
    start = laplace_many(density, mode)
    result = sample_nuts_many(density, start, n_chains=2, n_warmup=0, n_draws=5)
    # unconstrained metric: var(a) = sd^2; z = log b at the Gamma mode b* = (k - 1) / rate has
    # var (dz/db)^2 var(b) = (1 / b*^2) (b*^2 / (k - 1)) = 1 / (k - 1)
    expected = np.column_stack([density.data["sd"].numpy() ** 2, np.full(6, 1 / 9)])
    np.testing.assert_allclose(result.extra["inv_mass"].numpy(),
                               np.repeat(expected[:, None], 2, 1), rtol=1e-6)
    for i in (0, 3):
        single = sample_nuts(density.object(i), init=laplace(density.object(i), mode[i]),
                             n_chains=2, n_warmup=0, n_draws=5, progress=False)
        np.testing.assert_allclose(result.extra["inv_mass"][i].numpy(),
                                   single.info["inv_mass_matrix"], rtol=1e-10)
    dense = sample_nuts_many(density, start, n_chains=2, n_warmup=0, n_draws=5, mass="dense")
    assert dense.extra["inv_mass"].shape == (6, 2, 2, 2)
    np.testing.assert_allclose(dense.extra["inv_mass"].numpy().diagonal(0, -2, -1),
                               np.repeat(expected[:, None], 2, 1), rtol=1e-6)


def test_a_broken_covariance_still_starts_every_chain_in_the_support():
    # object 2's covariance is absurd (a repaired Hessian, an unconverged fit): its Gaussian
    # draws of log b overflow, so its chains start near its point instead
    density, mode = one_narrow_object(1.0)
    start = laplace_many(density, mode)
    start.covariance[2] = torch.diag(torch.tensor([1.0, 1e8], dtype=torch.float64)) * 1e6
    result = sample_nuts_many(density, start, n_chains=2, n_warmup=0, n_draws=3, seed=2)
    assert np.isfinite(result.draws).all() and (result.draws[..., 1] > 0).all()


def test_a_badly_scaled_object_does_not_set_the_batch_cost():
    # counts, not times: leapfrog gradients per object and batched calls of the whole run
    density, mode = one_narrow_object(1e-2)
    options = dict(n_chains=4, n_warmup=100, n_draws=50, seed=1)
    per_chain_iteration = 4 * 150
    identity = sample_nuts_many(density, mode, **options)
    evals = identity.extra["n_gradient_evals"].numpy() / per_chain_iteration
    others = np.delete(evals, 3)
    # an identity first metric: the narrow object needs far longer trees than the others
    assert evals[3] > 2.5 * np.median(others), evals
    from_laplace = sample_nuts_many(density, laplace_many(density, mode), **options)
    evals = from_laplace.extra["n_gradient_evals"].numpy() / per_chain_iteration
    # its own covariance as the first metric: every object a well-scaled Gaussian's trees
    assert evals.max() < 10 and evals[3] < 2 * np.median(np.delete(evals, 3)), evals
    assert int(from_laplace.extra["n_batched_steps"]) < int(identity.extra["n_batched_steps"]) / 2
    assert (from_laplace.rhat < 1.05).all()


class CorrelatedGaussians(BatchedDensity):
    """Object n: ``x ~ N(mean_n, cov_n)`` in 2-D with correlation ``rho_n`` (up to 0.95) and
    widths that differ by 100x between objects."""

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        sd = np.exp(rng.uniform(-2.3, 2.3, (n, 2)))
        rho = rng.uniform(-0.95, 0.95, n)
        cov = np.empty((n, 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = sd[:, 0] ** 2, sd[:, 1] ** 2
        cov[:, 0, 1] = cov[:, 1, 0] = rho * sd[:, 0] * sd[:, 1]
        self.names = ["u", "v"]
        self.lower = torch.full((2,), -torch.inf, dtype=torch.float64)
        self.upper = torch.full((2,), torch.inf, dtype=torch.float64)
        self.mean, self.cov = rng.normal(0, 5, (n, 2)), cov
        self.data = {"mean": torch.as_tensor(self.mean),
                     "precision": torch.as_tensor(np.linalg.inv(cov))}

    def object_log_prob(self, x, data):
        r = x - data["mean"]
        return -0.5 * r @ data["precision"] @ r


def test_chains_out_of_step_recover_each_objects_mean_and_covariance():
    # dense metric from each object's exact covariance (Laplace of a Gaussian is exact)
    density = CorrelatedGaussians(10, seed=1)
    start = laplace_many(density, torch.as_tensor(density.mean))
    result = sample_nuts_many(density, start, n_chains=4, n_warmup=200, n_draws=300, seed=3,
                              mass="dense")
    sd = np.sqrt(density.cov.diagonal(0, -2, -1))
    z_mean = (result.x.numpy() - density.mean) / (sd / np.sqrt(result.ess))
    assert np.abs(z_mean).max() < 4.5, z_mean
    est_sd = result.std.numpy()
    corr = result.covariance.numpy() / (est_sd[:, :, None] * est_sd[:, None, :])
    true_corr = density.cov / (sd[:, :, None] * sd[:, None, :])
    np.testing.assert_allclose(corr, true_corr, atol=0.1)
    np.testing.assert_allclose(result.std.numpy(), sd, rtol=0.15)
    assert (result.rhat < 1.02).all() and int(result.extra["n_divergent"].sum()) == 0
    # the adapted dense metric is each object's covariance, to the error of one chain's window
    # (each entry within a factor 2; their geometric mean within 20%)
    ratio = result.extra["inv_mass"].numpy().diagonal(0, -2, -1) / sd[:, None] ** 2
    assert (np.abs(np.log(ratio)) < np.log(2)).all() and abs(np.log(ratio).mean()) < 0.2


def test_chains_out_of_step_need_fewer_batched_calls_than_lockstep():
    # identity first metric on objects 100x apart in width: some chain of the batch builds a
    # deep tree at most iterations; out of step, the others do not wait for it
    density = normal_gamma(40, seed=5)
    mean, sd = density.truth()
    options = dict(n_chains=4, n_warmup=150, n_draws=150, seed=1)
    lockstep = sample_nuts_many(density, torch.as_tensor(mean), lockstep=True, **options)
    free = sample_nuts_many(density, torch.as_tensor(mean), **options)
    assert int(free.extra["n_batched_steps"]) < 0.5 * int(lockstep.extra["n_batched_steps"])
    # the same leapfrog work per object, to within the runs' randomness
    ratio = free.extra["n_gradient_evals"].sum() / lockstep.extra["n_gradient_evals"].sum()
    assert 0.7 < float(ratio) < 1.4, ratio
    for result in (free, lockstep):
        z_mean = (result.x.numpy() - mean) / (sd / np.sqrt(result.ess))
        assert np.abs(z_mean).max() < 4.5, z_mean


def test_an_absurd_start_covariance_is_replaced_by_the_objects_typical_one():
    # object 2's Laplace covariance has an sd of 1e6 for a (a flat direction of a fit stuck on
    # a bound): as a metric it would give step sizes of ~1e-6 and trees of maximum depth
    density, mode = one_narrow_object(1.0)
    start = laplace_many(density, mode)
    start.covariance[2, 0, 0] = 1e12
    result = sample_nuts_many(density, start, n_chains=2, n_warmup=0, n_draws=3, seed=2)
    replaced = result.extra["start_metric_replaced"].numpy()
    assert replaced.tolist() == [False, False, True, False, False, False]
    assert any("start covariance" in w for w in result.warnings[2])
    # the typical metric: the median of the other objects' variances (a: 1, log b: 1/9)
    np.testing.assert_allclose(result.extra["inv_mass"][2].numpy(), [[1.0, 1 / 9]] * 2,
                               rtol=1e-6)
    np.testing.assert_allclose(result.extra["inv_mass"][0].numpy(), [[1.0, 1 / 9]] * 2,
                               rtol=1e-6)


def test_a_non_finite_rhat_names_the_parameter_and_the_drift():
    from skyfit.inference.nuts_many import _rhat_warning
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((4, 50, 2))
    draws[..., 1] = np.cumsum(np.full((4, 50), 1e306), axis=1)  # drifting to overflow
    rhat = split_rhat(draws[None])[0]
    assert np.isfinite(rhat[0]) and not np.isfinite(rhat[1])
    text = _rhat_warning(rhat, draws, ["a", "tau_rise"])
    assert "R-hat not finite for tau_rise" in text and "improper posterior" in text
    assert _rhat_warning(np.array([1.2, 1.0]), draws, ["a", "b"]) == "nuts: max R-hat 1.200 >= 1.01"


@pytest.mark.slow  # two torch.compile compilations of the per-object gradient
def test_compiled_chains_give_the_eager_gradients_and_each_objects_posterior():
    import warnings

    from skyfit.inference.batched import ObjectRows
    from skyfit.inference.nuts_many_gradient import CHUNK, chains_density
    from skyfit.inference.transforms import UnconstrainedDensity

    density = normal_gamma(80, seed=2)
    mean, sd = density.truth()
    rows = torch.arange(80).repeat_interleave(4)  # 320 chains: one chunk and a padded one
    objects = ObjectRows(density, rows)
    u = UnconstrainedDensity(objects)
    z = u.to_unconstrained(torch.as_tensor(mean)[rows]) + 0.3 * torch.randn(320, 2,
                                                                            dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback warning where no compiler is found
        compiled, info = chains_density(u, objects, True, 100, z)
        for chains in (torch.arange(320), torch.tensor([5]), torch.arange(3, 3 + CHUNK // 2)):
            objects.select(chains)
            got, want = compiled.value_and_grad(z[chains]), u.value_and_grad(z[chains])
            objects.select(None)
            torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
        assert chains_density(u, objects, False, 100, z)[0] is u
        result = sample_nuts_many(normal_gamma(12, seed=3), torch.as_tensor(normal_gamma(
            12, seed=3).truth()[0]), n_chains=4, n_warmup=200, n_draws=300, seed=1,
            compile=True)
    mean, sd = normal_gamma(12, seed=3).truth()
    z_mean = (result.x.numpy() - mean) / (sd / np.sqrt(result.ess))
    assert np.abs(z_mean).max() < 4.5, z_mean
    np.testing.assert_allclose(result.std.numpy(), sd, rtol=0.2)
    assert info["fallback"] is not None or info["n_compiles"] == 2


def test_welford_with_a_count_per_chain_gives_each_chains_covariance():
    # chains out of step add draws at different times: a (chain,) count, updates on subsets
    from skyfit.inference.adaptation.welford import WelfordCovariance, WelfordState

    rng = np.random.default_rng(4)
    draws = [rng.standard_normal((n, 3)) @ rng.standard_normal((3, 3)) for n in (5, 9, 30)]
    for dense in (True, False):
        welford = WelfordCovariance(3, 3, dense=dense)
        first = welford.init()
        state = WelfordState(torch.zeros(3, dtype=torch.float64), first.mean, first.m2)
        for step in range(30):
            idx = torch.tensor([c for c in range(3) if step < len(draws[c])])
            z = torch.as_tensor(np.stack([draws[c][step] for c in idx.tolist()]))
            sub = welford.update(WelfordState(state.count[idx], state.mean[idx],
                                              state.m2[idx]), z)
            for field, value in zip(state, sub):
                field[idx] = value
        cov = welford.covariance(state).numpy()
        for c in range(3):
            want = np.cov(draws[c].T)
            np.testing.assert_allclose(cov[c], want if dense else np.diag(want), rtol=1e-12)
        n = np.array([5.0, 9.0, 30.0])
        shrunk = welford.inverse_mass(state).numpy()
        for c in range(3):  # Stan's regularisation with each chain's own count
            want = np.cov(draws[c].T)
            want = want if dense else np.diag(want)
            eye = np.eye(3) if dense else np.ones(3)
            np.testing.assert_allclose(shrunk[c], n[c] / (n[c] + 5) * want
                                       + 1e-3 * 5 / (n[c] + 5) * eye, rtol=1e-12)


def test_chains_dropped_from_the_working_set_in_the_tail_keep_each_objects_posterior(
        monkeypatch):
    # 48 chains: once half of them have run all their transitions the rest continue in a
    # smaller working set (rows remapped to chains); every chain still runs all its
    # transitions and each object's draws still follow its exact posterior
    from skyfit.inference import nuts_unsynced

    drops = []
    original = nuts_unsynced._drop_finished

    def counted(t):
        drops.append(t.n_work)
        original(t)

    monkeypatch.setattr(nuts_unsynced, "_drop_finished", counted)
    density = normal_gamma(12, seed=5)
    mean, sd = density.truth()
    result = sample_nuts_many(density, torch.as_tensor(mean), n_chains=4, n_warmup=200,
                              n_draws=300, seed=2)
    assert drops and drops[0] == 48  # the drop ran, from the full working set
    assert np.isfinite(result.draws).all() and result.draws.shape == (12, 4, 300, 2)
    z_mean = (result.x.numpy() - mean) / (sd / np.sqrt(result.ess))
    assert np.abs(z_mean).max() < 4.5, z_mean
    np.testing.assert_allclose(result.std.numpy(), sd, rtol=0.2)
