"""Notebook displays: parameter tables of modules, posterior and result summaries, never dumps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skyfit
from skyfit.inference.vi import VIResult

f64 = dict(dtype=torch.float64)


def test_module_repr_is_a_parameter_table():
    sn = skyfit.PointSource("sn", x0=-0.35, y0=0.2)
    lc = skyfit.GaussianLightCurve("lc", t0=-3.0, sigma=2.0, peak_flux=120.0)
    skyfit.link_flux_to_light_curve(sn, lc, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], **f64))
    sn.x0.to_dynamic()
    text = repr(sn)
    lines = text.splitlines()
    assert lines[0] == "PointSource 'sn': 1 dynamic, 5 static, 1 pointer"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["sn.x0"] == ["-0.35", "arcsec", "dynamic"]
    assert rows["lc.t0"] == ["-3", "day", "static"]
    assert rows["sn.flux"] == ["=", "LightCurveFlux(...)", "flux", "pointer"]
    assert rows["flux.times"] == ["<5", "values>", "day", "static"]
    html = sn._repr_html_()
    assert html.count("<tr>") == 8 and "<td style='text-align:left'>sn.x0</td>" in html
    # one implementation for every skyfit module
    for module in (skyfit.PixelGrid((4, 4), 0.1), skyfit.SIE(), skyfit.GaussianPSF(),
                   skyfit.LensGeometry(), skyfit.Villar(bands="gr")):
        assert repr(module).startswith(type(module).__name__)
    many = skyfit.CompositeLens([skyfit.SIE() for _ in range(8)])
    assert repr(many).splitlines()[-1] == "  ... and 10 more"  # 8 x 5 rows, 30 shown


@pytest.fixture(scope="module")
def posterior():
    t = torch.linspace(-20, 20, 14, **f64)
    lc = skyfit.GaussianLightCurve("sn", t0=1.0, sigma=5.0, peak_flux=2.0)
    flux = lc.flux(t).detach()
    lc.to_dynamic()
    return skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, torch.full_like(t, 0.1)))


def test_posterior_and_result_summaries(posterior):
    assert repr(posterior).splitlines() == [
        "Posterior: dim 3, 3 parameters",
        "  parameter     shape   units  prior",
        "  sn.t0         scalar  day    flat",
        "  sn.sigma      scalar  day    flat on [0, inf]",
        "  sn.peak_flux  scalar  flux   flat on [0, inf]",
    ]
    fit = skyfit.fit_map(posterior)
    assert repr(fit).splitlines()[2].split() == ["sn.t0", "1", "day"]
    lap = skyfit.laplace(posterior, fit.x)
    text = repr(lap)
    assert text.startswith("LaplaceResult: 3 parameters, constrained space")
    assert "tensor" not in text and len(text.splitlines()) == 5  # no matrices
    assert "<table>" in lap._repr_html_()
    vi = skyfit.fit_vi(posterior, n_steps=20, progress=False)
    assert isinstance(vi, VIResult)
    text = repr(vi)
    assert "family fullrank, ELBO" in text.splitlines()[0] and len(text.splitlines()) == 5
    assert str(np.round(vi.elbo_history[0], 3)) not in text


def test_short_chains_give_one_corner_sentence(recwarn):
    import matplotlib

    matplotlib.use("Agg")
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        skyfit.plots.corner_plot(np.random.default_rng(0).normal(size=(1, 12, 4)))
    finally:
        logging.getLogger().removeHandler(handler)
    assert not [r for r in records if "Too few points" in r.getMessage()]
    messages = [str(w.message) for w in recwarn if "corner_plot" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("corner_plot: 6 of the 2-D panels")
