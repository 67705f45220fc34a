"""A seeded mock strong lens is fitted (MAP + Laplace): the Einstein radius is recovered."""

import torch

import skyfit

TRUTH = dict(theta_E=1.0, q=0.75, phi=0.6, lx=0.02, ly=-0.01,
             sx=0.08, sy=0.05, sq=0.8, sphi=0.3, n=1.2, Re=0.18, flux=20.0)
START = dict(TRUTH, theta_E=0.9, q=0.85, phi=0.5, sx=0.0, sy=0.0, n=1.5, Re=0.25, flux=15.0)
SIGMA = 0.02  # noise per pixel (flux units)


def simulator(v):
    grid = skyfit.PixelGrid((52, 52), 0.05, supersample=2)
    lens = skyfit.SIE(x0=v["lx"], y0=v["ly"], q=v["q"], phi=v["phi"], theta_E=v["theta_E"])
    source = skyfit.Sersic(x0=v["sx"], y0=v["sy"], q=v["sq"], phi=v["sphi"], n=v["n"],
                           Re=v["Re"], flux=v["flux"])
    sim = skyfit.LensedImage(grid, lens, [source], psf=skyfit.GaussianPSF(sigma=0.05, size=9))
    return sim, lens, source


def test_mock_lens_fit_recovers_the_einstein_radius():
    truth_sim, _, _ = simulator(TRUTH)
    clean = truth_sim().detach()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(11),
                        dtype=torch.float64)
    data = clean + SIGMA * noise
    sim, lens, source = simulator(START)
    lens.to_dynamic()
    source.to_dynamic()
    variance = torch.full_like(data, SIGMA**2)
    post = skyfit.Posterior(skyfit.GaussianLikelihood(sim, data, variance=variance))
    fit = skyfit.fit_map(post)
    assert fit.converged
    lap = skyfit.laplace(post, fit.x)
    i = post.names.index("SIE.theta_E")
    theta_E, sigma = fit.x[i].item(), lap.std[i].item()
    assert abs(theta_E - TRUTH["theta_E"]) < 2 * sigma
    assert abs(theta_E - TRUTH["theta_E"]) < 0.01 * TRUTH["theta_E"]
    assert 0 < sigma < 0.01
