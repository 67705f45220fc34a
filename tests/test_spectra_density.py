"""Seed 002 in small: a conditional density p(spectrum | labels) of 1500-pixel spectra finds
(I) outliers (anomalous abundances, a line missing from the line list) as low log p, and
(II) the lines of an element that is absent from the labels as pixels that still vary, together,
at fixed labels (the conditional correlation map)."""

import numpy as np
import pytest
import torch

from skyfit import GaussianLikelihood, Posterior
from skyfit.amortized import simulate, simulator_of
from skyfit.amortized.spectral_density import SpectrumDensity, roc_auc
from skyfit.spectra import StellarSpectrum, synthetic_line_list

KNOWN = ("Fe", "Mg", "Si", "Ca", "Ti")
HIDDEN = "Ba"  # its abundance varies in the simulations but is not a label
N_LABELS = 2 + len(KNOWN)  # Teff, log g, known abundances
SNR = 100.0


@pytest.fixture(scope="module")
def problem():
    lines = synthetic_line_list(KNOWN + (HIDDEN,), lines_per_element=10)
    spectrum = StellarSpectrum(lines, abundances=[0.0] * 6)
    flux = spectrum().detach()
    spectrum.to_dynamic()
    posterior = Posterior(GaussianLikelihood(spectrum, flux,
                                             variance=torch.full_like(flux, SNR**-2)))
    train = simulate(posterior, 6000, seed=0, progress=False)
    density = SpectrumDensity(1500, N_LABELS, components=32, transforms=3)
    density.fit(train.x, train.theta[:, :N_LABELS], epochs=40, batch_size=512, lr=2e-3,
                progress=False)
    test = simulate(posterior, 300, seed=99, progress=False)
    return spectrum, posterior, density, test


@pytest.mark.slow
def test_outliers_have_the_lowest_density(problem):
    spectrum, posterior, density, test = problem
    labels = test.theta[:, :N_LABELS]
    normal = -density.log_prob(test.x, labels).detach()
    # (a) one known element 0.5 dex more abundant in the star than its label says
    theta = test.theta.clone()
    rows = torch.arange(len(theta))
    theta[rows, 2 + rows % len(KNOWN)] += 0.5
    with torch.random.fork_rng():
        torch.manual_seed(5)
        abundance_outliers = simulator_of(posterior)(theta)
    # (b) an absorption line that is in no line list, 20% deep, at a random wavelength
    centre = 5005 + 90 * torch.rand(len(theta), 1, generator=torch.Generator().manual_seed(6),
                                    dtype=torch.float64)
    extra_line = test.x * (1 - 0.2 * torch.exp(-0.5 * ((spectrum.wavelength - centre) / 0.12)**2))
    for outliers in (abundance_outliers, extra_line):
        scores = -density.log_prob(outliers, labels).detach()
        assert roc_auc(normal, scores) >= 0.95


@pytest.mark.slow
def test_conditional_correlations_reveal_the_lines_missing_from_the_labels(problem):
    spectrum, _, density, _ = problem
    lines = spectrum.lines
    solar = torch.tensor([5500.0, 4.0] + [0.0] * len(KNOWN), dtype=torch.float64)
    corr, sd = density.conditional_correlation(solar, n=2000)
    step = spectrum.wavelength[1] - spectrum.wavelength[0]
    pixel = torch.round((lines.center - spectrum.wavelength[0]) / step).long()
    hidden = lines.element == lines.elements.index(HIDDEN)
    # at fixed labels the hidden element's lines still vary; the labelled ones barely do
    assert sd[pixel[hidden]].median() > 4 * sd[pixel[~hidden]].median()
    # ... and they vary together: a block of high correlation among the hidden lines
    strong = pixel[hidden][sd[pixel[hidden]] > 0.02]
    block = corr[strong][:, strong]
    off_diagonal = block[~torch.eye(len(strong), dtype=torch.bool)]
    assert len(strong) >= 5 and float(off_diagonal.mean()) > 0.8
    # the pixels varying most at fixed labels are hidden-element lines (recovered line list)
    top = torch.argsort(sd, descending=True)[:20]
    near_hidden = (top[:, None] - pixel[hidden][None, :]).abs().min(1).values <= 3
    assert float(near_hidden.double().mean()) >= 0.8
    assert np.isfinite(corr.numpy()).all()
