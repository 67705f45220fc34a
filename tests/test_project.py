"""The project's own promises: one version everywhere, a plain CLI, links that work off GitHub,
and documentation pages whose code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import skyfit
from skyfit.cli import main

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/skyfit-dev/skyfit"


def test_version_is_defined_once_and_cited_as_it_is():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", skyfit.__version__)
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(skyfit.__version__)}$", citation, re.M)
    assert f"## [{skyfit.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert project["urls"]["Source"] == REPO


def test_cli_prints_version_and_plain_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"skyfit {skyfit.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "demo" in text and "`" not in text and ":func:" not in text


def test_readme_links_work_off_github():
    # the README is also the PyPI page and the docs' index: relative links break there, so
    # every link is absolute; the project's own files are named as paths (`tutorials/...`),
    # not linked to a web home that may not exist yet, and each named file exists
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        assert link.startswith(("https://", "http://")), f"relative link in README: {link}"
        assert not link.startswith(REPO), f"README depends on the project's web home: {link}"
    named = re.findall(r"`((?:tutorials|benchmarks|docs)/[^`\s]+|[A-Z]+\.(?:md|cff))`", text)
    assert len(named) >= 8
    for path in named:
        assert (ROOT / path).exists(), f"README names a missing file: {path}"


HOW_TO = sorted((ROOT / "docs" / "how-to").glob("*.md"))


@pytest.mark.slow
@pytest.mark.parametrize("page", HOW_TO, ids=[p.stem for p in HOW_TO])
def test_how_to_page_code_runs(page, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks, f"{page.name} has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)


def test_module_entry_point_prints_version():
    out = subprocess.run([sys.executable, "-m", "skyfit", "--version"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == f"skyfit {skyfit.__version__}"
