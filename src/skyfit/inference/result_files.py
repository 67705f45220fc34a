"""Results as files: one safetensors file, fields as JSON metadata plus tensors, no pickle.

Every file carries a SHA-256 of its content (a damaged file is a CorruptFileError); a
result loaded with a density of other parameter names is a DataMismatchError. Used by
``save``/``load`` of :class:`MAPResult`, :class:`GaussianApproximation`,
:class:`LaplaceResult` and :class:`VIResult`. Tensors and arrays are stored as tensors (arrays
come back as arrays); numbers, strings, lists and dicts as JSON. The fitted density and (VI) the
torch module ``q`` are not data: they are left out and passed to ``load`` when needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import CorruptFileError, DataMismatchError, ModelFileError

__all__ = ["save_result", "load_result"]

FORMAT = "skyfit-result"
NOT_DATA = ("density", "q")
CHECKSUM_KEY = "sha256"


def _digest(spec_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON spec and every tensor (name, dtype, shape, bytes), in name order:
    safetensors itself checks only the header, so a flipped byte in a tensor would otherwise
    load as a wrong number."""
    digest = hashlib.sha256(spec_json.encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        digest.update(b"\0tensor\0" + key.encode() + str(t.dtype).encode()
                      + repr(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _encode(value, tensors: dict, where: str):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _encode(value.item(), tensors, where)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        key = f"t{len(tensors)}"
        is_array = isinstance(value, np.ndarray)
        tensor = torch.from_numpy(np.ascontiguousarray(value)) if is_array else value.detach()
        tensors[key] = tensor.to("cpu").contiguous().clone()
        return {"ndarray" if is_array else "tensor": key}
    if isinstance(value, (list, tuple)):
        return [_encode(v, tensors, where) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, tensors, f"{where}[{k!r}]") for k, v in value.items()}}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be written to a result file")


def _decode(value, tensors: dict):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, content), = value.items()
    if kind == "float":
        return float(content)
    if kind == "dict":
        return {k: _decode(v, tensors) for k, v in content.items()}
    if content not in tensors:
        raise ModelFileError(f"the file refers to tensor {content!r}, which it does not hold")
    return tensors[content].numpy() if kind == "ndarray" else tensors[content]


def save_result(result, path: str | Path) -> None:
    """Write the data fields of the dataclass ``result`` to the safetensors file ``path``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    fields = {f.name: _encode(getattr(result, f.name), tensors, f.name)
              for f in dataclasses.fields(result) if f.name not in NOT_DATA}
    text = json.dumps({"format": FORMAT, "type": type(result).__name__, "fields": fields})
    save_file(tensors, str(path),
              metadata={"skyfit": text, CHECKSUM_KEY: _digest(text, tensors)})


def load_result(cls: type, path: str | Path, **extra):
    """The ``cls`` that :func:`save_result` wrote to ``path``; ``extra`` sets the fields that
    are not data (``density=...``)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        text = metadata.get("skyfit", "null")
        spec = json.loads(text)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable result file ({error})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a skyfit result file")
    _verify(path, metadata.get(CHECKSUM_KEY), _digest(text, tensors))
    if spec["type"] != cls.__name__:
        raise ModelFileError(f"{path} holds a {spec['type']}, not a {cls.__name__}")
    fields = {k: _decode(v, tensors) for k, v in spec["fields"].items()}
    density = extra.get("density")
    if density is not None and list(density.names) != list(fields.get("names", [])):
        # a result applied to another model would write its numbers into the wrong Params
        raise DataMismatchError(f"{path} was fitted with parameters {fields.get('names')}, "
                                f"but the density given has {list(density.names)}")
    return cls(**fields, **extra)


def _verify(path, stored: str | None, actual: str) -> None:
    if stored is None:
        raise CorruptFileError(f"{path} has no checksum, so it cannot be trusted as a skyfit "
                               f"result file (written by another program, or an older skyfit)")
    if stored != actual:
        raise CorruptFileError(f"{path}: checksum mismatch (content sha256 {actual[:16]}..., "
                               f"stored {stored[:16]}...): the file was changed or damaged "
                               f"after it was written")
