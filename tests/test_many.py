"""Many independent objects in one batched call, and a catalogue over Dask workers."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from skyfit import fit_map, laplace
from skyfit.examples.survey_night import simulate_survey_night, villar_posterior
from skyfit.inference.many import fit_map_many, laplace_many
from skyfit.survey import (
    CatalogueError,
    ManyObjects,
    default_chunk_size,
    fit_catalogue,
    fit_chunk,
    stack_ragged,
)


@pytest.fixture(scope="module")
def night():
    return simulate_survey_night(50, seed=3)


def near_truth(night, seed=0):
    # starts 2% off the truth: the fit has one clear mode to find from there
    rng = np.random.default_rng(seed)
    return night.truth * (1 + 0.02 * rng.standard_normal(night.truth.shape))


def one_object(night, i, masked=True):
    arrays = {k: v[i] for k, v in night.data.items()}
    if not masked:  # the object's real points only, no padding, no mask
        keep = arrays.pop("mask")
        arrays = {k: v[keep] for k, v in arrays.items()}
    return villar_posterior(**arrays)


def test_batched_log_prob_equals_each_object_and_ignores_padding(night):
    sub = night.subset(slice(0, 8))
    many = ManyObjects(villar_posterior, sub.data)
    x = torch.as_tensor(near_truth(sub))
    batched = many.log_prob(x)
    singles = torch.stack([one_object(sub, i, masked=False).log_prob(x[i]) for i in range(8)])
    torch.testing.assert_close(batched, singles, rtol=1e-12, atol=0)
    # padded entries changed arbitrarily: the masked points contribute exactly 0
    garbage = {k: v.copy() for k, v in sub.data.items()}
    pad = ~garbage["mask"]
    assert pad.any()
    garbage["flux"][pad] = 1e6
    garbage["flux_err"][pad] = 1e-3
    garbage["time"][pad] = -500.0
    assert torch.equal(ManyObjects(villar_posterior, garbage).log_prob(x), batched)
    # a chain axis in front: (chains, N, dim) -> (chains, N)
    assert many.log_prob(torch.stack([x, x])).shape == (2, 8)


def test_stack_ragged_pads_with_the_last_point_and_masks():
    data = stack_ragged([{"t": [1.0, 2.0, 3.0], "b": [0, 1, 2]}, {"t": [4.0], "b": [1]}])
    assert data["t"].tolist() == [[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]
    assert data["b"].tolist() == [[0, 1, 2], [1, 1, 1]]
    assert data["mask"].tolist() == [[True] * 3, [True, False, False]]


def test_fit_map_many_and_laplace_many_equal_single_object_fits(night):
    many = ManyObjects(villar_posterior, night.data)
    x0 = torch.as_tensor(near_truth(night))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = laplace_many(many, fit_map_many(many, x0))
    assert result.converged.float().mean() > 0.9
    checked = 0
    for i in range(len(night)):
        post = one_object(night, i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single = fit_map(post, x0[i])
        if not (single.converged and result.converged[i]):
            continue
        checked += 1
        std = result.std[i]
        tol = 1e-6 * (single.x.abs() + std)
        assert ((result.x[i] - single.x).abs() <= tol).all(), (i, result.x[i], single.x)
        if i < 5:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cov = laplace(post, single.x).covariance
            torch.testing.assert_close(result.covariance[i], cov, rtol=1e-6, atol=0)
    assert checked >= 45
    table = result.to_pandas()
    assert len(table) == 50 and {"Villar.t0", "Villar.t0_err", "converged"} <= set(table)
    # the fitted t0 is within 5 sigma of the truth for nearly every object (a physics check)
    pull = (table["Villar.t0"] - night.truth[:, 0]) / table["Villar.t0_err"]
    assert (pull.abs() < 5).mean() > 0.9


def test_objects_split_over_threads_give_the_one_thread_fit(night, monkeypatch):
    # with two intra-op threads fit_map_many runs two shards of objects in two Python threads
    # (one intra-op thread each); ManyObjects swaps each object's data into its one template
    # model, so each shard needs its own copy: shared, the threads' data would mix. Each
    # object's arithmetic is that of the one-thread fit, bit for bit.
    from skyfit.inference import many_newton

    many = ManyObjects(villar_posterior, night.data)
    x0 = torch.as_tensor(near_truth(night, seed=2))
    threads = torch.get_num_threads()
    seen = []
    original = many_newton.in_threads

    def counting(work, density, n_rows):
        def recorded(copy_, rows):
            seen.append((id(copy_), threading.get_ident(), torch.get_num_threads(), len(rows)))
            return work(copy_, rows)
        return original(recorded, density, n_rows)

    monkeypatch.setattr("skyfit.inference.many.in_threads", counting)
    monkeypatch.setattr(many_newton, "MIN_ROWS_PER_THREAD", 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        one = laplace_many(many, fit_map_many(many, x0))
        torch.set_num_threads(2)
        try:
            split = laplace_many(many, fit_map_many(many, x0))
        finally:
            assert torch.get_num_threads() == 2  # restored after the shards
            torch.set_num_threads(threads)
    # one thread: one shard; two: the Newton fit and the final Hessians in two shards each,
    # in two threads, on two densities, with one intra-op thread each
    assert [s[3] for s in seen] == [50, 50, 25, 25, 25, 25]
    split_runs = seen[2:]
    assert len({s[0] for s in split_runs[:2]}) == 2 and len({s[1] for s in split_runs[:2]}) == 2
    assert {s[2] for s in split_runs} == {1}
    assert one.converged.float().mean() > 0.9
    for field in ("x", "log_density", "converged", "covariance"):
        assert torch.equal(getattr(split, field), getattr(one, field)), field
    assert split.messages == one.messages


# -- Dask ------------------------------------------------------------------------------------

def small_catalogue(n=12):
    night = simulate_survey_night(n, seed=5)
    return night, near_truth(night, seed=1)


def test_dask_table_equals_in_process(tmp_path):
    night, starts = small_catalogue()
    # one torch thread in whichever thread fits a chunk: OpenMP's thread count is per calling
    # thread, and a different reduction order may flip a borderline object's Laplace error
    # (the embedded cluster's worker threads get torch_threads=1 by default)
    inline = fit_catalogue(villar_posterior, night.data, tmp_path / "inline", chunk_size=4,
                           starts=starts, client="inline", progress=False, torch_threads=1)
    threads, filters = torch.get_num_threads(), list(warnings.filters)
    dask = fit_catalogue(villar_posterior, night.data, tmp_path / "dask", chunk_size=4,
                         starts=starts, n_workers=2, progress=False)
    # the worker threads set torch's threads and warning filters of this process: restored
    assert torch.get_num_threads() == threads and warnings.filters == filters
    assert list(dask.index) == list(range(12))
    numeric = list(inline.select_dtypes(include=["number", "bool"]).columns)
    assert "Villar.t0_err" in numeric
    np.testing.assert_allclose(dask[numeric].to_numpy(float), inline[numeric].to_numpy(float),
                               rtol=1e-9)
    assert list(dask["message"]) == list(inline["message"])


def test_one_client_serves_two_runs_and_a_finished_run_starts_no_cluster(tmp_path,
                                                                         monkeypatch):
    # task keys are unique per call: a second run on the same Client with other chunks gets
    # its own results, not the first run's chunk i; a rerun of a finished run starts nothing
    from distributed import Client, LocalCluster

    from skyfit.survey import catalogue

    night, starts = small_catalogue(6)
    options = dict(starts=starts, progress=False, torch_threads=1)
    inline = fit_catalogue(villar_posterior, night.data, tmp_path / "inline", chunk_size=6,
                           client="inline", **options)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        threes = fit_catalogue(villar_posterior, night.data, tmp_path / "a", chunk_size=3,
                               client=client, **options)
        twos = fit_catalogue(villar_posterior, night.data, tmp_path / "b", chunk_size=2,
                             client=client, **options)
    for table in (threes, twos):
        assert list(table.index) == list(range(6))
        np.testing.assert_allclose(table["Villar.t0"], inline["Villar.t0"], rtol=1e-9)

    def no_cluster(*args, **kwargs):
        raise AssertionError("a finished run started a cluster")

    monkeypatch.setattr(catalogue, "_local_cluster", no_cluster)
    again = fit_catalogue(villar_posterior, night.data, tmp_path / "a", **options)
    np.testing.assert_allclose(again["Villar.t0"], threes["Villar.t0"], rtol=0)


def test_skyfits_own_worker_processes_run_without_dasks_trim_threshold_and_profiler():
    # Dask's MALLOC_TRIM_THRESHOLD_ switches off glibc's dynamic mmap threshold: every large
    # tensor a batched fit frees is unmapped and the next one page-faulted back (the
    # many_fits_dask row); skyfit's embedded cluster drops it, a plain LocalCluster keeps it
    import dask
    from distributed import Client, LocalCluster

    from skyfit.survey.catalogue import _local_cluster

    def trim_threshold():
        return os.environ.get("MALLOC_TRIM_THRESHOLD_")

    def profiled(dask_worker):  # Dask's stack sampler, for a dashboard skyfit's cluster lacks
        return "profile" in dask_worker.periodic_callbacks

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536}):
        with _local_cluster(1, processes=True) as cluster, Client(cluster) as client:
            assert set(client.run(trim_threshold).values()) == {None}
            assert set(client.run(profiled).values()) == {False}
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as plain, \
                Client(plain) as client:
            assert set(client.run(trim_threshold).values()) == {"65536"}
            assert set(client.run(profiled).values()) == {True}


def failing_once(factory, data, marker_dir=None, fail_chunk=1, kill=False, **options):
    """A chunk fit that records each call, and dies (raises, or kills its worker process) the
    first time it is given chunk ``fail_chunk``."""
    first = options["first_index"]
    calls = Path(marker_dir)
    n_before = len(list(calls.glob(f"call-{first}-*")))
    (calls / f"call-{first}-{n_before}").touch()
    if first == len(data["time"]) * fail_chunk and n_before == 0:
        if kill:
            os._exit(1)  # the worker process dies mid-chunk
        raise RuntimeError("simulated crash")
    return fit_chunk(factory, data, **options)


def test_resume_after_a_failed_run_refits_nothing_twice(tmp_path):
    night, starts = small_catalogue(6)
    out, calls = tmp_path / "out", tmp_path / "calls"
    calls.mkdir()
    with pytest.raises(CatalogueError, match="1 of 3 chunks failed"):
        fit_catalogue(villar_posterior, night.data, out, chunk_size=2, starts=starts,
                      fit=failing_once, client="inline", retries=0, progress=False,
                      marker_dir=str(calls))
    assert sorted(p.name for p in out.glob("*.parquet")) == ["chunk-00000.parquet",
                                                              "chunk-00002.parquet"]
    table = fit_catalogue(villar_posterior, night.data, out, chunk_size=2, starts=starts,
                          fit=failing_once, client="inline", progress=False,
                          marker_dir=str(calls))
    # chunks 0 and 2 once; chunk 1 twice (the crash, then the rerun); every object once
    assert sorted(p.name for p in calls.iterdir()) == ["call-0-0", "call-2-0", "call-2-1",
                                                        "call-4-0"]
    assert list(table.index) == list(range(6))
    assert table["converged"].all()
    # the same folder refuses another catalogue
    with pytest.raises(Exception, match="other data"):
        fit_catalogue(villar_posterior, night.data, out, chunk_size=3, client="inline",
                      progress=False)


def test_default_chunks_are_few_per_worker_and_a_rerun_keeps_the_runs_chunking(tmp_path):
    # 2 chunks per worker of >= 1,000 objects, else 1 per worker of >= 256 (no idle worker for
    # a catalogue of a few thousand); more only above 20,000 objects per chunk; shared evenly
    assert [default_chunk_size(n, 2) for n in (12, 511, 512, 1_999, 2_000, 3_000, 10_000)] == [
        12, 511, 256, 1_000, 1_000, 1_500, 2_500]
    assert default_chunk_size(1_500, 8) == 300  # 5 of the 8 workers, chunks of >= 256
    assert default_chunk_size(2_500, 4) == 625 and default_chunk_size(10**5, 4) == 12_500
    assert default_chunk_size(10**6, 8) == 20_000  # 50 chunks, not 16 of 62,500
    with pytest.raises(ValueError):
        default_chunk_size(0, 2)
    with pytest.raises(ValueError, match="n_workers must be at least 1"):
        fit_catalogue(villar_posterior, small_catalogue(2)[0].data, tmp_path / "no", n_workers=0)
    night, starts = small_catalogue(6)
    out, calls = tmp_path / "out", tmp_path / "calls"
    calls.mkdir()
    fit_catalogue(villar_posterior, night.data, out, chunk_size=2, starts=starts,
                  fit=failing_once, client="inline", progress=False, marker_dir=str(calls))
    (out / "chunk-00001.parquet").unlink()  # as if the run had died before chunk 1 was written
    # chunk_size=None would be one chunk of 6 for this catalogue: the rerun resumes the run's
    # chunks of 2 instead, and fits only the missing one
    table = fit_catalogue(villar_posterior, night.data, out, starts=starts, fit=failing_once,
                          client="inline", progress=False, marker_dir=str(calls))
    # chunk 1: its simulated crash and retry in the first run, then once more; 0 and 2 once
    assert sorted(p.name for p in calls.iterdir()) == ["call-0-0", "call-2-0", "call-2-1",
                                                        "call-2-2", "call-4-0"]
    assert list(table.index) == list(range(6))
    fresh = fit_catalogue(villar_posterior, night.data, tmp_path / "fresh", starts=starts,
                          client="inline", progress=False)
    assert json.loads((tmp_path / "fresh" / "manifest.json").read_text())["n_chunks"] == 1
    np.testing.assert_allclose(fresh["Villar.t0"], table["Villar.t0"], rtol=1e-9)


@pytest.mark.slow  # worker processes import torch: 1-2 min on a loaded 2-core machine
def test_a_worker_killed_mid_chunk_loses_only_that_chunk(tmp_path):
    # real worker processes: the first attempt at chunk 1 kills its process; the scheduler
    # reruns the chunk on a fresh worker and every object is fitted exactly once in the table
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))
    night, starts = small_catalogue(6)
    calls = tmp_path / "calls"
    calls.mkdir()
    table = fit_catalogue(villar_posterior, night.data, tmp_path / "out", chunk_size=2,
                          starts=starts, fit=failing_once, n_workers=1, processes=True,
                          progress=False, marker_dir=str(calls), kill=True)
    assert list(table.index) == list(range(6)) and table["converged"].all()
    assert "call-2-1" in {p.name for p in calls.iterdir()}  # chunk 1 ran again after the kill


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_batched_fit_on_cuda_equals_cpu():
    night = simulate_survey_night(20, seed=7)
    x0 = torch.as_tensor(near_truth(night))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = fit_map_many(ManyObjects(villar_posterior, night.data), x0)
        gpu = fit_map_many(ManyObjects(villar_posterior, night.data, device="cuda"), x0.cuda())
    assert gpu.x.device.type == "cuda"
    both = cpu.converged & gpu.converged.cpu()
    assert both.float().mean() > 0.9
    torch.testing.assert_close(gpu.x.cpu()[both], cpu.x[both], rtol=1e-6, atol=1e-8)


def test_several_starts_per_object_keep_the_best(night):
    sub = night.subset(slice(0, 5))
    many = ManyObjects(villar_posterior, sub.data)
    good = torch.as_tensor(near_truth(sub))
    bad = good.clone()
    bad[:, 5] = 1e-3  # a plateau of 0 days: a worse local optimum or a slow start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = fit_map_many(many, good)
        both = fit_map_many(many, torch.stack([bad, good]))
    # never worse than the good start alone; where no better mode was found, the same point
    assert (both.log_density >= one.log_density - 1e-9).all()
    same = one.converged & ((both.log_density - one.log_density).abs() < 1e-8)
    assert same.sum() >= 3
    torch.testing.assert_close(both.x[same], one.x[same], rtol=1e-6, atol=1e-8)


def test_a_likelihood_that_ignores_the_swapped_data_is_refused():
    # PhotometryLikelihood derives its arrays at construction: batched, every object would be
    # fitted to object 0's fluxes; ManyObjects must say so instead
    from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior

    def factory(time, flux, flux_err):
        lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        lc.to_dynamic()
        return Posterior(PhotometryLikelihood(lc, time, flux, flux_err))

    t = torch.linspace(-5, 5, 11, dtype=torch.float64).expand(2, 11)
    flux = torch.stack([torch.ones(11), 5 * torch.ones(11)]).double()
    with pytest.raises(TypeError, match="PaddedPhotometry"):
        ManyObjects(factory, {"time": t, "flux": flux, "flux_err": torch.ones(2, 11)})


def test_object_rows_as_lists_negative_indices_or_masks_select_the_same_data():
    night = simulate_survey_night(5, seed=3)
    many = ManyObjects(villar_posterior, night.data)
    expected = many.rows_data(torch.tensor([0, 4]))
    for rows in ([0, 4], [0, -1], torch.tensor([True, False, False, False, True])):
        got = many.rows_data(rows)
        assert all(torch.equal(got[key], expected[key]) for key in expected), rows
    with pytest.raises(IndexError, match="out of range for 5 objects"):
        many.rows_data([5])
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        many.rows_data([0.0, 1.0])
