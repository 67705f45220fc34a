"""Example problem: a survey night of N supernovae, three-band Villar light curves of 20-40
points each (ragged), simulated with a seed; and the module-level model factory that fits one.

The factory is a plain function of arrays (picklable by reference), which is what
:class:`~skyfit.survey.ManyObjects` and :func:`~skyfit.survey.fit_catalogue` need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import LogNormal, Normal

from .. import Posterior, Villar
from ..survey import PaddedPhotometry, stack_ragged

__all__ = ["SurveyNight", "simulate_survey_night", "villar_posterior", "villar_starts",
           "villar_flux", "BANDS"]

BANDS = ("g", "r", "i")
SHARED = ("t0", "beta", "gamma", "tau_rise", "tau_fall")
TRANSITION_WIDTH = 3.0
WINDOW = (-20.0, 110.0)  # days observed
WINDOW_DAYS = WINDOW[1] - WINDOW[0]
# the survey's reference light curve, the prior centres: a typical explosion epoch and peak
# flux of the night, and the shape villar_starts starts every object from
REFERENCE = {"t0": 10.0, "A": 100.0, "gamma": 20.0, "tau_rise": 5.0, "tau_fall": 30.0}


def villar_posterior(time, flux, flux_err, band, mask=None, priors: bool = True) -> Posterior:
    """One object's posterior: a three-band Villar light curve (``A`` per band, the shape
    shared) with weakly-informative priors, so that the posterior is proper.

    The priors are :func:`~skyfit.lightcurves.default_priors`' rules centred on the survey's
    reference light curve instead of each object's data-driven start (:class:`ManyObjects
    <skyfit.survey.ManyObjects>` batches one template's priors over every object, so they
    cannot depend on one object's data): ``t0`` Normal(10, 130 / 3) (the survey window of 130
    days, a third of it as sd); ``tau_rise``, ``gamma``, ``tau_fall`` LogNormal(ln 5, 1),
    LogNormal(ln 20, 1), LogNormal(ln 30, 1) (the shape :func:`villar_starts` starts from);
    each band's ``A`` LogNormal(ln 100, 1); ``beta`` Normal(0, 100 / 100 flux per day). With
    flat priors (``priors=False``: the maximum-likelihood problem) a light curve that does not
    constrain the rise leaves ``tau_rise`` unbounded above and the posterior improper.

    Arguments:
        time, flux, flux_err, band, mask: one object's padded arrays ``(L,)``.
        priors: the weakly-informative priors above (False: flat inside each Param's range).

    Example:
        >>> night = simulate_survey_night(1, seed=0)
        >>> post = villar_posterior(**{k: v[0] for k, v in night.data.items()})
        >>> x = torch.as_tensor(night.truth[0])
        >>> far = x.clone()
        >>> far[6] = 1e4  # tau_rise: the prior decays where the data stop constraining it
        >>> bool(post.log_prior(far) < post.log_prior(x) - 20)
        True
    """
    lc = Villar(bands=list(BANDS), shared=SHARED, transition_width=TRANSITION_WIDTH)
    lc.to_dynamic()
    if not priors:
        return Posterior(PaddedPhotometry(lc, time, flux, flux_err, band, mask))
    # validate_args=False: the values are checked against each Param's range already, and the
    # check costs as much as the log-density of these small models
    quiet = dict(validate_args=False)
    scales = {getattr(lc, k): LogNormal(_f64(REFERENCE[k]).log(), 1.0, **quiet)
              for k in ("gamma", "tau_rise", "tau_fall")}
    return Posterior(PaddedPhotometry(lc, time, flux, flux_err, band, mask), priors={
        lc.t0: Normal(_f64(REFERENCE["t0"]), _f64(WINDOW_DAYS / 3), **quiet),
        lc.A: LogNormal(_f64([REFERENCE["A"]] * len(BANDS)).log(), 1.0, **quiet),
        lc.beta: Normal(_f64(0.0), _f64(REFERENCE["A"] / 100), **quiet), **scales})


def _f64(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def villar_flux(params: np.ndarray, time: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The same model in numpy for the truth: ``params (N, 8)`` in :func:`villar_posterior`'s
    order (t0, A_g, A_r, A_i, beta, gamma, tau_rise, tau_fall), ``time``/``band`` ``(N, L)``."""
    from ..lightcurves.functions import villar_light_curve

    p = torch.as_tensor(params, dtype=torch.float64)
    amplitude = p[:, 1:4].gather(1, torch.as_tensor(band, dtype=torch.long))
    out = villar_light_curve(torch.as_tensor(time, dtype=torch.float64), t0=p[:, :1],
                             A=amplitude, beta=p[:, 4:5], gamma=p[:, 5:6], tau_rise=p[:, 6:7],
                             tau_fall=p[:, 7:8], transition_width=TRANSITION_WIDTH)
    return out.numpy()


@dataclass
class SurveyNight:
    """``data``: padded arrays ``time, flux, flux_err, band, mask`` of shape ``(N, 40)``;
    ``truth``: ``(N, 8)`` true parameters; ``names``: their names."""

    data: dict[str, np.ndarray]
    truth: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return self.truth.shape[0]

    def subset(self, index) -> SurveyNight:
        return SurveyNight({k: v[index] for k, v in self.data.items()}, self.truth[index],
                           self.names)


def simulate_survey_night(n_objects: int, seed: int = 0, n_min: int = 20,
                          n_max: int = 40) -> SurveyNight:
    """``n_objects`` supernovae with random Villar parameters, each observed at 20-40 random
    times over 130 days in random bands, Gaussian noise of ``1 + 0.02 flux``."""
    rng = np.random.default_rng(seed)
    n = n_objects
    truth = np.column_stack([
        rng.uniform(0.0, 20.0, n),                              # t0
        rng.uniform(80.0, 200.0, (n, 3)),                        # A per band
        -rng.uniform(0.0, 1.0, n),                               # beta
        rng.uniform(10.0, 40.0, n),                              # gamma
        rng.uniform(3.0, 8.0, n),                                # tau_rise
        rng.uniform(10.0, 50.0, n),                              # tau_fall
    ])
    sizes = rng.integers(n_min, n_max + 1, n)
    objects = []
    for i in range(n):
        time = np.sort(rng.uniform(*WINDOW, sizes[i]))
        band = rng.integers(0, 3, sizes[i])
        objects.append({"time": time, "band": band})
    stacked = stack_ragged(objects, length=n_max)
    model = villar_flux(truth, stacked["time"], stacked["band"])
    flux_err = 1.0 + 0.02 * np.abs(model)
    flux = model + flux_err * rng.standard_normal(model.shape)
    data = {"time": stacked["time"], "flux": flux, "flux_err": flux_err,
            "band": stacked["band"], "mask": stacked["mask"]}
    names = villar_posterior(*(data[k][0] for k in ("time", "flux", "flux_err", "band"))).names
    return SurveyNight(data, truth, names)


def villar_starts(data: dict[str, np.ndarray]) -> np.ndarray:
    """Data-driven starts ``(N, 8)``: ``t0`` 15 days before the brightest point, each band's
    amplitude its brightest flux, a flat 20-day plateau, 5-day rise, 30-day decline."""
    flux = np.where(data["mask"], data["flux"], -np.inf)
    peak = data["time"][np.arange(len(flux)), flux.argmax(1)]
    amplitude = np.stack([np.where(data["band"] == b, flux, -np.inf).max(1) for b in range(3)], 1)
    amplitude = np.clip(np.where(np.isfinite(amplitude), amplitude, 50.0), 1.0, None)
    n = len(flux)
    shape = [np.full(n, REFERENCE[k]) for k in ("gamma", "tau_rise", "tau_fall")]
    return np.column_stack([peak - 15.0, amplitude, np.zeros(n), *shape])
