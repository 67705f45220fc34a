"""Atomic checkpoints of a sampler's state: plain tensors and numbers in one ``torch.save`` file.

A checkpoint is written to a temporary file beside the target, flushed to disk and renamed over
it (``os.replace`` is atomic), so a run killed while writing leaves the previous checkpoint
intact. Only tensors, numbers, strings, bools, ``None`` and lists/dicts of them are stored: the
file loads with ``torch.load(weights_only=True)`` and never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint"]

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


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mktemp(suffix=".pt")
        >>> save_checkpoint(path, {"iteration": 3, "x": torch.ones(2)})
        >>> load_checkpoint(path)["iteration"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(_plain(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
