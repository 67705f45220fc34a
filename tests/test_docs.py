"""The documentation runs: every docstring example in the package and the README's example."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import warnings
from pathlib import Path

import pytest
import torch

import skyfit

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(skyfit.__path__, "skyfit."):
        if info.name.endswith("__main__"):  # importing it would run the command line
            continue
        names.append(info.name)
    return sorted(names)


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            # objects re-exported from another module are found again: keep their home only
            if test.examples and test.name.startswith(name + ".") and _home(test) == name:
                yield pytest.param(test, id=test.name)


def _home(test: doctest.DocTest) -> str:
    return Path(test.filename).resolve().relative_to(ROOT / "src").with_suffix("").as_posix() \
        .replace("/", ".").removesuffix(".__init__")


EXAMPLES = list(_examples())


def test_examples_found():
    # a finder that silently finds nothing would make the test below pass vacuously
    assert len(EXAMPLES) >= 40


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example(test: doctest.DocTest):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    default = torch.get_default_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a deliberately short emcee run in an example
        result = runner.run(test, out=failures.append)
    torch.set_default_dtype(default)
    assert result.failed == 0, "".join(failures)


def test_readme_example_recovers_truth():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    fit, posterior = namespace["fit"], namespace["posterior"]
    lap = skyfit.laplace(posterior, fit.x)
    truth = {"host.x0": 0.2, "host.y0": 0.18, "host.q": 0.6, "host.phi": 0.5, "host.n": 1.5,
             "host.Re": 0.3, "host.flux": 400.0, "sn.x0": -0.35, "sn.y0": -0.2,
             "lightcurve.t0": -3.0, "lightcurve.sigma": 2.0, "lightcurve.peak_flux": 120.0}
    assert set(posterior.names) == set(truth)
    for i, name in enumerate(posterior.names):
        pull = (fit.x[i].item() - truth[name]) / lap.std[i].item()
        assert abs(pull) < 4, f"{name}: {fit.x[i].item():g} is {pull:.1f} sigma from the truth"
