"""Does the survey night's Villar parametrisation decide which objects' NUTS chains converge?
(issue 16, the ``many_nuts`` row's note_session13 in RESULTS.md.)

One change at a time against :func:`skyfit.examples.survey_night.villar_posterior`, the truth
simulated with the model that is fitted, the same times, bands and noise draws per seed as
:func:`~skyfit.examples.survey_night.simulate_survey_night` (today's model reproduces its data
exactly). Variants (JSON keys): ``relative`` (slope relative to ``A``, truth ``beta / 100``),
``fraction`` (``transition_fraction``), ``band_fall`` (per-band ``tau_fall``, truth the shared one
times ``exp(U(-0.3, 0.3))`` per band), ``pivot="end"`` (``A`` the plateau-end flux
``A + beta gamma``: the same light curves, other coordinates); and the sampler's ``warmup``,
``draws``, ``target_accept``. Prints one JSON line: converged objects (max R-hat < 1.01),
divergences, leapfrog gradients per iteration per chain (warm-up included).

``python benchmarks/survey_parametrisations.py NAME '{"relative": true}'`` (64 objects, seed 2,
4 chains, 300 + 300, dense metric from laplace_many, compiled; about 6 min on one thread).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from collections import Counter

import numpy as np
import torch
from torch.distributions import LogNormal, Normal

from skyfit import Posterior, Villar
from skyfit._forward import forward
from skyfit.examples import survey_night as sn
from skyfit.inference import fit_map_many, laplace_many, sample_nuts_many
from skyfit.lightcurves.functions import villar_light_curve
from skyfit.survey import ManyObjects, PaddedPhotometry, stack_ragged

BANDS = sn.BANDS


class VillarEnd(Villar):
    """Villar with ``A`` the plateau-end flux ``A + beta gamma`` (absolute slope): the plateau
    pivots at its end, near the data, instead of at t0."""

    @forward
    def flux(self, t, band=None, t0=None, A=None, beta=None, gamma=None, tau_rise=None,
             tau_fall=None):
        t, p = self._inputs(t, band, None, t0=t0, A=A, beta=beta, gamma=gamma,
                            tau_rise=tau_rise, tau_fall=tau_fall)
        p["A"] = p["A"] - p["beta"] * p["gamma"]
        return villar_light_curve(t, transition_width=self.blend_width(p["tau_fall"]), **p)


def factory(time, flux, flux_err, band, mask=None, relative=False, fraction=None,
            band_fall=False, beta_sd=None, pivot=None):
    shared = tuple(k for k in sn.SHARED if not (band_fall and k == "tau_fall"))
    opts = dict(relative_slope=relative)
    if fraction is not None:
        opts["transition_fraction"] = fraction
    model = VillarEnd if pivot == "end" else Villar
    lc = model(bands=list(BANDS), shared=shared, transition_width=3.0, **opts)
    lc.to_dynamic()
    q = dict(validate_args=False)
    f = sn._f64
    nb = len(BANDS)
    scales = {getattr(lc, k): LogNormal(f(sn.REFERENCE[k]).log(), 1.0, **q)
              for k in ("gamma", "tau_rise")}
    fall = f([sn.REFERENCE["tau_fall"]] * (nb if band_fall else 1))
    fall = fall if band_fall else fall[0]
    sd = beta_sd if beta_sd is not None else (0.01 if relative else sn.REFERENCE["A"] / 100)
    return Posterior(PaddedPhotometry(lc, time, flux, flux_err, band, mask), priors={
        lc.t0: Normal(f(sn.REFERENCE["t0"]), f(sn.WINDOW_DAYS / 3), **q),
        lc.A: LogNormal(f([sn.REFERENCE["A"]] * nb).log(), 1.0, **q),
        lc.beta: Normal(f(0.0), f(sd), **q),
        lc.tau_fall: LogNormal(fall.log(), 1.0, **q), **scales})


def simulate(n, seed, relative=False, fraction=None, band_fall=False):
    """simulate_survey_night's draws in its order; the variant's truth and flux."""
    rng = np.random.default_rng(seed)
    t0 = rng.uniform(0.0, 20.0, n)
    A = rng.uniform(80.0, 200.0, (n, 3))
    beta = -rng.uniform(0.0, 1.0, n)
    gamma = rng.uniform(10.0, 40.0, n)
    tau_rise = rng.uniform(3.0, 8.0, n)
    tau_fall = rng.uniform(10.0, 50.0, n)
    sizes = rng.integers(20, 41, n)
    objects = []
    for i in range(n):
        tt = np.sort(rng.uniform(*sn.WINDOW, sizes[i]))
        objects.append({"time": tt, "band": rng.integers(0, 3, sizes[i])})
    st = stack_ragged(objects, length=40)
    if relative:
        beta = beta / sn.REFERENCE["A"]  # -U(0, 0.01) per day
    fall = tau_fall[:, None].repeat(3, 1)
    if band_fall:  # a separate stream: the shared draws above stay the same
        fall = fall * np.exp(np.random.default_rng(seed + 10_000).uniform(-0.3, 0.3, (n, 3)))
    b = torch.as_tensor(st["band"], dtype=torch.long)
    T = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    amp = T(A).gather(1, b)
    fb = T(fall).gather(1, b)
    slope = T(beta)[:, None] * (amp if relative else 1.0)
    width = fraction * fb if fraction is not None else 3.0
    model = villar_light_curve(T(st["time"]), t0=T(t0)[:, None], A=amp, beta=slope,
                               gamma=T(gamma)[:, None], tau_rise=T(tau_rise)[:, None],
                               tau_fall=fb, transition_width=width).numpy()
    err = 1.0 + 0.02 * np.abs(model)
    flux = model + err * rng.standard_normal(model.shape)
    data = {"time": st["time"], "flux": flux, "flux_err": err, "band": st["band"],
            "mask": st["mask"]}
    truth = np.column_stack([t0, A, beta, gamma, tau_rise, fall if band_fall else tau_fall])
    return data, truth


def run(name, n=64, seed=2, warmup=300, draws=300, target_accept=0.8, **variant):
    sim = {k: v for k, v in variant.items() if k not in ("beta_sd", "pivot")}
    data, truth = simulate(n, seed, **sim)
    if not sim:
        ref = sn.simulate_survey_night(n, seed=seed)
        assert all(np.array_equal(ref.data[k], data[k]) for k in data), "baseline differs"
    if variant.get("pivot") == "end":  # the same light curves, A now the plateau-end flux
        truth[:, 1:4] = truth[:, 1:4] + truth[:, 4:5] * truth[:, 5:6]
    fac = functools.partial(factory, **variant)
    many = ManyObjects(fac, data)
    starts = sn.villar_starts(data)
    if variant.get("band_fall"):
        starts = np.column_stack([starts, starts[:, 7:8], starts[:, 7:8]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        fitted = laplace_many(many, fit_map_many(many, torch.as_tensor(starts)))
        fit_s = time.perf_counter() - t
        res = sample_nuts_many(many, fitted, n_chains=4, n_warmup=warmup, n_draws=draws,
                               mass="dense", compile=True,
                               target_accept=target_accept)
        wall = time.perf_counter() - t
    rhat = res.rhat.max(1)
    worst = [many.names[j] for j in res.rhat.argmax(1)]
    bad = rhat >= 1.01
    div = res.extra["n_divergent"].numpy()
    evals = res.extra["n_gradient_evals"].numpy()
    per_iter = evals / (4 * (warmup + draws))
    out = dict(name=name, variant=variant, target_accept=target_accept, n=n, seed=seed,
               warmup=warmup, draws=draws,
               converged=int((~bad).sum()), divergent=int(div.sum()),
               divergent_in_unconverged=int(div[bad].sum()),
               rhat_median=round(float(np.median(rhat)), 4), rhat_max=round(float(rhat.max()), 3),
               worst_param_unconverged=dict(Counter(np.array(worst)[bad].tolist())),
               steps_per_iter_mean=round(float(per_iter.mean()), 1),
               steps_per_iter_median=round(float(np.median(per_iter)), 1),
               batched_steps=int(res.extra["n_batched_steps"]),
               map_converged=int(fitted.converged.sum()),
               fit_s=round(fit_s, 1), wall_s=round(wall, 1),
               load=round(os.getloadavg()[0], 2))
    print(json.dumps(out), flush=True)
    os.makedirs("benchmarks/_scratch", exist_ok=True)
    np.savez(f"benchmarks/_scratch/{name}.npz", rhat=res.rhat, div=div, evals=evals, truth=truth,
             mean=res.x.numpy(), draws=res.draws.astype(np.float32))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    spec = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    run(sys.argv[1], **spec)
