"""A catalogue fitted in chunks, one batched fit per chunk, on Dask workers; resumable.

Data travel to workers as arrays and the model as a module-level factory function (pickled by
reference, as Dask pickles any function: define it in an importable module, not in a notebook
cell or as a closure, when the workers are separate processes). Each finished chunk's table is
written to ``<output>/chunk-<i>.parquet`` by the client as soon as it arrives (written to a
temporary name, then renamed, so a file present is complete); a rerun skips those chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, ShapeError
from ..inference.many import fit_map_many, laplace_many
from .objects import ManyObjects

__all__ = ["fit_catalogue", "fit_chunk", "default_chunk_size", "CatalogueError"]

# chunk_size=None (default_chunk_size): up to this many chunks per worker, of at least MIN_CHUNK
# and at most MAX_CHUNK objects; a catalogue too small for that is shared out to the workers in
# chunks of at least SMALL_CHUNK (small chunks cost more CPU per object, benchmarks/RESULTS.md
# many_fits_dask, but an idle worker costs more wall time)
CHUNKS_PER_WORKER = 2
MIN_CHUNK = 1000
SMALL_CHUNK = 256
MAX_CHUNK = 20_000


class CatalogueError(RuntimeError):
    """Some chunks of a catalogue failed after their retries; the others are on disk."""


def fit_chunk(factory: Callable, data: Mapping[str, np.ndarray], starts=None,
              laplace: bool = True, first_index: int = 0, torch_threads: int | None = None):
    """Fit one chunk: :func:`~skyfit.inference.fit_map_many` (+ :func:`laplace_many`) of
    ``ManyObjects(factory, data)``; returns the table (a pandas DataFrame, index ``object``
    numbered from ``first_index``).

    Arguments:
        starts: None (the template's values), an ``(n, dim)`` array, or a module-level function
            ``starts(data) -> (n, dim)`` computed on the chunk's data.
        torch_threads: torch's threads from this call on (1 in each of :func:`fit_catalogue`'s
            own workers; in a worker thread this sets the whole process's count, which
            ``fit_catalogue`` restores at the end).
    """
    import warnings

    if torch_threads:
        torch.set_num_threads(torch_threads)
    many = ManyObjects(factory, data)
    init = starts(data) if callable(starts) else starts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-object warnings are in the table's column
        result = fit_map_many(many, None if init is None else torch.as_tensor(init))
        if laplace:
            result = laplace_many(many, result)
    n = len(result)
    table = result.to_pandas(index=np.arange(first_index, first_index + n))
    table.index.name = "object"
    return table


def _fingerprint(data: Mapping[str, np.ndarray], chunk_size: int) -> str:
    digest = hashlib.sha256(str(chunk_size).encode())
    for key in sorted(data):
        arr = np.ascontiguousarray(data[key])
        digest.update(key.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _run_fingerprint(factory: Callable, data: Mapping[str, np.ndarray], starts, fit: Callable,
                     fit_options: dict) -> dict:
    """What else a chunk's rows depend on: the model (the fingerprint of the factory's posterior
    of the first object: names, bounds, settings, priors, static Params), the starts and the
    fit. A rerun in the same folder with an edited model would otherwise keep the old model's
    chunks beside the new one's. Edits inside a forward's code are not seen (only its output
    would show them). ``torch_threads`` changes no result and is left out."""
    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

    def name(function) -> str:
        return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"

    posterior = factory(**{key: value[0] for key, value in data.items()})
    model = posterior.fingerprint() if hasattr(posterior, "fingerprint") else type(posterior)
    if starts is None or callable(starts):
        start = "template" if starts is None else name(starts)
    else:
        start = hashlib.sha256(np.ascontiguousarray(starts, dtype=np.float64)).hexdigest()
    options = {k: v for k, v in fit_options.items() if k != "torch_threads"}
    return {"model": digest(model), "starts": start, "fit": f"{name(fit)} {digest(options)}"}


def _manifest(output: Path, data, chunk_size: int, n_chunks: int, run: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "manifest.json"
    info = {"fingerprint": _fingerprint(data, chunk_size), "chunk_size": chunk_size,
            "n_chunks": n_chunks, **run}
    old = _read_manifest(output)
    if old is None:  # written whole or not at all: a run killed here leaves no half manifest
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
        return
    # a manifest of an older skyfit has no model, starts or fit entries: not compared
    differ = [key for key in info if key in old and old[key] != info[key]]
    if differ:
        what = {"fingerprint": "data", "chunk_size": "chunking", "n_chunks": "chunking"}
        named = dict.fromkeys(what.get(key, key) for key in differ)  # data first, no repeats
        raise DataError(f"{output} holds a run of other {', '.join(named)} ({old}); use a new "
                        f"output folder or delete it to start again")


def _read_manifest(output: Path) -> dict | None:
    """The manifest of the run in ``output``, or None where there is none yet. A missing or
    unreadable one (a run killed while an older skyfit wrote it) is None if no chunk is on
    disk, else refused: those chunks cannot be matched to the data (a rerun would take them
    for its own)."""
    path = output / "manifest.json"
    try:
        if path.exists():
            return json.loads(path.read_text())
    except ValueError:
        pass
    if any(output.glob("chunk-*.parquet")):
        raise DataError(f"{path} is missing or damaged but {output} holds chunks of a run: use "
                        "a new output folder or delete this one to start again")
    return None


def _previous_chunk_size(output: Path) -> int | None:
    """The chunk size of the run already in ``output`` (a rerun with ``chunk_size=None`` resumes
    it whatever the number of workers now), or None."""
    info = _read_manifest(output)
    return None if info is None else int(info["chunk_size"])


def default_chunk_size(n_objects: int, n_workers: int) -> int:
    """Objects per chunk when :func:`fit_catalogue` is given ``chunk_size=None``: the catalogue
    in ``CHUNKS_PER_WORKER`` (2) chunks per worker where each then has at least ``MIN_CHUNK``
    (1,000) objects, else in one chunk per worker of at least ``SMALL_CHUNK`` (256) objects
    (fewer workers busy for a smaller catalogue, at least one chunk); more chunks only where
    one would pass ``MAX_CHUNK`` (20,000); the objects shared out evenly.

    A batched fit runs until its slowest object stops, so each chunk pays the per-call cost of
    its last, nearly empty iterations, and batches of a few hundred objects cost more per object
    than batches of thousands: few large chunks. Two per worker rather than one let the worker
    that finishes first take the last chunk and lose at most half a worker's share to a crash;
    the upper bound keeps a resume point every minute or so of one core's work.

    Example:
        >>> [default_chunk_size(n, 2) for n in (300, 1_500, 3_000, 10_000, 10**6)]
        [300, 750, 1500, 2500, 20000]
    """
    if n_objects < 1 or n_workers < 1:
        raise ValueError(f"need at least one object and one worker, got {n_objects}, {n_workers}")
    per_worker = n_objects // (n_workers * MIN_CHUNK)
    n_chunks = (n_workers * min(CHUNKS_PER_WORKER, per_worker) if per_worker
                else max(1, min(n_workers, n_objects // SMALL_CHUNK)))
    n_chunks = max(n_chunks, -(-n_objects // MAX_CHUNK))
    return -(-n_objects // n_chunks)


def _write(table, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp)
    os.replace(tmp, path)


def _chunk_path(output: Path, i: int) -> Path:
    return output / f"chunk-{i:05d}.parquet"


def _chunk_done(output: Path, i: int, n_rows: int) -> bool:
    """Whether chunk ``i`` is on disk, readable and whole (``n_rows`` rows). A file written and
    renamed is complete, but one damaged since (a crash before the file system wrote it out, a
    partial copy) would be skipped on every rerun and fail the final read: it is fitted again."""
    import pyarrow.parquet as pq

    path = _chunk_path(output, i)
    if not path.exists():
        return False
    try:
        return pq.read_metadata(path).num_rows == n_rows
    except Exception:  # noqa: BLE001 - any unreadable file is a chunk to fit again
        return False


def fit_catalogue(factory: Callable, data: Mapping[str, np.ndarray], output,
                  chunk_size: int | None = None, starts=None, fit: Callable = fit_chunk,
                  client=None, n_workers: int | None = None, processes: bool = False,
                  retries: int = 2, progress: bool = True, **fit_options):
    """Fit every object of a catalogue, ``chunk_size`` objects per batched fit, on Dask workers.

    Each chunk is one task ``fit(factory, chunk_data, starts=..., first_index=...)`` (default
    :func:`fit_chunk`: MAP + Laplace, one row per object). Finished chunks are written to
    ``output/chunk-<i>.parquet`` as they arrive; a rerun of the same run fits
    only the chunks not on disk (other data, model, starts or fit options are refused). A
    worker that dies mid-chunk loses that chunk only: the scheduler runs it again elsewhere; a
    chunk that raises is retried ``retries`` times; chunks that still fail are listed in a
    :class:`CatalogueError` raised after the others are written.

    The embedded cluster (``client=None``) is a ``LocalCluster`` of ``n_workers``
    single-threaded workers, threads of this process by default: they start in well under a
    second with skyfit and torch already imported, and torch's batched calls release the
    interpreter lock, so two worker threads use two cores (as ``fit_map_many`` splits its own
    objects, :func:`~skyfit.inference.many_newton.in_threads`); torch's thread count in this
    process is 1 while they run, then restored. Worker processes (``processes=True``) each
    import torch and pay its first calls (seconds, a large part of the fit of a 10,000-object
    catalogue on 2 cores: ``many_fits_dask`` in benchmarks/RESULTS.md), but survive one another's
    crash and do not share the interpreter lock: for many cores, or chunks whose model spends
    its time in Python.

    Arguments:
        factory: module-level ``factory(**arrays_of_one_object) -> Posterior``.
        data: ``{key: array (N, ...)}`` (ragged light curves: :func:`stack_ragged`).
        output: folder of the per-chunk Parquet files.
        chunk_size: objects per chunk. By default (None) the chunking of the run already in
            ``output``, else :func:`default_chunk_size` of the catalogue and the workers (2
            chunks per worker of at least 1,000 objects, more where a chunk would pass
            20,000, fewer and smaller for a small catalogue).
        starts: None, an ``(N, dim)`` array, or a module-level ``starts(chunk_data)`` function.
        client: a ``dask.distributed.Client`` (its workers' threads count as workers for the
            chunking); None starts the embedded cluster above and closes it at the end;
            ``"inline"``: no Dask, chunks fitted here one after the other.
        n_workers: workers of the embedded cluster, by default torch's thread count (the
            cores, unless ``torch.set_num_threads`` or ``OMP_NUM_THREADS`` lowered it: after
            ``torch.set_num_threads(1)`` the default is one worker).
        processes: the embedded cluster's workers are processes, not threads.

    Returns:
        the whole table (pandas DataFrame, one row per object, index ``object``).
    """
    import pandas as pd

    data = {key: np.asarray(value) for key, value in data.items()}
    n = _catalogue_size(data, starts)
    output = Path(output)
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be at least 1 (None: one per core), got {n_workers}")
    n_workers = n_workers or torch.get_num_threads()
    if chunk_size is None:
        chunk_size = _previous_chunk_size(output) or default_chunk_size(
            n, _worker_count(client, n_workers))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    _manifest(output, data, chunk_size, len(bounds),
              _run_fingerprint(factory, data, starts, fit, fit_options))
    todo = [i for i, (a, b) in enumerate(bounds) if not _chunk_done(output, i, b - a)]

    def task_args(i):
        a, b = bounds[i]
        chunk_starts = starts[a:b] if starts is not None and not callable(starts) else starts
        return (factory, {k: v[a:b] for k, v in data.items()}), dict(
            starts=chunk_starts, first_index=a, **fit_options)

    threads = torch.get_num_threads()
    try:  # a chunk fitted in this process (inline, worker threads) may set torch's threads
        if client == "inline":
            failed = _run_inline(todo, task_args, fit, output, retries, progress)
        else:
            failed = _run_dask(todo, task_args, fit, output, client, n_workers, processes,
                               retries, progress)
    finally:
        torch.set_num_threads(threads)
    if failed:
        raise CatalogueError(f"{len(failed)} of {len(bounds)} chunks failed ({failed[:3]}); the "
                             f"others are in {output}: rerun to fit only the missing ones")
    return pd.concat([pd.read_parquet(_chunk_path(output, i)) for i in range(len(bounds))])


def _catalogue_size(data: Mapping[str, np.ndarray], starts) -> int:
    """The number of objects, after the checks that would otherwise fail chunk by chunk, once
    the first chunks are written under a manifest that the corrected data no longer match."""
    counts = {key: value.shape[0] if value.ndim else None for key, value in data.items()}
    if not counts or len(set(counts.values())) != 1 or None in counts.values():
        raise ShapeError(f"data arrays must share a leading object axis: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise DataError("the catalogue has no objects")
    bad = [k for k, v in data.items() if v.dtype.kind in "fc" and not np.isfinite(v).all()]
    if bad:
        raise DataError(f"data {bad} have NaN or inf values: set the 'mask' False there and "
                        "replace them by finite values (masked rows are computed too)")
    if starts is not None and not callable(starts) and np.shape(starts)[:1] != (n,):
        raise ValueError(f"starts must have one row per object ({n}), got shape "
                         f"{np.shape(starts)}")
    return n


def _worker_count(client, n_workers: int) -> int:
    if client is None:
        return n_workers
    if client == "inline":
        return 1
    return max(1, sum(client.nthreads().values()))


def _warm_up() -> None:
    """Pay this process's one-off first-call costs: skyfit's survey path, and the import of
    ``torch._dynamo`` that the first ``torch.func`` gradient makes (seconds)."""
    import skyfit.survey  # noqa: F401 - the import is the point

    x = torch.zeros(2, 1, dtype=torch.float64)
    torch.func.vmap(torch.func.grad(lambda v: (v * v).sum()))(x)


def _local_cluster(n_workers: int, processes: bool):
    """A ``LocalCluster`` of single-threaded workers without Dask's ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets that variable (64 KiB) in every worker process to return freed memory to the OS.
    Setting it switches off glibc's dynamic mmap threshold, so every tensor above 128 KiB that
    a batched fit allocates and frees at each iteration is a fresh ``mmap``/``munmap`` with its
    page faults, and chunk fits ran over twice as slow as in a plain process (measured in
    the ``many_fits_dask`` row of benchmarks/RESULTS.md). A user's own ``Client`` keeps its
    configuration (drop the variable there with ``distributed.nanny.pre-spawn-environ``).
    Its workers do not run Dask's statistical profiler either (a stack sample of the working
    thread every 10 ms, under the interpreter lock, for a dashboard this cluster does not have).
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.worker.profile.enabled": False}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                            dashboard_address=None)


