"""The survey example's posterior (skyfit.examples.survey_night): proper, with the stated
weakly-informative priors."""

from __future__ import annotations

import math

import numpy as np
import torch

from skyfit.examples.survey_night import REFERENCE, simulate_survey_night, villar_posterior


def one_object(seed=0):
    night = simulate_survey_night(1, seed=seed)
    return {k: v[0] for k, v in night.data.items()}, torch.as_tensor(night.truth[0])


def test_priors_are_the_stated_distributions():
    data, x = one_object()
    with_priors, flat = villar_posterior(**data), villar_posterior(**data, priors=False)
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = x * torch.as_tensor(rng.uniform(0.5, 2.0, 8))  # inside the bounds (beta <= 0 too)

        def normal(v, mu, sd):
            return -0.5 * ((v - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))

        def lognormal(v, centre):
            return normal(math.log(v), math.log(centre), 1.0) - math.log(v)

        t0, a, beta, gamma, tau_rise, tau_fall = (y[0], y[1:4], y[4], y[5], y[6], y[7])
        expected = (normal(float(t0), 10.0, 130.0 / 3) + normal(float(beta), 0.0, 1.0)
                    + sum(lognormal(float(v), REFERENCE["A"]) for v in a)
                    + lognormal(float(gamma), 20.0) + lognormal(float(tau_rise), 5.0)
                    + lognormal(float(tau_fall), 30.0))
        difference = with_priors.log_prob(y) - flat.log_prob(y)
        assert abs(float(difference) - expected) < 1e-9 * abs(expected)


def test_posterior_is_proper_along_tau_rise_where_the_data_miss_the_rise():
    # only points well after the rise: the data leave tau_rise free (the improper case of flat
    # priors); the posterior's density in tau_rise, others fixed, integrates to a finite value
    # that the upper end of the range no longer changes, and falls without bound
    data, x = one_object(seed=4)
    late = data["time"] > float(x[0] + x[5] + 5.0)
    assert late.sum() >= 5
    data["mask"] = data["mask"] & late
    tau = torch.logspace(-2, 8, 4001, dtype=torch.float64)

    def mass(post, upper):  # integral of p(tau) dtau = integral of p tau dln(tau), up to upper
        y = x.expand(len(tau), 8).clone()
        y[:, 6] = tau
        lp = post.log_prob(y)
        keep = tau <= upper
        density = torch.exp(lp - lp.max()) * tau
        return float(torch.trapezoid(density[keep], tau.log()[keep])), lp

    proper = villar_posterior(**data)
    m6, lp = mass(proper, 1e6)
    m8, _ = mass(proper, 1e8)
    assert abs(m8 - m6) < 1e-9 * m6
    big = tau > 100
    assert (lp[big].diff() < 0).all() and float(lp[-1] - lp[big][0]) < -50
    # with flat priors the same object is improper: along the ridge tau_rise -> infinity with
    # the amplitudes doubled (the rise sigmoid tends to 1/2 at every time) the log-density
    # tends to a finite limit, so no upper end of tau_rise bounds the mass
    flat = villar_posterior(**data, priors=False)
    ridge = x.expand(2, 8).clone()
    ridge[:, 1:4] *= 2
    ridge[:, 6] = torch.tensor([1e6, 1e8])
    assert abs(float(flat.log_prob(ridge).diff())) < 1e-2
    assert float(proper.log_prob(ridge).diff()) < -50
