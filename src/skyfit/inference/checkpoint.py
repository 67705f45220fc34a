"""Atomic, checksummed checkpoints of a sampler's state: plain tensors and numbers.

File layout: a marker line ``skyfit-checkpoint``, one JSON header line (format version, payload
length, SHA-256 of fingerprint + payload, and an optional data fingerprint), then the payload, a
``torch.save`` of the state. Reading checks every piece, so an empty, truncated, damaged or
foreign file raises :class:`~skyfit.errors.CorruptFileError` naming the file and the mismatch,
and a fingerprint that differs from the caller's raises
:class:`~skyfit.errors.DataMismatchError` (a run is not resumed on other data).

A checkpoint is written to a temporary file beside the target, flushed to disk and renamed over
it (``os.replace`` is atomic), so a run killed while writing leaves the previous checkpoint
intact. Only tensors, numbers, strings, bools, ``None`` and lists/dicts of them are stored: the
payload loads with ``torch.load(weights_only=True)`` and never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from .._checksum import verify_digest
from ..errors import CorruptFileError, DataMismatchError
from .files import describe_start, read_head

__all__ = ["save_checkpoint", "load_checkpoint", "data_fingerprint"]

MAGIC = b"skyfit-checkpoint\n"
VERSION = 2
_PLAIN = (int, float, str, bool, type(None))


def _plain(obj, where: str = "state"):
    """A copy of ``obj`` with tensors detached, contiguous and on the CPU; rejects other types."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").contiguous().clone()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"checkpoint entry {where} has type {type(obj).__name__}; only tensors, numbers, "
        "strings, None and lists/dicts of them are stored"
    )


def data_fingerprint(names=None, **arrays) -> dict:
    """A JSON-ready fingerprint of a problem: parameter names and, per data array, its shape,
    dtype and the SHA-256 of its bytes. Store it with :func:`save_checkpoint` and compare it on
    :func:`load_checkpoint` to refuse resuming a run on other data.

    Arguments:
        names: parameter names (e.g. ``posterior.names``), or None.
        arrays: data arrays by name (tensors or NumPy arrays).

    Example:
        >>> import torch
        >>> a = data_fingerprint(["x"], data=torch.zeros(3))
        >>> a["arrays"]["data"]["shape"], a == data_fingerprint(["x"], data=torch.ones(3))
        ([3], False)
    """
    out: dict = {"names": None if names is None else [str(n) for n in names], "arrays": {}}
    for key, value in sorted(arrays.items()):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.ascontiguousarray(value)
        out["arrays"][key] = {"shape": list(value.shape), "dtype": value.dtype.str,
                              "sha256": hashlib.sha256(value.tobytes()).hexdigest()}
    return out


def _digest(fingerprint, payload: bytes) -> str:
    text = json.dumps(fingerprint, sort_keys=True).encode()
    return hashlib.sha256(text + b"\n" + payload).hexdigest()


