"""The survey-scale path on a model skyfit does not ship: a user's own caskade module (an
exponential decay on a baseline) and masked Gaussian likelihood, with the bad inputs a real
catalogue has."""

from __future__ import annotations

import json
import math
import warnings

import caskade as ck
import numpy as np
import pandas as pd
import pytest
import torch

from skyfit import Posterior
from skyfit.errors import DataError, HessianWarning, ShapeError
from skyfit.inference import fit_map_many, laplace_many
from skyfit.survey import ManyObjects, fit_catalogue, stack_ragged


class Decay(ck.Module):
    def __init__(self):
        super().__init__("Decay")
        self.A = ck.Param("A", 1.0, valid=(0.0, None))
        self.tau = ck.Param("tau", 3.0, valid=(0.1, 50.0))
        self.B = ck.Param("B", 0.0)

    @ck.forward
    def model(self, t, A=None, tau=None, B=None):
        return A * torch.exp(-t / tau) + B


class MaskedGaussian(ck.Module):
    def __init__(self, decay, t, y, yerr, mask):
        super().__init__("likelihood")
        self.decay = decay
        self.t, self.y, self.yerr = (torch.as_tensor(a, dtype=torch.float64) for a in (t, y, yerr))
        self.mask = torch.as_tensor(mask, dtype=torch.bool)

    @ck.forward
    def __call__(self):
        r = (self.y - self.decay.model(self.t)) / self.yerr
        terms = r * r + torch.log(2 * math.pi * self.yerr**2)
        return -0.5 * torch.where(self.mask, terms, torch.zeros_like(terms)).sum()


def decay_posterior(t, y, yerr, mask):
    decay = Decay()
    decay.to_dynamic()
    return Posterior(MaskedGaussian(decay, t, y, yerr, mask))


def simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.stack([rng.uniform(1.0, 3.0, n), rng.uniform(2.0, 6.0, n),
                      rng.normal(0.0, 0.3, n)], 1)
    objects = []
    for a, tau, b in truth:
        t = np.sort(rng.uniform(0.0, 20.0, rng.integers(15, 40)))
        yerr = np.full_like(t, 0.1)
        objects.append({"t": t, "y": a * np.exp(-t / tau) + b + yerr * rng.standard_normal(len(t)),
                        "yerr": yerr})
    return stack_ragged(objects), truth


def test_one_object_with_a_nan_start_does_not_sink_the_batchs_laplace():
    # a starts function that gives NaN for one odd object: that object is reported (not
    # started, no covariance), the others get their Laplace errors as without it
    data, truth = simulate(6, seed=1)
    many = ManyObjects(decay_posterior, data)
    x0 = torch.as_tensor(truth).clone()
    x0[2, 0] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = laplace_many(many, fit_map_many(many, x0))
    assert any(isinstance(w.message, HessianWarning) and "not finite" in str(w.message)
               for w in caught)
    assert not result.converged[2] and torch.isnan(result.covariance[2]).all()
    assert any("not finite" in w for w in result.warnings[2])
    good = [0, 1, 3, 4, 5]
    assert result.converged[good].all()
    alone = laplace_many(many.subset(good), result.x[good])
    torch.testing.assert_close(result.std[good], alone.std, rtol=1e-9, atol=0)
    # laplace_many at points alone (no fit result): the same per-object handling
    points = laplace_many(many, result.x)
    assert torch.isnan(points.covariance[2]).all() and not points.converged[2]
    torch.testing.assert_close(points.std[good], alone.std, rtol=1e-9, atol=0)


def test_a_damaged_chunk_file_is_fitted_again_on_resume(tmp_path):
    # a chunk file damaged after its run (a crash before the file system wrote it out, a
    # partial copy) was skipped on every rerun and failed the final read (ArrowInvalid)
    data, truth = simulate(6, seed=2)
    options = dict(chunk_size=2, starts=truth, client="inline", progress=False)
    first = fit_catalogue(decay_posterior, data, tmp_path, **options)
    chunk = tmp_path / "chunk-00001.parquet"
    for damage in (chunk.read_bytes()[:100], b""):
        chunk.write_bytes(damage)
        again = fit_catalogue(decay_posterior, data, tmp_path, **options)
        np.testing.assert_array_equal(again["Decay.A"], first["Decay.A"])
    # a readable file of another length is not taken for this chunk either
    pd.DataFrame({"Decay.A": [0.0, 0.0, 0.0]}).to_parquet(chunk)
    again = fit_catalogue(decay_posterior, data, tmp_path, **options)
    np.testing.assert_array_equal(again["Decay.A"], first["Decay.A"])


