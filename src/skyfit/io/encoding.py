"""Values to JSON and back: plain values inline, tensors by reference to a tensor table.

The JSON form of a value is a plain JSON value (None, bool, int, float, str, list of values) or
a one-key object naming its kind: ``{"tensor": "t3"}``, ``{"tuple": [...]}``, ``{"dict": {...}}``,
``{"dtype": "float64"}``, ``{"module": "scene.sn"}``, ``{"param": "scene.sn.x0"}``,
``{"function": {"class": ..., "spec": {...}}}``, ``{"pretrained": "galaxy32"}``.
"""

from __future__ import annotations

from collections.abc import Callable

import caskade as ck
import numpy as np
import torch

from ..errors import ModelFileError
from .registry import _FUNCTIONS, class_key, lookup

__all__ = ["Encoder", "Decoder"]


class Encoder:
    """Encodes values, collecting tensors in ``tensors``; ``node_id(node)`` names graph nodes."""

    def __init__(self, node_id: Callable[[ck.Node], str]):
        self.tensors: dict[str, torch.Tensor] = {}
        self.node_id = node_id

    def tensor(self, value: torch.Tensor) -> dict:
        key = f"t{len(self.tensors)}"
        # safetensors stores contiguous CPU tensors that share no memory
        self.tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": key}

    def __call__(self, value, where: str = "value"):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, np.ndarray):
            return {"ndarray": self.tensor(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            return value.item()
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if isinstance(value, (ck.Module, ck.Param)):
            return {"param" if isinstance(value, ck.Param) else "module": self.node_id(value)}
        if isinstance(value, list):
            return [self(v, where) for v in value]
        if isinstance(value, tuple):
            return {"tuple": [self(v, where) for v in value]}
        if isinstance(value, (set, frozenset)):
            return {"set": [self(v, where) for v in sorted(value, key=repr)]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": {k: self(v, where) for k, v in value.items()}}
        if class_key(type(value)) in _FUNCTIONS:
            return {"function": {"class": class_key(type(value)),
                                 "spec": self(value.spec(), where)}}
        pretrained = getattr(value, "info", {}).get("pretrained") if hasattr(value, "info") \
            else None
        if isinstance(pretrained, str):
            return {"pretrained": pretrained}
        raise ModelFileError(
            f"{where}: a {type(value).__module__}.{type(value).__qualname__} has no file form "
            f"(plain values, tensors, arrays, registered modules and functions, and models from "
            f"load_pretrained do)")


class Decoder:
    """Decodes what :class:`Encoder` made; ``node(kind, id)`` returns the rebuilt graph node."""

    def __init__(self, tensors: dict[str, torch.Tensor], node: Callable[[str, str], ck.Node],
                 allow=()):
        self.tensors = tensors
        self.node = node
        self.allow = tuple(allow)

    def tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise ModelFileError(f"the file refers to tensor {key!r}, which it does not hold")
        return self.tensors[key]

    def __call__(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if not (isinstance(value, dict) and len(value) == 1):
            raise ModelFileError(f"malformed value in the file: {str(value)[:80]}")
        (kind, content), = value.items()
        if kind == "tensor":
            return self.tensor(content)
        if kind == "ndarray":
            return self(content).numpy()
        if kind == "dtype" and isinstance(getattr(torch, str(content), None), torch.dtype):
            return getattr(torch, content)
        if kind == "device":
            return torch.device(content)
        if kind in ("module", "param"):
            return self.node(kind, content)
        if kind == "tuple":
            return tuple(self(v) for v in content)
        if kind == "set":
            return frozenset(self(v) for v in content)
        if kind == "dict":
            return {k: self(v) for k, v in content.items()}
        if kind == "function":
            cls = lookup(content["class"], "function", self.allow)
            return cls(**self(content["spec"]))
        if kind == "pretrained":
            from ..generative import load_pretrained

            return load_pretrained(content)
        raise ModelFileError(f"unknown value kind {kind!r} in the file")
