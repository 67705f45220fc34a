"""mkdocs hooks: pages generated at build time from what the repository already holds.

- ``api/<page>.md``: one ``::: module`` block per subpackage, members from its ``__all__``
  (mkdocstrings' ``filters: public``), so the reference follows the namespace without edits;
  after the build every name of every ``__all__`` must have an entry (else a warning, which
  fails ``mkdocs build --strict``).
- ``benchmarks.md`` from ``benchmarks/RESULTS.md`` (written by ``benchmarks/run.py``) and
  ``changelog.md`` from ``CHANGELOG.md``: never copied by hand, never stale.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
from griffe_skyfit import api_identifier  # noqa: E402

log = logging.getLogger("mkdocs.hooks.skyfit")

# page -> (title, introduction, modules documented on it)
API_PAGES = {
    "sources": ("Sources", "Surface-brightness models of light sources: flux / arcsec^2 as a "
                "function of sky position (arcsec).", ["skyfit.sources"]),
    "lightcurves": ("Light curves", "Flux as a function of time (days), and the link that makes "
                    "a source's flux follow a light curve.", ["skyfit.lightcurves"]),
    "lenses": ("Lenses", "Strong-lens mass models (deflection in arcsec), distances and the "
               "lens-equation solver.", ["skyfit.lenses"]),
    "instruments": ("Instruments", "Pixel grids, PSFs, convolution and noise models.",
                    ["skyfit.instruments"]),
    "scenes": ("Scenes", "Modules that put sources, lenses and an instrument together into "
               "images (flux per pixel).", ["skyfit.scenes"]),
    "posterior": ("Likelihoods, priors, posterior", "From a model to the log-density of one "
                  "flat parameter vector.", ["skyfit.likelihoods", "skyfit.priors",
                                              "skyfit.posterior", "skyfit.params",
                                              "skyfit.lens_start",
                                              "skyfit.lightcurve_anchored"]),
    "inference": ("Inference", "Optimisers, Laplace, samplers, variational fits, diagnostics, "
                  "results and checkpoints. This layer knows nothing about astronomy: it sees a "
                  "log-density with names, bounds and a batched `log_prob`.",
                  ["skyfit.inference"]),
    "generative": ("Generative", "Synthetic galaxies, VAEs and normalising flows used as "
                   "source priors.", ["skyfit.generative"]),
    "data": ("Data", "Observations as observers have them: photometry tables (flux or "
             "magnitudes, upper limits) and the shipped real light curves.", ["skyfit.data"]),
    "amortized": ("Amortised inference", "Neural posterior estimation trained on a Posterior's "
                  "own simulator, calibration (SBC, coverage) and importance-weighted refinement.",
                  ["skyfit.amortized"]),
    "spectra": ("Spectra", "A differentiable stellar-spectrum simulator (continuum, absorption "
                "lines, instrumental broadening).", ["skyfit.spectra"]),
    "plots": ("Plots", "Figures made from models and results (matplotlib).", ["skyfit.plots"]),
    "errors": ("Errors", "Exceptions and warnings raised by skyfit.", ["skyfit.errors"]),
}


def api_page(title: str, intro: str, modules: list[str]) -> str:
    """Markdown of one API page: the modules, plus any exported name griffe would not list
    (a function named like its own submodule)."""
    body = f"# {title}\n\n{intro}\n\n"
    for module_name in modules:
        body += f"::: {module_name}\n\n"
        module = importlib.import_module(module_name)
        for name in module.__all__:
            identifier = api_identifier(module_name, name)
            if identifier != f"{module_name}.{name}":
                body += f"::: {identifier}\n    options:\n      heading_level: 3\n\n"
    return body


def benchmarks_page(results: str) -> str:
    """RESULTS.md without its machine-readable row comments, with a note on where it comes from."""
    body = re.sub(r"^<!-- row .*?-->\n?", "", results, flags=re.M).rstrip() + "\n"
    head, _, rest = body.partition("\n")
    note = ("\n!!! note \"Generated page\"\n"
            "    Built from `benchmarks/RESULTS.md`, which `python benchmarks/run.py` rewrites "
            "after each run;\n    run it on your machine for your own numbers.\n")
    return head.replace("Benchmark results", "Benchmarks") + "\n" + note + rest


def on_files(files, config):
    for page, (title, intro, modules) in API_PAGES.items():
        files.append(File.generated(config, f"api/{page}.md",
                                    content=api_page(title, intro, modules)))
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    files.append(File.generated(config, "benchmarks.md", content=benchmarks_page(results)))
    changelog = (ROOT / "CHANGELOG.md").read_text()
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files


def on_post_build(config):
    """Every exported name has an entry (an HTML id) in the built API reference."""
    site = Path(config["site_dir"]) / "api"
    missing = []
    for page, (_, _, modules) in API_PAGES.items():
        html = (site / page / "index.html").read_text()
        for module_name in modules:
            for name in importlib.import_module(module_name).__all__:
                if f'id="{api_identifier(module_name, name)}"' not in html:
                    missing.append(f"{module_name}.{name}")
    if missing:
        log.warning("API reference has no entry for: %s", ", ".join(missing))