def test_a_damaged_or_missing_manifest_is_rewritten_only_if_no_chunk_is_on_disk(tmp_path):
    data, truth = simulate(4, seed=2)
    options = dict(chunk_size=2, starts=truth, client="inline", progress=False)
    (tmp_path / "manifest.json").write_text('{"fingerpr')  # killed while writing it
    table = fit_catalogue(decay_posterior, data, tmp_path, **options)
    assert len(table) == 4 and json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text("")
    with pytest.raises(DataError, match="manifest.json is missing or damaged"):
        fit_catalogue(decay_posterior, data, tmp_path, **options)
    # chunks without a manifest (deleted "to start again"): not taken for this run's
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing or damaged"):
        fit_catalogue(decay_posterior, data, tmp_path, **options)


@pytest.mark.parametrize("case", ["zero objects", "ragged object axis", "nan", "starts"])
def test_a_bad_catalogue_is_refused_before_any_chunk_is_fitted(tmp_path, case):
    # these failed chunk by chunk: the first chunks written under a manifest that the
    # corrected catalogue no longer matched; zero objects ended in pandas' "No objects to
    # concatenate"
    data, truth = simulate(4, seed=2)
    starts = truth
    if case == "zero objects":
        data = {k: v[:0] for k, v in data.items()}
        starts, error = truth[:0], "no objects"
    elif case == "ragged object axis":
        data["y"], error = data["y"][:3], "leading object axis"
    elif case == "nan":
        data["y"][3, 0], error = np.nan, "NaN or inf"
    else:
        starts, error = truth[:3], "one row per object"
    with pytest.raises((DataError, ShapeError, ValueError), match=error):
        fit_catalogue(decay_posterior, data, tmp_path / "out", chunk_size=2, starts=starts,
                      client="inline", progress=False)
    assert not (tmp_path / "out").exists()


def test_float32_data_are_batched_as_the_likelihood_holds_them():
    # dtype=float32 (or float32 arrays): the likelihood casts its copies to float64, the swap
    # put float32 in, the two differed by rounding and the check refused skyfit's own
    # PaddedPhotometry as "does not read the swapped data"
    from skyfit.examples.survey_night import simulate_survey_night, villar_posterior

    night = simulate_survey_night(4, seed=0)
    x = torch.as_tensor(night.truth)
    many = ManyObjects(villar_posterior, night.data, dtype=torch.float32)
    rounded = {k: torch.as_tensor(v).float() if v.dtype.kind == "f" else torch.as_tensor(v)
               for k, v in night.data.items()}
    own = [villar_posterior(**{k: v[i] for k, v in rounded.items()}).log_prob(x[i])
           for i in range(4)]
    torch.testing.assert_close(many.log_prob(x), torch.stack(own), rtol=1e-12, atol=0)
    data, truth = simulate(3, seed=4)
    mine = ManyObjects(decay_posterior, {k: v.astype(np.float32) if v.dtype.kind == "f" else v
                                         for k, v in data.items()})
    assert mine.data["y"].dtype == torch.float64
    assert fit_map_many(mine, torch.as_tensor(truth)).converged.all()


class TermsNotSummed(MaskedGaussian):
    @ck.forward
    def __call__(self):
        r = (self.y - self.decay.model(self.t)) / self.yerr
        return -0.5 * torch.where(self.mask, r * r, torch.zeros_like(r))  # .sum() forgotten


def terms_posterior(t, y, yerr, mask):
    decay = Decay()
    decay.to_dynamic()
    return Posterior(TermsNotSummed(decay, t, y, yerr, mask))


def test_a_likelihood_that_returns_its_terms_unsummed_is_refused_with_its_shape():
    # was "Boolean value of Tensor with more than one value is ambiguous" from the swap check
    data, _ = simulate(3, seed=5)
    with pytest.raises(ShapeError, match=r"log p of shape \(\d+,\).*sum of its terms"):
        ManyObjects(terms_posterior, data)


