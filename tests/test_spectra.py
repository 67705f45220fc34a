"""The stellar spectrum simulator: continuum, line physics, broadening, differentiability."""

import math

import pytest
import torch

from skyfit.spectra import (
    StellarSpectrum,
    absorption_spectrum,
    instrumental_broadening,
    line_optical_depth,
    planck_continuum,
    synthetic_line_list,
)

F64 = dict(dtype=torch.float64)


def test_continuum_is_the_planck_ratio():
    wavelength = torch.tensor([4000.0, 5000.0, 6000.0], **F64)
    ratio = planck_continuum(wavelength, torch.tensor(5800.0, **F64), 5000.0)
    h, c, k = 6.62607015e-34, 2.99792458e8, 1.380649e-23

    def planck(lam_angstrom):
        lam = lam_angstrom * 1e-10
        return 2 * h * c**2 / lam**5 / math.expm1(h * c / (lam * k * 5800.0))

    expected = [planck(lam) / planck(5000.0) for lam in (4000.0, 5000.0, 6000.0)]
    assert ratio.tolist() == pytest.approx(expected, rel=1e-6)


def test_broadening_keeps_a_flat_spectrum_flat_and_conserves_equivalent_width():
    flat = torch.ones(300, **F64)
    assert torch.allclose(instrumental_broadening(flat, 2.0), flat)
    wavelength = torch.linspace(5000, 5030, 300, **F64)
    line = absorption_spectrum(wavelength, torch.tensor([5015.0], **F64),
                               torch.tensor([3.0], **F64), torch.tensor([0.05], **F64))
    broad = instrumental_broadening(line, 3.0)
    assert float((1 - broad).sum()) == pytest.approx(float((1 - line).sum()), rel=1e-6)
    assert broad.min() > line.min()  # shallower, wider


def test_weak_lines_grow_linearly_and_strong_lines_saturate():
    wavelength = torch.linspace(5000, 5010, 2001, **F64)

    def equivalent_width(tau):
        flux = absorption_spectrum(wavelength, torch.tensor([5005.0], **F64),
                                   torch.tensor([tau], **F64), torch.tensor([0.05], **F64),
                                   window=100)
        return float((1 - flux).sum() * (wavelength[1] - wavelength[0]))

    assert equivalent_width(0.002) / equivalent_width(0.001) == pytest.approx(2.0, rel=1e-3)
    assert equivalent_width(200.0) / equivalent_width(100.0) < 1.1  # flat part of the curve


def test_line_strength_follows_abundance_excitation_and_gravity():
    tau = line_optical_depth(torch.tensor([0.0, 0.3]), torch.tensor(0.0), torch.tensor(2.0),
                             torch.tensor(0.0), torch.tensor(5040.0), torch.tensor(4.44))
    assert float(tau[1] / tau[0]) == pytest.approx(10**0.3)  # 0.3 dex more atoms
    cool, hot = (line_optical_depth(0.0, 0.0, 2.0, 0.0, torch.tensor(t), 4.44)
                 for t in (4000.0, 6000.0))
    # Boltzmann: a level 2 eV up is 10^(-5040/T * 2) populated, more so in the hotter star
    assert float(hot / cool) == pytest.approx(10 ** ((5040 / 4000 - 5040 / 6000) * 2.0))
    ion_low_g, ion_high_g = (line_optical_depth(0.0, 0.0, 0.0, 1.0, 5040.0, torch.tensor(g))
                             for g in (2.0, 5.0))
    assert float(ion_low_g / ion_high_g) == pytest.approx(10.0)  # 3 dex in g -> 1 dex in tau


def test_spectrum_has_1500_pixels_lines_where_listed_and_is_differentiable():
    lines = synthetic_line_list(lines_per_element=6)
    spectrum = StellarSpectrum(lines, n_pixels=1500)
    flux = spectrum()
    assert flux.shape == (1500,)
    pixel = torch.round((lines.center - spectrum.wavelength[0])
                        / (spectrum.wavelength[1] - spectrum.wavelength[0])).long()
    continuum = planck_continuum(spectrum.wavelength, torch.tensor(5500.0, **F64), 5050.0)
    depth = 1 - flux / continuum
    between = torch.ones(1500, dtype=torch.bool)
    for p in pixel.tolist():
        between[max(0, p - 15):p + 16] = False
    assert depth[pixel].max() > 0.3 and depth[between].abs().max() < 1e-3
    spectrum.to_dynamic()
    x = torch.tensor([5500.0, 4.0, 0.0, 0.1, -0.2, 0.0, 0.3], **F64, requires_grad=True)
    flux = spectrum(x)
    (grad,) = torch.autograd.grad(flux[pixel].sum(), x)
    assert torch.isfinite(grad).all() and (grad[2:] < 0).all()  # more metals: less flux
    assert spectrum(x.detach().float()).dtype == torch.float32
