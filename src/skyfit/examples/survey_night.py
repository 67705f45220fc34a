"""Example problem: a survey night of N supernovae, three-band Villar light curves of 20-40
points each (ragged), simulated with a seed; and the module-level model factory that fits one.

The factory is a plain function of arrays (picklable by reference), which is what
:class:`~skyfit.survey.ManyObjects` and :func:`~skyfit.survey.fit_catalogue` need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import Posterior, Villar
from ..survey import PaddedPhotometry, stack_ragged

__all__ = ["SurveyNight", "simulate_survey_night", "villar_posterior", "villar_starts",
           "villar_flux", "BANDS"]

BANDS = ("g", "r", "i")
SHARED = ("t0", "beta", "gamma", "tau_rise", "tau_fall")
TRANSITION_WIDTH = 3.0


def villar_posterior(time, flux, flux_err, band, mask=None) -> Posterior:
    """One object's posterior: a three-band Villar light curve (``A`` per band, the shape
    shared) with flat priors inside each Param's ``valid`` range."""
    lc = Villar(bands=list(BANDS), shared=SHARED, transition_width=TRANSITION_WIDTH)
    lc.to_dynamic()
    return Posterior(PaddedPhotometry(lc, time, flux, flux_err, band, mask))


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
        time = np.sort(rng.uniform(-20.0, 110.0, sizes[i]))
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
    return np.column_stack([peak - 15.0, amplitude, np.zeros(n), np.full(n, 20.0),
                            np.full(n, 5.0), np.full(n, 30.0)])
