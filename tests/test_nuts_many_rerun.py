"""Sampling again only the unconverged objects: BatchedDensity.subset, ManyResult.subset and
with_rows, sample_nuts_many(thin=), resample_unconverged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_nuts_many import normal_gamma

from skyfit.examples.survey_night import simulate_survey_night, villar_posterior
from skyfit.inference import ManyResult, resample_unconverged, sample_nuts_many
from skyfit.survey import ManyObjects


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


def assert_same_result(a: ManyResult, b: ManyResult):
    for name in ("x", "log_density", "converged", "covariance", "rhat", "ess", "draws"):
        assert _same(getattr(a, name), getattr(b, name)), name
    assert a.messages == b.messages and a.warnings == b.warnings
    assert set(a.extra) == set(b.extra)
    for key in a.extra:
        assert _same(a.extra[key], b.extra[key]), key


@pytest.fixture(scope="module")
def short_run():
    # 100 + 60 iterations: too short for some of the 8 objects (R-hat 1.01-1.03), so some
    # are not converged
    density = normal_gamma(8, seed=3)
    mean, _ = density.truth()
    result = sample_nuts_many(density, torch.as_tensor(mean), n_chains=4, n_warmup=100,
                              n_draws=60, seed=2)
    return density, result


def test_density_subset_keeps_each_objects_log_density():
    density = normal_gamma(6)
    x = torch.randn(6, 2, dtype=torch.float64).abs() + 0.5
    full = density.log_prob(x)
    for rows in ([4, 1], torch.tensor([False, True, False, False, True, True])):
        part = density.subset(rows)
        index = torch.as_tensor(rows).nonzero().flatten() if torch.as_tensor(
            rows).dtype == torch.bool else torch.as_tensor(rows)
        assert type(part) is type(density) and part.n_objects == len(index)
        assert torch.equal(part.log_prob(x[index]), full[index])
    assert density.n_objects == 6  # the parent is untouched
    with pytest.raises(ValueError, match="no objects"):
        density.subset(torch.zeros(6, dtype=torch.bool))
    with pytest.raises(IndexError, match="out of range"):
        density.subset([6])


def test_survey_subset_swaps_the_subsets_data():
    # ManyObjects swaps each object's data into one template model: a subset must read its own
    night = simulate_survey_night(5, seed=4)
    many = ManyObjects(villar_posterior, night.data)
    x = many.initial()
    part = many.subset([3, 0])
    assert torch.equal(part.log_prob(x[:2]), many.log_prob(x)[[3, 0]])


def test_result_subset_and_with_rows_round_trip(short_run):
    _, result = short_run
    rows = [5, 2, 7]
    part = result.subset(rows)
    assert len(part) == 3 and torch.equal(part.x, result.x[rows])
    assert part.draws.shape == (3, *result.draws.shape[1:])
    assert torch.equal(part.extra["step_size"], result.extra["step_size"][rows])
    assert part.extra["n_batched_steps"] is result.extra["n_batched_steps"]  # a run total
    assert_same_result(result.with_rows(rows, part), result)
    # replacing rows moves exactly those rows
    swapped = result.with_rows([0, 1], result.subset([1, 0]))
    assert torch.equal(swapped.x[:2], result.x[[1, 0]]) and torch.equal(swapped.x[2:],
                                                                         result.x[2:])
    assert _same(swapped.draws[0], result.draws[1]) and swapped.warnings[0] == result.warnings[1]


def test_with_rows_refuses_what_does_not_fit(short_run):
    _, result = short_run
    with pytest.raises(ValueError, match="2 rows but the other result has 1"):
        result.with_rows([0, 1], result.subset([0]))
    other = result.subset([0])
    other.names = ["a", "c"]
    with pytest.raises(ValueError, match="names differ"):
        result.with_rows([0], other)
    other = result.subset([0])
    other.draws = other.draws[:, :, :10]
    with pytest.raises(ValueError, match="draws differs"):
        result.with_rows([0], other)
    other = result.subset([0])
    del other.extra["step_size"]
    with pytest.raises(ValueError, match="'step_size' is missing"):
        result.with_rows([0], other)
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        result.subset([0.5])
    with pytest.raises(IndexError, match="out of range"):
        result.subset([8])
    with pytest.raises(ValueError, match="shape \\(8,\\)"):
        result.subset(torch.ones(3, dtype=torch.bool))


def test_thin_keeps_every_thin_th_draw_of_the_longer_run():
    density = normal_gamma(3, seed=5)
    start = torch.as_tensor(density.truth()[0])
    options = dict(n_chains=2, n_warmup=30, seed=4)
    thinned = sample_nuts_many(density, start, n_draws=10, thin=3, **options)
    every = sample_nuts_many(density, start, n_draws=30, **options)
    np.testing.assert_array_equal(thinned.draws, every.draws[:, :, 2::3])
    assert torch.equal(thinned.extra["n_divergent"], every.extra["n_divergent"])
    assert torch.equal(thinned.extra["n_gradient_evals"], every.extra["n_gradient_evals"])
    with pytest.raises(ValueError, match="thin must be a positive integer"):
        sample_nuts_many(density, start, n_draws=10, thin=0, **options)


def test_resample_unconverged_replaces_only_those_objects(short_run):
    density, first = short_run
    unconverged = ~first.converged
    assert 0 < int(unconverged.sum()) < len(first), "the fixture must mix both kinds"
    again = resample_unconverged(density, first, thin=4, n_warmup=200, seed=7)
    marked = again.extra["sampled_again"]
    assert torch.equal(marked, unconverged)
    keep = (~marked).nonzero().flatten()
    assert_same_result(again.subset(keep), _without(first.subset(keep), again))
    # the objects sampled again: the same run as sample_nuts_many on them alone, thinned
    rows = marked.nonzero().flatten()
    alone = sample_nuts_many(density.subset(rows), first.subset(rows), n_chains=4,
                             n_warmup=200, n_draws=60, seed=7, mass="diag", thin=4)
    np.testing.assert_array_equal(again.draws[rows.numpy()], alone.draws)
    assert torch.equal(again.extra["n_gradient_evals"][rows],
                       alone.extra["n_gradient_evals"] + first.extra["n_gradient_evals"][rows])
    assert int(again.extra["n_batched_steps"]) == int(first.extra["n_batched_steps"]) + int(
        alone.extra["n_batched_steps"])
    assert all("sampled again with 4x" in again.warnings[i][0] for i in rows.tolist())
    # and their posteriors are right: each mean within 5 Monte Carlo errors of the truth
    mean, sd = density.truth()
    error = sd[rows.numpy()] / np.sqrt(again.ess[rows.numpy()])
    assert np.all(np.abs(again.x[rows].numpy() - mean[rows.numpy()]) < 5 * error)


def _without(result: ManyResult, reference: ManyResult) -> ManyResult:
    """``result`` with the extras a rerun adds (False for objects not sampled again) and its
    run totals taken from ``reference``."""
    result.extra["sampled_again"] = torch.zeros(len(result), dtype=torch.bool)
    for key in ("n_batched_steps", "compile_s"):
        result.extra[key] = reference.extra[key]
    return result


def test_a_second_call_keeps_the_first_calls_marks(short_run):
    density, first = short_run
    once = resample_unconverged(density, first, rows=[0], thin=1, n_warmup=50)
    twice = resample_unconverged(density, once, rows=[3], thin=1, n_warmup=50)
    assert twice.extra["sampled_again"].nonzero().flatten().tolist() == [0, 3]
    assert _same(twice.draws[0], once.draws[0])  # row 0 untouched by the second call
    assert "sampled_again" not in first.extra  # the input result is not modified


def test_resample_unconverged_edge_cases(short_run):
    density, first = short_run
    assert resample_unconverged(density, first, rows=[]) is first
    with pytest.raises(ValueError, match="has 8 objects but the density 3"):
        resample_unconverged(normal_gamma(3), first)
    fitted = first.subset(torch.arange(8))
    fitted.draws = None
    with pytest.raises(ValueError, match="with draws"):
        resample_unconverged(density, fitted)


def test_an_object_whose_draws_overflowed_is_not_sampled_again(short_run):
    # an improper posterior (an object with every point masked): its chains drift to 1e307,
    # its mean is inf; as a start it sank the whole pass ("log-density is inf at the start
    # point of chain k") for every other object. It keeps its row, with a warning
    density, first = short_run
    drifted = first.subset(torch.arange(8))
    drifted.x[5, 0] = float("inf")
    again = resample_unconverged(density, drifted, rows=[2, 5], thin=1, n_warmup=50)
    assert again.extra["sampled_again"].tolist() == [i == 2 for i in range(8)]
    assert torch.isinf(again.x[5, 0]) and "not sampled again" in again.warnings[5][-1]
    assert not any("not sampled again" in w for w in drifted.warnings[5])  # input untouched
    only = resample_unconverged(density, drifted, rows=[5])
    assert "sampled_again" not in only.extra and "not sampled again" in only.warnings[5][-1]


def test_an_object_without_a_finite_start_is_named_before_sampling(short_run):
    # a fit that never started (NaN start) left x NaN: the sampler named "chain 9", which the
    # user had to divide by n_chains to find the object
    density, first = short_run
    x = first.x.clone()
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"objects \[2\] .* NaN or inf start"):
        sample_nuts_many(density, x, n_chains=4)
