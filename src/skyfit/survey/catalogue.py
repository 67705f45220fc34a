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
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..inference.many import fit_map_many, laplace_many
from .objects import ManyObjects

__all__ = ["fit_catalogue", "fit_chunk", "CatalogueError"]


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
        torch_threads: threads for torch in this call (a worker process: 1 per worker).
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


def _manifest(output: Path, data, chunk_size: int, n_chunks: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "manifest.json"
    info = {"fingerprint": _fingerprint(data, chunk_size), "chunk_size": chunk_size,
            "n_chunks": n_chunks}
    if path.exists():
        old = json.loads(path.read_text())
        if old != info:
            raise DataError(f"{output} holds a run of other data or chunking ({old}); use a new "
                            f"output folder or delete it to start again")
    else:
        path.write_text(json.dumps(info))


def _write(table, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp)
    os.replace(tmp, path)


def _chunk_path(output: Path, i: int) -> Path:
    return output / f"chunk-{i:05d}.parquet"


def fit_catalogue(factory: Callable, data: Mapping[str, np.ndarray], output, chunk_size: int = 500,
                  starts=None, fit: Callable = fit_chunk, client=None, n_workers: int = 2,
                  processes: bool = True, retries: int = 2, progress: bool = True, **fit_options):
    """Fit every object of a catalogue, ``chunk_size`` objects per batched fit, on Dask workers.

    Each chunk is one task ``fit(factory, chunk_data, starts=..., first_index=...)`` (default
    :func:`fit_chunk`: MAP + Laplace, one row per object). Finished chunks are written to
    ``output/chunk-<i>.parquet`` as they arrive; a rerun with the same data and ``chunk_size``
    fits only the chunks not on disk (a different catalogue in the same folder is refused). A
    worker that dies mid-chunk loses that chunk only: the scheduler runs it again elsewhere; a
    chunk that raises is retried ``retries`` times; chunks that still fail are listed in a
    :class:`CatalogueError` raised after the others are written.

    Chunk size is a trade: a batched fit runs until its slowest object stops and pays a fixed
    cost per iteration, so one chunk of 2k objects costs less CPU than two of k (see
    ``many_fits_dask`` in benchmarks/RESULTS.md), and each worker's first chunk pays torch's
    first calls;
    smaller chunks lose less to a killed worker and balance better. Aim at several chunks per
    worker of at least ~500 objects.

    Arguments:
        factory: module-level ``factory(**arrays_of_one_object) -> Posterior``.
        data: ``{key: array (N, ...)}`` (ragged light curves: :func:`stack_ragged`).
        output: folder of the per-chunk Parquet files.
        starts: None, an ``(N, dim)`` array, or a module-level ``starts(chunk_data)`` function.
        client: a ``dask.distributed.Client``; None starts a ``LocalCluster`` of ``n_workers``
            single-threaded workers (``processes=False``: threads of this process) and closes
            it at the end; ``"inline"``: no Dask, chunks fitted here one after the other.

    Returns:
        the whole table (pandas DataFrame, one row per object, index ``object``).
    """
    import pandas as pd

    data = {key: np.asarray(value) for key, value in data.items()}
    n = len(next(iter(data.values())))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    output = Path(output)
    _manifest(output, data, chunk_size, len(bounds))
    todo = [i for i in range(len(bounds)) if not _chunk_path(output, i).exists()]

    def task_args(i):
        a, b = bounds[i]
        chunk_starts = starts[a:b] if starts is not None and not callable(starts) else starts
        return (factory, {k: v[a:b] for k, v in data.items()}), dict(
            starts=chunk_starts, first_index=a, **fit_options)

    failed = _run(todo, task_args, fit, output, client, n_workers, processes, retries, progress)
    if failed:
        raise CatalogueError(f"{len(failed)} of {len(bounds)} chunks failed ({failed[:3]}); the "
                             f"others are in {output}: rerun to fit only the missing ones")
    return pd.concat([pd.read_parquet(_chunk_path(output, i)) for i in range(len(bounds))])


def _local_cluster(n_workers: int, processes: bool):
    """A ``LocalCluster`` of single-threaded workers without Dask's ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets that variable (64 KiB) in every worker process to return freed memory to the OS.
    Setting it switches off glibc's dynamic mmap threshold, so every tensor above 128 KiB that
    a batched fit allocates and frees at each iteration is a fresh ``mmap``/``munmap`` with its
    page faults, and chunk fits ran over twice as slow as in a plain process (measured in
    the ``many_fits_dask`` row of benchmarks/RESULTS.md). A user's own ``Client`` keeps its
    configuration (drop the variable there with ``distributed.nanny.pre-spawn-environ``).
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                            dashboard_address=None)


def _run(todo, task_args, fit, output, client, n_workers, processes, retries, progress):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="chunks", unit="chunk", disable=not progress)
    failed = []
    if client == "inline":
        for i in todo:
            args, kwargs = task_args(i)
            for attempt in range(retries + 1):
                try:
                    _write(fit(*args, **kwargs), _chunk_path(output, i))
                    break
                except Exception as exc:  # noqa: BLE001 - any failure of one chunk is recorded
                    if attempt == retries:
                        failed.append((i, repr(exc)))
            bar.update()
        bar.close()
        return failed
    from distributed import Client, as_completed

    own = client is None
    if own:
        cluster = _local_cluster(n_workers, processes)
        client = Client(cluster)
    try:
        futures = {}
        for i in todo:
            args, kwargs = task_args(i)
            if own and processes:
                kwargs.setdefault("torch_threads", 1)
            futures[client.submit(fit, *args, **kwargs, retries=retries, pure=False,
                                  key=f"skyfit-chunk-{i}-{os.getpid()}")] = i
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
            client.close()
            cluster.close()
    return failed
