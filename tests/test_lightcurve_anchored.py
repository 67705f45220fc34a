"""Villar posteriors in anchored coordinates (fluxes at fixed times): the same distribution."""

import pytest
import torch

from skyfit import PhotometryLikelihood, Posterior, fit_map, laplace
from skyfit.data import Photometry
from skyfit.lightcurve_anchored import VillarAnchoredDensity
from skyfit.lightcurve_fit import sample_light_curve_nuts
from skyfit.lightcurves import Villar, default_priors, from_photometry


def synthetic_posterior(redshift=None, **options):
    """Two bands, both sampled through the rise, plateau and decline (a well-behaved posterior
    in the model's own parameters); 4% flux errors, Gaussian in flux."""
    truth = Villar(t0=0.0, A=[100.0, 80.0], beta=-0.01, gamma=12.0, tau_rise=3.0,
                   tau_fall=[20.0, 30.0], bands="gr", relative_slope=True,
                   shared=["t0", "tau_rise", "gamma", "beta"])
    t = torch.arange(-8.0, 90.0, 6.0, dtype=torch.float64)
    time = torch.cat([t, t + 1.0])
    band = ["g"] * len(t) + ["r"] * len(t)
    flux = truth.flux(time, band=torch.tensor([0] * len(t) + [1] * len(t))).detach()
    gen = torch.Generator().manual_seed(3)
    err = 0.1 * flux + 0.5
    observed = flux + err * torch.randn(flux.shape, generator=gen, dtype=torch.float64)
    phot = Photometry(time.numpy() + 56000.0, band, flux=observed.numpy(), flux_err=err.numpy(),
                      redshift=redshift)
    like = PhotometryLikelihood(from_photometry("villar", phot, **options), phot)
    return Posterior(like, priors=default_priors(like))


@pytest.fixture(scope="module")
def fitted():
    post = synthetic_posterior()
    fit = fit_map(post)
    return post, fit, laplace(post, fit.x)


def random_points(post, lap, n, seed=0):
    """Draws of the Laplace Gaussian widened 2x, those inside the bounds."""
    draws = lap.mean + 2.0 * (lap.draw(n, seed) - lap.mean)
    return draws[((draws > post.lower) & (draws < post.upper)).all(-1)]


def test_round_trip_and_log_density_is_the_original_plus_log_abs_jacobian(fitted):
    post, fit, lap = fitted
    dens = VillarAnchoredDensity(post, anchor=fit.x)
    x = random_points(post, lap, 8)
    # at twice the Laplace width some points lie across the fold of the rise map (class
    # docstring): exactly those do not come back; the others do
    on_branch = dens.on_anchor_branch(x)
    assert on_branch.sum() >= 4
    w = dens.from_original(x)
    back = torch.isclose(dens.to_original(w), x, rtol=1e-10, atol=1e-10).all(-1)
    assert torch.equal(back, on_branch)
    x, w = x[on_branch], w[on_branch]
    for k in range(len(w)):
        # |d(original)/d(new)| from the explicit forward map, independent of the Newton solve
        forward = torch.autograd.functional.jacobian(dens.from_original, x[k])
        log_jac = -torch.linalg.slogdet(forward)[1]
        assert dens.log_prob(w[k]).item() == pytest.approx(
            (post.log_prob(x[k]) + log_jac).item(), abs=1e-8)
        assert dens.log_abs_det_jacobian(w[k]).item() == pytest.approx(log_jac.item(), abs=1e-9)


def test_gradient_matches_central_differences_with_a_redshift():
    post = synthetic_posterior(redshift=0.3)
    dens = VillarAnchoredDensity(post)
    w = dens.initial() + 0.01
    _, grad = dens.value_and_grad(w)
    h = 1e-6
    for i in range(dens.dim):
        e = torch.zeros_like(w)
        e[i] = h
        numeric = (dens.log_prob(w + e) - dens.log_prob(w - e)) / (2 * h)
        assert grad[i].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-5)


