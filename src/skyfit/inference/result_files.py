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
import json
import math
from pathlib import Path

import numpy as np
import torch

from .._checksum import CHECKSUM_KEY, safetensors_digest, verify_digest
from ..errors import DataMismatchError, ModelFileError

__all__ = ["save_result", "load_result"]

FORMAT = "skyfit-result"
NOT_DATA = ("density", "q")


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
              metadata={"skyfit": text, CHECKSUM_KEY: safetensors_digest(text, tensors)})


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
    verify_digest(path, metadata.get(CHECKSUM_KEY), safetensors_digest(text, tensors),
                  "a skyfit result file")
    if spec["type"] != cls.__name__:
        raise ModelFileError(f"{path} holds a {spec['type']}, not a {cls.__name__}")
    fields = {k: _decode(v, tensors) for k, v in spec["fields"].items()}
    density = extra.get("density")
    if density is not None and list(density.names) != list(fields.get("names", [])):
        # a result applied to another model would write its numbers into the wrong Params
        raise DataMismatchError(f"{path} was fitted with parameters {fields.get('names')}, "
                                f"but the density given has {list(density.names)}")
    return cls(**fields, **extra)
