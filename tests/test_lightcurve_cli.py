"""``skyfit lightcurve FILE``: reads a table, fits it, writes the plot and summary.json."""

import json

import pytest
import torch

from skyfit import Bazin
from skyfit.cli import main


def test_lightcurve_command_fits_a_table_and_writes_its_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    truth = Bazin(t0=5.0, A=[300.0, 200.0], tau_rise=3.0, tau_fall=20.0, B=0.0, bands="gr")
    t = torch.linspace(-10.0, 70.0, 30, dtype=torch.float64)
    band = torch.arange(30) % 2
    flux = truth.flux(t, band=band).detach()
    err = 2.0 + 0.02 * flux
    noisy = flux + err * torch.randn(30, generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64)
    lines = ["mjd,band,flux,flux_err"] + [
        f"{60000 + ti:.4f},{'gr'[b]},{f:.5f},{e:.5f}"
        for ti, b, f, e in zip(t.tolist(), band.tolist(), noisy.tolist(), err.tolist())]
    path = tmp_path / "sn.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["lightcurve", str(path), "--model", "bazin", "--shared", "t0", "tau_rise",
                 "tau_fall", "--no-nuts", "--out", str(tmp_path / "fit")])
    assert code == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert (tmp_path / "fit" / "lightcurve.png").stat().st_size > 10_000
    assert summary["map"]["converged"] and summary["reference_mjd"] == 59990.0
    assert summary["map"]["values"]["Bazin.tau_fall"] == pytest.approx(20.0, rel=0.15)
    assert "Bazin.tau_rise" in capsys.readouterr().out