def test_anchored_coordinates_are_the_model_flux_with_a_blend_width_from_tau_fall():
    # the blend width 0.2 tau_fall differs per band: each band's coordinate must still be the
    # log of that band's own light curve at its reference time
    post = synthetic_posterior(transition_fraction=0.2)
    dens = VillarAnchoredDensity(post)
    x = post.initial() * 1.05
    w = dens.from_original(x)
    post.set(x)
    lc = post.likelihood.lightcurve
    for b, k in enumerate(dens._index["A"]):
        flux = lc.flux(dens.reference_times[b], band=b)
        assert w[k].item() == pytest.approx(flux.log().item(), abs=1e-10)
    assert torch.allclose(dens.to_original(w), x, rtol=1e-10, atol=1e-10)


def test_names_say_which_flux_replaces_which_parameter(fitted):
    post, fit, _ = fitted
    dens = VillarAnchoredDensity(post, anchor=fit.x, rise_times=[0.0, 6.0])
    replaced = {n for n in dens.names if n not in post.names}
    assert replaced == {"rise_g@0d", "rise_g@6d", *(f"log_flux_{b}@{t:.3g}d" for b, t in zip(
        "gr", dens.reference_times.tolist()))}
    assert torch.isinf(dens.lower[[dens.names.index(n) for n in replaced]]).all()


def test_models_without_shared_rise_or_relative_slope_are_refused():
    post = synthetic_posterior()
    phot = post.likelihood.photometry
    per_band = PhotometryLikelihood(from_photometry("villar", phot, shared=["gamma"]), phot)
    with pytest.raises(ValueError, match="t0 shared"):
        VillarAnchoredDensity(Posterior(per_band))
    bazin = PhotometryLikelihood(from_photometry("bazin", phot), phot)
    with pytest.raises(ValueError, match="relative_slope"):
        VillarAnchoredDensity(Posterior(bazin))


def test_anchored_nuts_returns_draws_of_the_model_parameters(fitted):
    post, fit, lap = fitted
    s = sample_light_curve_nuts(post, fit, lap, anchored=True, n_warmup=10, n_draws=5,
                                progress=False)
    assert s.names == post.names and s.info["coordinates"][0].startswith("rise_")
    x = torch.as_tensor(s.draws)
    assert ((x > post.lower) & (x < post.upper)).all()
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(s.log_density), post.log_prob(x), rtol=1e-12)


def test_points_far_from_the_anchor_are_solved_by_continuation(fitted):
    # at four times the Laplace width some points of the anchor's branch lie where Newton's
    # method from the anchor (30 bounded steps, the solve alone) finds no solution: the
    # density was -inf there, a wall inside the posterior's reach that NUTS reported as
    # divergences. The continuation from the anchor solves them.
    post, fit, lap = fitted
    dens = VillarAnchoredDensity(post, anchor=fit.x)
    draws = lap.mean + 4.0 * (lap.draw(200, 1) - lap.mean)
    x = draws[((draws > post.lower) & (draws < post.upper)).all(-1)]
    x = x[dens.on_anchor_branch(x)]
    w = dens.from_original(x)
    x, w = x[torch.isfinite(w).all(-1)], w[torch.isfinite(w).all(-1)]
    i = dens._index
    args, target = dens._band_params(w), w[:, [i["t0"], i["tau_rise"]]]
    with torch.no_grad():
        _, res, jac = dens._newton(dens._start.expand(target.shape).clone(), target, args, 30)
        newton_failed = ~dens._solved(res, jac)
        back = torch.isclose(dens.to_original(w), x, rtol=1e-10, atol=1e-10).all(-1)
    assert newton_failed.sum() >= 2
    assert back[newton_failed].sum() >= 2 and back.double().mean() > 0.98
    for k in torch.nonzero(newton_failed & back).flatten().tolist():
        forward = torch.autograd.functional.jacobian(dens.from_original, x[k])
        log_jac = -torch.linalg.slogdet(forward)[1]
        assert torch.isfinite(dens.log_prob(w[k]))
        assert dens.log_prob(w[k]).item() == pytest.approx(
            (post.log_prob(x[k]) + log_jac).item(), abs=1e-8)


