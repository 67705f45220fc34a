"""Save and load a whole model graph: a JSON spec plus safetensors, no pickle.

The file is one safetensors file. Its metadata entry ``"skyfit"`` holds the JSON spec; its
tensors are the values the spec refers to (``{"tensor": "t3"}``). The spec lists every node of
the graph by its path (:func:`skyfit._graph.node_paths`):

- a module: its registered class, the arguments its constructor was called with (or ``owned``:
  built by its parent's constructor) and its children, ``{key: path}``;
- a Param: static, dynamic or pointer, its value, units and range; a pointer names the Param
  it follows (``{"param": path}``) or its registered function and the function's links.

Loading calls the registered constructors with the decoded arguments, links every child the
spec names where the constructors did not (shared Params, Params added after construction),
then sets each Param's state and value.
"""

from __future__ import annotations

import json
from pathlib import Path

import caskade as ck
import torch

from .._checksum import CHECKSUM_KEY, safetensors_digest, verify_digest
from .._graph import node_paths
from ..errors import ModelFileError
from ..params import Param
from .encoding import Decoder, Encoder
from .registry import INIT_RECORD, class_key, lookup

__all__ = ["save_model", "load_model", "dump_model", "build_model"]

FORMAT = "skyfit-model"
VERSION = 1


def _child_ids(node: ck.Node, encode: Encoder) -> dict:
    out = {}
    for key, child in node.children.items():
        if isinstance(child, (ck.NodeList, ck.NodeTuple)):
            out[key] = {"list": [encode.node_id(c) for c in child]}
        elif isinstance(child, ck.NodeDict):
            out[key] = {"dict": {k: encode.node_id(c) for k, c in dict.items(child)}}
        else:
            out[key] = encode.node_id(child)
    return out


def _param_entry(param: ck.Param, encode: Encoder, where: str) -> dict:
    entry = {"kind": "param", "name": param.name, "units": getattr(param, "units", None),
             "description": getattr(param, "description", None),
             "valid": encode(param.valid, where), "cyclic": param.cyclic,
             "children": _child_ids(param, encode)}
    if param.pointer:
        function = param._Param__value
        if "Param.to_pointer" in getattr(function, "__qualname__", ""):  # follows one Param
            (target,) = param.children.values()
            entry["state"], entry["pointer"] = "pointer", {"param": encode.node_id(target)}
        else:
            entry["state"], entry["pointer"] = "pointer", encode(function, f"{where} (pointer)")
    else:
        entry["state"] = "dynamic" if param.dynamic else "static"
        entry["value"] = encode(param.value, where)
    return entry


def _module_entry(module: ck.Node, encode: Encoder, where: str) -> dict:
    record = module.__dict__.get(INIT_RECORD)
    if record is None:
        raise ModelFileError(
            f"{where} is a {class_key(type(module))}, which is not registered (or was built "
            f"before it was): call skyfit.register_module on its class before building it")
    entry = {"kind": "module", "class": class_key(type(module)),
             "children": _child_ids(module, encode)}
    if record.get("owned"):
        entry["owned"] = True
    else:
        entry["args"] = encode(list(record["args"]), f"{where} (arguments)")
        entry["kwargs"] = encode(dict(record["kwargs"]), f"{where} (arguments)")
    return entry


