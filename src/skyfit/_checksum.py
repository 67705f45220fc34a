"""SHA-256 of a safetensors file's content (JSON spec + tensors), checked before it is believed.

safetensors checks its header only: a flipped byte in a tensor loads as a wrong number. skyfit's
safetensors files (fit results, models) store this digest in their metadata under ``sha256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from .errors import CorruptFileError

__all__ = ["CHECKSUM_KEY", "safetensors_digest", "verify_digest"]

CHECKSUM_KEY = "sha256"


def safetensors_digest(spec_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON spec and every tensor (name, dtype, shape, bytes), in name order.

    Example:
        >>> a = safetensors_digest("{}", {"t0": torch.zeros(2)})
        >>> a == safetensors_digest("{}", {"t0": torch.tensor([0.0, 1e-30])})
        False
    """
    digest = hashlib.sha256(spec_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        digest.update(b"\0tensor\0" + key.encode() + str(t.dtype).encode()
                      + repr(tuple(t.shape)).encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_digest(path, stored: str | None, actual: str | Callable[[], str], what: str) -> None:
    """Raise a :class:`~skyfit.errors.CorruptFileError` naming ``path`` unless ``stored`` (the
    digest read from the file, None if absent) equals ``actual`` (or what ``actual()``
    computes, called only when a digest is stored). Every skyfit file with a checksum (results,
    models, chains, checkpoints) is checked here, so all say the same."""
    if stored is None:
        raise CorruptFileError(f"{path} has no checksum, so it cannot be trusted as {what} "
                               f"(written by another program, or an older skyfit)")
    actual = actual() if callable(actual) else actual
    if stored != actual:
        raise CorruptFileError(f"{path}: checksum mismatch (content sha256 {actual[:16]}..., "
                               f"stored {stored[:16]}...): the file was changed or damaged "
                               f"after it was written")