def test_the_fingerprint_holds_the_posterior_and_the_coordinates():
    # a checkpoint of an anchored run must not resume on another blend, other data or another
    # anchor: the base LogDensity fingerprint held only names and bounds
    def anchored(**options):
        return VillarAnchoredDensity(synthetic_posterior(**options))

    first = anchored(transition_fraction=0.2).fingerprint()
    assert first == anchored(transition_fraction=0.2).fingerprint()
    assert first != anchored(transition_fraction=0.3).fingerprint()
    assert first != anchored(redshift=0.1, transition_fraction=0.2).fingerprint()
    post = synthetic_posterior(transition_fraction=0.2)
    moved = VillarAnchoredDensity(post, anchor=post.initial() * 1.01).fingerprint()
    assert moved["names"] == first["names"] and moved != first
    assert first["settings"]["PhotometryLikelihood.Villar.transition_fraction"] == 0.2


def test_closed_form_rise_slopes_are_the_light_curves_derivatives():
    from skyfit._anchored_rise import log_shape_and_slopes
    from skyfit.lightcurves.functions import villar_light_curve

    f64 = dict(dtype=torch.float64)
    t = torch.tensor([-3.0, 1.0, 6.0, 14.0, 25.0, 60.0], **f64)  # rise, plateau, blend, decline
    t0, ln_tau = torch.tensor(-2.0, **f64, requires_grad=True), torch.tensor(1.2, **f64,
                                                                            requires_grad=True)
    beta, gamma, tau_fall, z = -0.02, 15.0, 25.0, 0.3
    width = 0.2 * tau_fall
    ln_g, d_t0, d_tau = log_shape_and_slopes(t, t0, beta, gamma, ln_tau, tau_fall, width, z)
    rest = t0 + (t - t0) / (1 + z)
    direct = villar_light_curve(rest, t0, 1.0, beta, gamma, ln_tau.exp(), tau_fall, width).log()
    torch.testing.assert_close(ln_g, direct, rtol=1e-13, atol=1e-13)
    for k in range(len(t)):
        g_t0, g_tau = torch.autograd.grad(direct[k], (t0, ln_tau), retain_graph=True)
        assert d_t0[k].item() == pytest.approx(g_t0.item(), rel=1e-12, abs=1e-14)
        assert d_tau[k].item() == pytest.approx(g_tau.item(), rel=1e-12, abs=1e-14)


def test_gradient_is_the_exact_implicit_function_gradient(fitted):
    # log q(w) = log p(x) - log |det dw/dx| at x = x(w): its gradient in w is (dw/dx)^-T times
    # its gradient in x, all from the explicit forward map. The Newton solve's gradient must
    # agree to rounding (forward-difference Jacobians in the solve agreed to ~1e-6 only)
    post, fit, lap = fitted
    dens = VillarAnchoredDensity(post, anchor=fit.x)
    x = random_points(post, lap, 8, seed=2)
    x = x[dens.on_anchor_branch(x)][:4]
    _, grad = dens.value_and_grad(dens.from_original(x))
    for k in range(len(x)):
        xk = x[k].clone().requires_grad_(True)
        forward = torch.autograd.functional.jacobian(dens.from_original, xk, create_graph=True)
        log_q = post.log_prob(xk) - torch.linalg.slogdet(forward)[1]
        grad_x, = torch.autograd.grad(log_q, xk)
        expected = torch.linalg.solve(forward.detach().T, grad_x)
        torch.testing.assert_close(grad[k], expected, rtol=1e-9, atol=1e-9 * expected.abs().max())
