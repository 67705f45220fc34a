"""A nested tree of dicts, lists, numeric arrays and JSON scalars stored in an HDF5 group
(the ``info`` of :class:`~skyfit.inference.Samples`): arrays as datasets, scalars as JSON
attributes, key order kept; anything else is stored as its ``repr`` so a file never fails to
write."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["write_tree", "read_tree"]


def _to_array(value):
    if hasattr(value, "detach"):  # torch tensor
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and not any(
            isinstance(v, (dict, list, tuple, str, bytes)) for v in value):
        try:
            a = np.asarray(value)
        except (ValueError, TypeError):
            return None
        return a if a.dtype.kind in "biufc" else None
    return None


def _key(k) -> str:
    return str(k).replace("/", "\u2215")


def write_tree(group, tree) -> None:
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    if not isinstance(tree, dict):
        group.attrs["__kind__"] = "list"
        group.attrs["__len__"] = len(tree)
    else:
        group.attrs["__keys__"] = json.dumps([str(k) for k in tree])
    for k, value in items:
        key = _key(k)
        if isinstance(value, dict) or (isinstance(value, (list, tuple)) and _to_array(value) is None
                                       and not _jsonable(value)):
            write_tree(group.create_group(key), value)
            continue
        array = _to_array(value)
        if array is not None and array.dtype.kind in "biufc":
            group.create_dataset(key, data=array)
        elif isinstance(value, np.generic):
            group.attrs[key] = json.dumps(value.item())
        elif _jsonable(value):
            group.attrs[key] = json.dumps(value)
        else:
            group.attrs[key] = json.dumps({"__repr__": repr(value)})


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def read_tree(group):
    out = {}
    for key, value in group.attrs.items():
        if key.startswith("__") and key.endswith("__"):
            continue
        out[key] = json.loads(value)
    for key, item in group.items():
        out[key] = read_tree(item) if hasattr(item, "keys") else item[()]
    if group.attrs.get("__kind__") == "list":
        return [out[str(i)] for i in range(int(group.attrs["__len__"]))]
    order = json.loads(group.attrs["__keys__"]) if "__keys__" in group.attrs else list(out)
    order = [_key(k) for k in order]
    ordered = {k: out[k] for k in order if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    # restore keys that held "/"
    return {k.replace("\u2215", "/"): v for k, v in ordered.items()}