def test_an_object_stopped_content_on_a_ridge_says_not_converged_in_its_message():
    # object 161 of a 300-object catalogue of this model (A -> 0 and tau -> its lower bound
    # trade off): the optimiser's "converged: steps change log p by rounding only" stayed the
    # message of an object the exact Hessian then judged not converged (a table row saying
    # both converged=False and "converged: ...")
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(4.0, 20.0, 11))  # the decay is over before the first point
    y = -0.2 + 0.1 * rng.standard_normal(11)
    data = stack_ragged([{"t": t, "y": y, "yerr": np.full(11, 0.1)}] * 2)
    many = ManyObjects(decay_posterior, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_map_many(many, torch.tensor([[0.0151, 0.1536, -0.2289]] * 2))
    for ok, message in zip(result.converged.tolist(), result.messages):
        assert ok == message.startswith("converged"), (ok, message)


def test_starts_clipped_onto_a_bound_are_refused_naming_objects_and_parameters():
    # np.clip(starts, lower, upper): tau = 50 sits at +37 in the unconstrained space, where no
    # Newton step moves it; the object ended "not converged: ... a wall, a kink, or a wrong
    # gradient?" (fit_map from the same start converges)
    data, truth = simulate(4, seed=6)
    many = ManyObjects(decay_posterior, data)
    x0 = torch.as_tensor(truth).clone()
    x0[1, 1] = 50.0
    x0[3, 0] = -0.1  # outside: A >= 0
    with pytest.raises(ValueError, match=r"objects \[1, 3\].*\['Decay.A', 'Decay.tau'\]"):
        fit_map_many(many, x0)
    with pytest.raises(ValueError, match=r"objects \[1\]"):
        fit_map_many(many, torch.stack([torch.as_tensor(truth), x0.clamp(min=0.01)]))


def test_zero_objects_are_refused_as_such():
    # was "data arrays must share a leading object axis: {'t': 0, 'y': 0, ...}" (they do)
    data, _ = simulate(2, seed=0)
    with pytest.raises(DataError, match="no objects"):
        ManyObjects(decay_posterior, {k: v[:0] for k, v in data.items()})


def test_laplace_at_points_alone_does_not_call_a_point_outside_the_support_converged():
    # laplace_many(density, x) marked every object converged, one with log p = -inf (tau = 100
    # outside its (0.1, 50) range) included: std inf, converged True
    data, truth = simulate(3, seed=1)
    x = torch.as_tensor(truth).clone()
    x[1, 1] = 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = laplace_many(ManyObjects(decay_posterior, data), x)
    assert result.converged.tolist() == [True, False, True]


def decay_posterior_wide_prior(t, y, yerr, mask):
    """``decay_posterior`` with a prior on ``tau``: another model over the same data."""
    from torch.distributions import LogNormal

    post = decay_posterior(t, y, yerr, mask)
    one = torch.tensor(1.0, dtype=torch.float64)
    return Posterior(post.likelihood, priors={post.likelihood.decay.tau: LogNormal(one, one)})


def test_a_rerun_with_another_model_or_starts_is_refused_and_the_same_one_resumes(tmp_path):
    # the manifest held the data and chunking only: an edited model rerun in the same folder
    # kept the old model's chunks beside the new one's, one table of two models
    data, _ = simulate(8, seed=3)
    out = tmp_path / "run"
    options = dict(chunk_size=4, client="inline", progress=False)
    first = fit_catalogue(decay_posterior, data, out, **options)
    (out / "chunk-00001.parquet").unlink()  # a run that died before its last chunk
    with pytest.raises(DataError, match="other model"):
        fit_catalogue(decay_posterior_wide_prior, data, out, **options)
    with pytest.raises(DataError, match="other starts"):
        fit_catalogue(decay_posterior, data, out, starts=np.tile([2.0, 4.0, 0.0], (8, 1)),
                      **options)
    with pytest.raises(DataError, match="other fit"):
        fit_catalogue(decay_posterior, data, out, laplace=False, **options)
    # the same run resumes (torch's thread count changes no result and is not compared)
    again = fit_catalogue(decay_posterior, data, out, torch_threads=1, **options)
    pd.testing.assert_frame_equal(again, first)


def test_band_indices_given_as_floats_must_be_whole_numbers():
    # the batch casts each array to its attribute's dtype: 0.7 as a band index became band 0
    from skyfit.examples.survey_night import simulate_survey_night, villar_posterior

    data = dict(simulate_survey_night(3, seed=0).data)
    whole = {**data, "band": data["band"].astype(float)}
    many = ManyObjects(villar_posterior, whole)
    assert many.data["band"].dtype == torch.long
    torch.testing.assert_close(many.data["band"], torch.as_tensor(data["band"]).long())
    broken = whole["band"].copy()
    broken[1, 0] = 0.7
    with pytest.raises(DataError, match="'band'.*not whole numbers"):
        ManyObjects(villar_posterior, {**data, "band": broken})


def test_a_users_model_recovers_its_truth_within_the_laplace_errors():
    # the survey path on a model skyfit does not ship: 60 ragged objects with masked points;
    # pulls (fit - truth) / sd of the converged ones are standard normal if the fits and the
    # batched Hessians are right (a factor-2 error in the sd fails the width checks)
    data, truth = simulate(60, seed=7)
    many = ManyObjects(decay_posterior, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = laplace_many(many, fit_map_many(many, torch.as_tensor(truth) * 1.2 + 0.05))
    ok = result.converged.numpy()
    assert ok.mean() > 0.9
    pulls = ((result.x.numpy() - truth) / result.std.numpy())[ok]
    assert np.abs(pulls).max() < 5
    inside = (np.abs(pulls) < 1).mean()
    assert 0.55 < inside < 0.8, inside  # 0.683 for a Gaussian; 3 x ~55 pulls
    assert 0.7 < pulls.std() < 1.35
