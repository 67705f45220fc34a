"""LogDensity is the whole interface the inference layer sees: nothing in inference/ probes a
density's or a result's attributes."""

import ast
import math
from pathlib import Path

import pytest
import torch

import skyfit
from skyfit.errors import ParameterRangeError
from skyfit.inference import FunctionDensity, LogDensity

INFERENCE = Path(skyfit.__file__).parent / "inference"
# getattr/hasattr on the loop's own NamedTuple states and the NUTS working set, a zuko flow
# class by name, and hdf5_tree.py's HDF5 tree reading (plain arrays and h5py groups)
ALLOWED = {("loop.py", "template"), ("nuts.py", "t"), ("variational_families.py", "zuko.flows"),
           ("hdf5_tree.py", "value"), ("hdf5_tree.py", "item"),
           # the file writer reads a result dataclass's own declared fields
           ("result_files.py", "result")}


def test_no_attribute_probing_in_the_inference_layer():
    found = []
    for path in INFERENCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("hasattr", "getattr")):
                target = ast.unparse(node.args[0])
                if (path.name, target) not in ALLOWED:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Constant) and node.value in (
                    "elbo_history", "check_valid", "initial"):
                found.append(f"{path.name}:{node.lineno} string {node.value!r}")
    assert not found, found


def test_the_interface_is_complete_with_defaults():
    d = FunctionDensity(lambda x: -(x**2).sum(-1), ["a", "b", "c"], lower=[0, -1, -math.inf],
                        upper=[1, 1, math.inf])
    assert d.periodic.tolist() == [False, False, False]
    with pytest.raises(NotImplementedError, match="init="):
        d.initial()
    with pytest.raises(TypeError, match="no model"):
        d.set(torch.zeros(3))
    logp, grad = d.value_and_grad(torch.ones(4, 3, dtype=torch.float64))
    assert logp.shape == (4,) and torch.equal(grad, torch.full((4, 3), -2.0, dtype=torch.float64))
    assert FunctionDensity(lambda x: x.sum(-1), ["a", "phi"], periodic=["phi"]).periodic.tolist() \
        == [False, True]
    assert set(LogDensity.__abstractmethods__) == {"log_prob"}


def test_one_support_check_names_every_offending_value_bound_and_point():
    d = FunctionDensity(lambda x: -(x**2).sum(-1), ["a", "b"], lower=[0, 0], upper=[1, 2])
    d.check_inside(torch.tensor([[0.5, 1.0], [1.0, 2.0]]))  # bounds are inside
    x = torch.tensor([[0.5, 1.0], [-1.0, 3.0], [0.5, 2.5]])
    with pytest.raises(ParameterRangeError) as err:
        d.check_inside(x)
    msg = str(err.value)
    assert "point 1 of 3: a=-1 not in [0, 1], b=3 not in [0, 2]" in msg
    assert "point 2 of 3: b=2.5 not in [0, 2]" in msg