def _run_inline(todo, task_args, fit, output, retries, progress) -> list:
    from tqdm.auto import tqdm

    failed = []
    for i in tqdm(todo, desc="chunks", unit="chunk", disable=not progress):
        args, kwargs = task_args(i)
        for attempt in range(retries + 1):
            try:
                _write(fit(*args, **kwargs), _chunk_path(output, i))
                break
            except Exception as exc:  # noqa: BLE001 - any failure of one chunk is recorded
                if attempt == retries:
                    failed.append((i, repr(exc)))
    return failed


def _run_dask(todo, task_args, fit, output, client, n_workers, processes, retries,
              progress) -> list:
    import warnings

    from distributed import Client, as_completed
    from tqdm.auto import tqdm

    if not todo:  # every chunk on disk already: no cluster to start
        return []
    own = client is None
    cluster = _local_cluster(n_workers, processes) if own else None
    bar = tqdm(total=len(todo), desc="chunks", unit="chunk", disable=not progress)
    failed = []
    run = uuid.uuid4().hex[:12]  # task keys unique per call: a Client may serve several runs
    # worker threads of this process enter and leave warnings.catch_warnings out of order:
    # the filters are restored here, after all of them
    with warnings.catch_warnings():
        try:
            if own:
                client = Client(cluster)
                if processes:  # each worker pays its first calls now, not in its first chunk
                    client.run(_warm_up)
                else:
                    _warm_up()
            futures = {}
            for i in todo:
                args, kwargs = task_args(i)
                if own:
                    kwargs.setdefault("torch_threads", 1)
                futures[client.submit(fit, *args, **kwargs, retries=retries, pure=False,
                                      key=f"skyfit-chunk-{i}-{run}")] = i
            for future in as_completed(futures):
                i = futures[future]
                if future.status == "finished":
                    _write(future.result(), _chunk_path(output, i))
                else:
                    failed.append((i, repr(future.exception())))
                bar.update()
        finally:
            bar.close()
            if own:
                if client is not None:
                    client.close()
                cluster.close()
    return failed