def dump_model(model: ck.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(spec, tensors)``: the JSON-able description of ``model``'s graph and its tensors."""
    ids = {node: ".".join(path) for node, path in node_paths(model).items()}
    order = list(ids)

    def node_id(node: ck.Node) -> str:
        if node not in ids:  # an argument outside the graph: described all the same
            ids[node] = f"~{node.name}.{len(ids)}"
            order.append(node)
        return ids[node]

    encode = Encoder(node_id)
    nodes = {}
    while len(nodes) < len(order):
        node = order[len(nodes)]
        where = ids[node]
        if isinstance(node, ck.Param):
            nodes[where] = _param_entry(node, encode, where)
        else:
            nodes[where] = _module_entry(node, encode, where)
    spec = {"format": FORMAT, "version": VERSION, "root": ids[model], "nodes": nodes}
    return spec, encode.tensors


def save_model(model: ck.Module, path: str | Path) -> None:
    """Write ``model`` (any graph of registered modules: all of skyfit's, and the user's after
    :func:`~skyfit.register_module`) to the safetensors file ``path``.

    Links (light-curve links, shared and pointer Params, the functional Params of skyfit's
    constructors), values and static/dynamic states are kept; see :func:`load_model`.

    Example:
        >>> import tempfile, torch, skyfit
        >>> sn = skyfit.PointSource("sn", x0=0.1)
        >>> _ = skyfit.link_flux_to_light_curve(sn, skyfit.GaussianLightCurve(peak_flux=2.0),
        ...                                     torch.tensor([0.0, 1.0]))
        >>> path = tempfile.mkdtemp() + "/sn.safetensors"
        >>> skyfit.save_model(sn, path)
        >>> skyfit.load_model(path).flux.value.tolist() == sn.flux.value.tolist()
        True
    """
    from safetensors.torch import save_file

    spec, tensors = dump_model(model)
    text = json.dumps(spec)
    save_file(tensors, str(path),
              metadata={"skyfit": text, CHECKSUM_KEY: safetensors_digest(text, tensors)})


class _Builder:
    """Rebuilds the nodes of a spec, each once, by id."""

    def __init__(self, spec: dict, tensors: dict[str, torch.Tensor], allow=()):
        self.nodes: dict = spec["nodes"]
        self.objects: dict[str, ck.Node] = {}
        self.allow = tuple(allow)
        self.decode = Decoder(tensors, self.node, allow)

    def entry(self, kind: str, node_id: str) -> dict:
        entry = self.nodes.get(node_id)
        if not isinstance(entry, dict) or entry.get("kind") != kind:
            raise ModelFileError(f"the file refers to {kind} {node_id!r}, which it does not hold")
        return entry

    def node(self, kind: str, node_id: str) -> ck.Node:
        if node_id in self.objects:
            return self.objects[node_id]
        entry = self.entry(kind, node_id)
        if kind == "module" and not entry.get("owned"):
            cls = lookup(entry["class"], "module", self.allow)
            args, kwargs = self.decode(entry["args"]), self.decode(entry["kwargs"])
            obj = self.objects.setdefault(node_id, cls(*args, **kwargs))
        else:  # built by a parent's constructor, or (a Param) made here
            obj = self._from_parent(node_id)
            if obj is None and kind == "param":
                valid = self.decode(entry["valid"])
                obj = Param(entry["name"], valid=valid, cyclic=entry["cyclic"],
                            units=entry["units"], description=entry["description"])
            elif obj is None:
                raise ModelFileError(f"module {node_id!r} is built by no constructor in the file")
            self.objects[node_id] = obj
        return obj

    def _from_parent(self, node_id: str) -> ck.Node | None:
        """The node its parent's constructor linked under the key the spec names, if any."""
        for parent_id, entry in self.nodes.items():
            if entry["kind"] != "module" or node_id == parent_id:
                continue
            for key, child in entry["children"].items():
                found = _element(child, node_id)
                if found is not None:
                    parent = self.node("module", parent_id)
                    current = parent.children.get(key)
                    current = current if found == () else _index(current, found[0])
                    return current if isinstance(current, (ck.Param, ck.Module)) else None
        return None

    def link_child_nodes(self, node_id: str) -> None:
        module = self.node("module", node_id)
        for key, child in self.entry("module", node_id)["children"].items():
            if isinstance(child, dict):  # containers are made by constructors
                if not isinstance(module.children.get(key), (ck.NodeList, ck.NodeTuple,
                                                             ck.NodeDict)):
                    raise ModelFileError(f"{node_id}.{key} is not a container after rebuilding")
                continue
            kind = self.nodes.get(child, {}).get("kind", "module")
            target = self.node(kind, child)
            if module.children.get(key) is not target:
                if key in module.children:
                    module.unlink(key)
                module.link(key, target)
                module.__dict__.pop(key, None)  # attribute access goes through the children

    def set_param(self, node_id: str) -> None:
        param, entry = self.node("param", node_id), self.entry("param", node_id)
        if param.pointer and param.children:
            param.unlink()
        if entry["state"] == "pointer":
            pointer = entry["pointer"]
            if "param" in pointer:
                param.to_pointer(self.node("param", pointer["param"]))
                return
            param.to_pointer(self.decode(pointer))
            for key, child in entry["children"].items():
                param.link(key, self.node(self.nodes[child]["kind"], child))
        elif entry["state"] == "dynamic":
            param.to_dynamic(self.decode(entry["value"]))
        else:
            param.to_static(self.decode(entry["value"]))


def _element(child, node_id: str):
    """``()`` if ``child`` (a spec entry) is ``node_id``, ``(index,)`` if a container holds it."""
    if child == node_id:
        return ()
    if isinstance(child, dict):
        items = enumerate(child["list"]) if "list" in child else child["dict"].items()
        for index, element in items:
            if element == node_id:
                return (index,)
    return None


def _index(container, index):
    return dict.__getitem__(container, index) if isinstance(container, dict) else \
        list.__getitem__(container, index) if isinstance(container, list) else container[index]


def build_model(spec: dict, tensors: dict[str, torch.Tensor], allow=()) -> ck.Module:
    """The model a ``(spec, tensors)`` pair from :func:`dump_model` describes."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ModelFileError("not a skyfit model spec (no 'format': 'skyfit-model')")
    if spec.get("version", 0) > VERSION:
        raise ModelFileError(f"model file version {spec['version']} is newer than this skyfit "
                             f"reads ({VERSION}): update skyfit")
    builder = _Builder(spec, tensors, allow)
    for node_id, entry in builder.nodes.items():
        if entry["kind"] == "module" and not entry.get("owned"):
            builder.node("module", node_id)
    for node_id, entry in builder.nodes.items():
        if entry["kind"] == "module":
            builder.link_child_nodes(node_id)
    for node_id, entry in builder.nodes.items():
        if entry["kind"] == "param":
            builder.set_param(node_id)
    return builder.node("module", spec["root"])


def load_model(path: str | Path, allow=()) -> ck.Module:
    """The model :func:`save_model` wrote to ``path``.

    Safe for files from others: no pickle; the only classes instantiated are registered ones
    (skyfit's, and those passed to :func:`~skyfit.register_module` in this process), plus the
    import paths listed in ``allow`` (``"mypackage.lenses.MyLens"``), which are imported and
    registered.

    Arguments:
        path: a file from :func:`save_model`.
        allow: import paths of user module or pointer-function classes the file may name.

    Raises:
        ModelFileError: the file is not a skyfit model, names an unregistered class, or is
            inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable safetensors file ({error})") from None
    if "skyfit" not in metadata:
        raise ModelFileError(f"{path}: a safetensors file without a skyfit model spec")
    verify_digest(path, metadata.get(CHECKSUM_KEY),
                  safetensors_digest(metadata["skyfit"], tensors), "a skyfit model file")
    try:
        spec = json.loads(metadata["skyfit"])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: the model spec is not valid JSON ({error})") from None
    return build_model(spec, tensors, allow)