def save_checkpoint(path, state: dict, fingerprint: dict | None = None) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename), with a checksum.

    Arguments:
        path: the checkpoint file.
        state: tensors, numbers, strings, bools, None and lists/dicts of them.
        fingerprint: optional JSON-ready dict describing the data and model (see
            :func:`data_fingerprint`), compared by ``load_checkpoint(expect_fingerprint=...)``.

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mktemp(suffix=".pt")
        >>> save_checkpoint(path, {"iteration": 3, "x": torch.ones(2)})
        >>> load_checkpoint(path)["iteration"]
        3
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(_plain(state), buffer)
    payload = buffer.getvalue()
    fingerprint = None if fingerprint is None else json.loads(json.dumps(fingerprint))
    header = {"version": VERSION, "payload_bytes": len(payload),
              "sha256": _digest(fingerprint, payload), "fingerprint": fingerprint}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_verified(path: Path) -> tuple[dict, bytes]:
    """The header and payload of a checkpoint file, after every check on them."""
    head = read_head(path)
    if not head.startswith(MAGIC):
        raise CorruptFileError(f"{path} is not a skyfit checkpoint: {describe_start(head)}")
    blob = path.read_bytes()[len(MAGIC):]
    line, newline, payload = blob.partition(b"\n")
    try:
        header = json.loads(line)
        expected, stored = int(header["payload_bytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptFileError(f"{path}: the checkpoint header is damaged ({error})") from error
    if not newline or len(payload) < expected:
        raise CorruptFileError(f"{path} is truncated: {len(payload)} of {expected} payload bytes")
    if len(payload) > expected:
        raise CorruptFileError(f"{path} has {len(payload) - expected} bytes more than its "
                               f"header says ({expected}): the file was changed")
    verify_digest(path, stored, _digest(header.get("fingerprint"), payload),
                  "a skyfit checkpoint")
    return header, payload


def check_fingerprint(path, stored, expected: dict) -> None:
    """Raise :class:`~skyfit.errors.DataMismatchError` naming ``path`` and every difference
    (names, each array's shape/dtype/hash, other keys) when ``stored`` is not ``expected``."""
    expected = json.loads(json.dumps(expected))
    if stored == expected:
        return
    if stored is None:
        raise DataMismatchError(f"{path} was written without a data fingerprint (by an older "
                                "skyfit), so it cannot be checked against the data at hand; "
                                "resume=False starts afresh")
    diffs = []
    if stored.get("names") != expected.get("names"):
        diffs.append(f"parameter names {stored.get('names')} vs now {expected.get('names')}")
    arrays_then, arrays_now = stored.get("arrays", {}), expected.get("arrays", {})
    for key in sorted(set(arrays_then) | set(arrays_now)):
        then, now = arrays_then.get(key), arrays_now.get(key)
        if then is None or now is None:
            diffs.append(f"array {key!r} {'missing in the file' if then is None else 'not given'}")
            continue
        for field in ("shape", "dtype", "sha256"):
            if then.get(field) != now.get(field):
                diffs.append(f"array {key!r} {field} {then.get(field)} vs now {now.get(field)}")
    for key in sorted((set(stored) | set(expected)) - {"names", "arrays"}):
        diffs.extend(_entry_differences(key, stored.get(key), expected.get(key)))
    raise DataMismatchError(f"{path} was written for other data or another model: "
                            + "; ".join(diffs or ["fingerprints differ"])
                            + "; resume with the same data, or resume=False to start afresh")


def _entry_differences(key: str, then, now) -> list[str]:
    """What differs in fingerprint entry ``key``: per item for dicts (a model's settings),
    saying which side lacks it (a file written before the entry existed)."""
    if then == now:
        return []
    if then is None:
        return [f"{key} missing in the file (written by an older skyfit)"]
    if now is None:
        return [f"{key} not given"]
    if isinstance(then, dict) and isinstance(now, dict):
        missing = "(missing)"
        return [f"{key} {item}: {then.get(item, missing)!r} vs now {now.get(item, missing)!r}"
                for item in sorted(set(then) | set(now)) if then.get(item) != now.get(item)]
    return [f"{key} {then!r} vs now {now!r}"]


def load_checkpoint(path, map_location=None, expect_fingerprint: dict | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``), checking
    its marker, length and checksum, and its fingerprint against ``expect_fingerprint``.

    Raises:
        CorruptFileError: the file is empty, not a checkpoint, truncated or changed.
        DataMismatchError: its fingerprint differs from ``expect_fingerprint``.

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mktemp(suffix=".pt")
        >>> save_checkpoint(path, {"x": torch.ones(2)}, fingerprint=data_fingerprint(["x"]))
        >>> load_checkpoint(path, expect_fingerprint=data_fingerprint(["x"]))["x"]
        tensor([1., 1.])
    """
    path = Path(path)
    header, payload = _read_verified(path)
    if expect_fingerprint is not None:
        check_fingerprint(path, header.get("fingerprint"), expect_fingerprint)
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
