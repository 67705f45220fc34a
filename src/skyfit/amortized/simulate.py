"""Training pairs ``(theta, x)`` from a Posterior: theta from its priors, x from its likelihood.

A skyfit likelihood already holds everything a simulator needs: the forward model (the noiseless
prediction for a parameter vector) and the noise model of its data. :func:`simulator_of` reads
them off the likelihood; :func:`simulate` draws ``theta`` from the Posterior's priors, predicts
in batches with ``torch.vmap`` and adds the noise, seeded, into memory or an HDF5 file.

Supported likelihoods: :class:`~skyfit.GaussianLikelihood` (fixed variance map or a noise model
with ``sample(model)``), :class:`~skyfit.PoissonLikelihood` and
:class:`~skyfit.PhotometryLikelihood`. The simulated ``x`` has the shape of the likelihood's data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import caskade as ck
import torch

from ..errors import SkyfitError
from ..likelihoods import GaussianLikelihood, PhotometryLikelihood, PoissonLikelihood
from ..posterior import Posterior

__all__ = ["ImproperPriorError", "TrainingSet", "sample_prior", "observation_of",
           "simulator_of", "simulate"]

_MAX_REJECTION_ROUNDS = 100


class ImproperPriorError(SkyfitError, ValueError):
    """A parameter has a flat (improper) prior, from which no training set can be drawn."""


@dataclass
class TrainingSet:
    """Simulated pairs: ``theta (n, dim)`` (constrained space) and ``x (n, *data_shape)``.

    Example:
        >>> import os, tempfile, torch
        >>> pairs = TrainingSet(torch.zeros(4, 2), torch.ones(4, 3), ["a", "b"])
        >>> path = os.path.join(tempfile.mkdtemp(), "pairs.h5")
        >>> pairs.save(path)
        >>> again = TrainingSet.load(path)
        >>> len(again), again.names, bool((again.x == pairs.x).all())
        (4, ['a', 'b'], True)
    """

    theta: torch.Tensor
    x: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.theta.shape[0]

    def save(self, path: str | Path) -> None:
        """Write to HDF5 (datasets ``theta``, ``x``; attribute ``names``)."""
        import h5py
        with h5py.File(path, "w") as f:
            f.create_dataset("theta", data=self.theta.cpu().numpy())
            f.create_dataset("x", data=self.x.cpu().numpy())
            f.attrs["names"] = list(self.names)

    @classmethod
    def load(cls, path: str | Path) -> TrainingSet:
        """Read a file written by :meth:`save` or by :func:`simulate` with ``path=``."""
        import h5py
        with h5py.File(path, "r") as f:
            if "theta" not in f or "x" not in f:
                raise ValueError(f"{path} holds no skyfit training set (datasets theta and x)")
            return cls(torch.from_numpy(f["theta"][()]), torch.from_numpy(f["x"][()]),
                       [str(n) for n in f.attrs["names"]])


def _check_proper(posterior: Posterior) -> None:
    improper = []
    for label, (sl, _, _) in posterior.slices.items():
        if label in posterior.priors:
            continue
        lo, hi = posterior.lower[sl], posterior.upper[sl]
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            improper.append(f"{label} (valid [{lo.min().item():g}, {hi.max().item():g}])")
    if improper:
        raise ImproperPriorError(
            f"parameters with a flat, improper prior cannot be simulated: {', '.join(improper)}; "
            f"give each a proper prior, e.g. Posterior(likelihood, priors={{name: "
            f"torch.distributions.Normal(mu, sigma)}}), or finite valid bounds")


def _draw_block(posterior: Posterior, label: str, n: int) -> torch.Tensor:
    sl, shape, _ = posterior.slices[label]
    size = sl.stop - sl.start
    dist = posterior.priors.get(label)
    if dist is None:
        lo, hi = posterior.lower[sl], posterior.upper[sl]
        u = torch.rand(n, size, dtype=posterior.dtype, device=posterior.device)
        return lo + (hi - lo) * u
    draws = dist.sample((n,)).to(posterior.dtype)
    # a scalar distribution for a vector Param (batch shape ()) is broadcast per entry
    draws = draws.reshape(n, -1) if draws[0].numel() == size else dist.sample((n, size)).to(
        posterior.dtype).reshape(n, size)
    return draws


def sample_prior(posterior: Posterior, n: int, seed: int | None = None) -> torch.Tensor:
    """``n`` draws ``(n, dim)`` from the Posterior's Param priors, inside the valid bounds.

    A Param without a prior is uniform within its ``valid`` range; a flat (improper) prior raises
    :class:`ImproperPriorError`. Draws of a given prior outside ``valid`` are redrawn (the prior
    truncated to the bounds, as the Posterior's density is).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> lc.t0.valid, lc.sigma.valid, lc.peak_flux.valid = (-1, 1), (1, 3), (0.5, 2)
        >>> lc.to_dynamic()  # no priors: each Param is uniform in its valid range
        >>> t = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
        >>> flux = torch.tensor([0.6, 1.0, 0.6], dtype=torch.float64)
        >>> post = Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(3)))
        >>> theta = sample_prior(post, 10000, seed=0)
        >>> theta.mean(0).round(decimals=1).tolist()  # the centres of U(-1, 1), U(1, 3), U(0.5, 2)
        [0.0, 2.0, 1.2]
        >>> bool((theta.min(0).values >= torch.tensor([-1, 1, 0.5])).all())
        True
    """
    _check_proper(posterior)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        theta = torch.empty(n, posterior.dim, dtype=posterior.dtype, device=posterior.device)
        todo = torch.arange(n)
        for _ in range(_MAX_REJECTION_ROUNDS):
            for label, (sl, _, _) in posterior.slices.items():
                theta[todo, sl] = _draw_block(posterior, label, len(todo))
            outside = ((theta < posterior.lower) | (theta > posterior.upper)).any(-1)
            todo = torch.nonzero(outside).flatten()
            if len(todo) == 0:
                return theta
    raise ImproperPriorError(f"the priors put almost no mass inside the valid bounds of "
                             f"{posterior.names}: {len(todo)} of {n} draws still outside after "
                             f"{_MAX_REJECTION_ROUNDS} rounds")


def observation_of(posterior: Posterior) -> torch.Tensor:
    """The observed data held by the Posterior's likelihood (the ``x`` a simulation imitates).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> flux = torch.tensor([0.6, 1.0, 0.6], dtype=torch.float64)
        >>> lc = GaussianLightCurve()
        >>> lc.to_dynamic()
        >>> like = PhotometryLikelihood(lc, torch.tensor([-2.0, 0.0, 2.0]), flux, 0.1 * flux)
        >>> observation_of(Posterior(like)).tolist()
        [0.6, 1.0, 0.6]
    """
    like = posterior.likelihood
    if isinstance(like, GaussianLikelihood):
        return like.data
    if isinstance(like, PoissonLikelihood):
        return like.counts
    if isinstance(like, PhotometryLikelihood):
        return like.flux
    raise TypeError(f"no simulator known for {type(like).__name__}; pass simulator=... "
                    f"(a function theta (n, dim) -> x (n, ...))")


def _prediction_body(like: ck.Module) -> Callable[[], torch.Tensor]:
    if isinstance(like, (GaussianLikelihood, PoissonLikelihood)):
        return like.model
    if isinstance(like, PhotometryLikelihood):
        if like.band is None:
            return lambda: like.lightcurve.flux(like.time)
        return lambda: like.lightcurve.flux(like.time, like.band)
    raise TypeError(f"no simulator known for {type(like).__name__}; pass simulator=... "
                    f"(a function theta (n, dim) -> x (n, ...))")


def _add_noise(like: ck.Module, prediction: torch.Tensor) -> torch.Tensor:
    if isinstance(like, PhotometryLikelihood):
        return prediction + like.flux_err * torch.randn_like(prediction)
    if isinstance(like, PoissonLikelihood):
        rate = ((prediction + like.sky) * like.exposure_time).clamp(min=0.0)
        return torch.poisson(rate)
    if like.variance is not None:
        return prediction + like.variance.sqrt() * torch.randn_like(prediction)
    return like.noise.sample(prediction)


def simulator_of(posterior: Posterior) -> Callable[[torch.Tensor], torch.Tensor]:
    """``simulate(theta (n, dim)) -> x (n, *data_shape)``: the likelihood's model plus noise.

    The noiseless prediction of all ``n`` vectors is one ``torch.vmap`` call over the model
    graph (caskade's ``ActiveContext`` with the Posterior's flat parameter vector); the noise
    is drawn from torch's global generator (seed it, or use :func:`simulate`).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> t = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
        >>> lc = GaussianLightCurve()
        >>> lc.to_dynamic()  # t0, sigma, peak_flux
        >>> post = Posterior(PhotometryLikelihood(lc, t, torch.zeros(3), 0.1 * torch.ones(3)))
        >>> _ = torch.manual_seed(0)
        >>> x = simulator_of(post)(torch.tensor([[0.0, 2.0, 1.0]]).expand(10000, 3))
        >>> expected = torch.exp(-0.5 * (t / 2.0) ** 2)  # peak flux 1 at t0 = 0, sigma = 2
        >>> bool(((x.mean(0) - expected).abs() < 0.005).all()), x.std(0).round(decimals=2).tolist()
        (True, [0.1, 0.1, 0.1])
    """
    like = posterior.likelihood
    body = _prediction_body(like)
    joint = posterior.joint

    def predict_one(theta: torch.Tensor) -> torch.Tensor:
        with ck.ActiveContext(joint):
            joint.fill_params(theta)
            return body()

    def simulate_batch(theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            prediction = torch.vmap(predict_one)(theta)
            return _add_noise(like, prediction)

    return simulate_batch


def simulate(posterior: Posterior, n: int, seed: int = 0, batch_size: int = 1024,
             simulator: Callable[[torch.Tensor], torch.Tensor] | None = None,
             path: str | Path | None = None, progress: bool = True) -> TrainingSet:
    """Draw ``n`` pairs ``(theta, x)``: theta from the priors, x from the likelihood's simulator.

    Arguments:
        posterior: the model, its priors and its likelihood's noise (its data are not used).
        n: number of pairs. seed: seeds the prior draws and the noise (batch ``i`` uses
            ``seed + i``, so a run is reproducible for a given ``batch_size``).
        batch_size: simulations per vmapped call (and per HDF5 chunk).
        simulator: ``theta (b, dim) -> x (b, ...)`` instead of :func:`simulator_of`.
        path: an HDF5 file to stream the pairs to, chunk by chunk (the returned set then reads
            them back); ``None`` keeps them in memory.
        progress: a tqdm progress bar.

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> t = torch.linspace(-5, 5, 11, dtype=torch.float64)
        >>> lc.t0.valid, lc.sigma.valid, lc.peak_flux.valid = (-1, 1), (1, 3), (0.5, 2)
        >>> lc.to_dynamic()
        >>> post = Posterior(PhotometryLikelihood(lc, t, torch.zeros(11), 0.1 * torch.ones(11)))
        >>> pairs = simulate(post, 100, seed=1, progress=False)
        >>> tuple(pairs.theta.shape), tuple(pairs.x.shape)
        ((100, 3), (100, 11))
    """
    from tqdm.auto import tqdm

    simulator = simulator or simulator_of(posterior)
    n_batches = math.ceil(n / batch_size)
    writer = _HDF5Writer(path, n, posterior.names) if path is not None else None
    thetas, xs = [], []
    try:
        for i in tqdm(range(n_batches), desc="simulating", disable=not progress):
            size = min(batch_size, n - i * batch_size)
            theta = sample_prior(posterior, size, seed=seed + i)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i + 7919 * n_batches)  # noise: a stream apart from theta
                x = simulator(theta)
            if writer is not None:
                writer.write(i * batch_size, theta, x)
            else:
                thetas.append(theta)
                xs.append(x)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        return TrainingSet.load(path)
    return TrainingSet(torch.cat(thetas), torch.cat(xs), list(posterior.names))


class _HDF5Writer:
    def __init__(self, path, n: int, names: list[str]):
        import h5py
        self.file = h5py.File(path, "w")
        self.n = n
        self.names = names

    def write(self, start: int, theta: torch.Tensor, x: torch.Tensor) -> None:
        f = self.file
        if "theta" not in f:
            chunk, dim = theta.shape
            f.create_dataset("theta", shape=(self.n, dim), chunks=(chunk, dim),
                             dtype=theta.cpu().numpy().dtype)
            f.create_dataset("x", shape=(self.n, *x.shape[1:]), chunks=(chunk, *x.shape[1:]),
                             dtype=x.cpu().numpy().dtype)
            f.attrs["names"] = list(self.names)
        stop = start + theta.shape[0]
        f["theta"][start:stop] = theta.cpu().numpy()
        f["x"][start:stop] = x.cpu().numpy()

    def close(self) -> None:
        self.file.close()
