"""The interface of a start strategy: what a strategy returns (:class:`Start`), the random stream
it draws from (:class:`RandomSource`), the rule itself (:class:`InitStrategy`), and the check
that a start has a finite log-density. The strategies are in
:mod:`skyfit.inference.initialization`, which re-exports these names."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..errors import LogDensityError
from .density import LogDensity
from .transforms import UnconstrainedDensity

__all__ = ["Start", "RandomSource", "InitStrategy", "check_finite"]


class Start(NamedTuple):
    """Resolved starts: ``position (n, dim)`` in the space asked for, and ``covariance`` in the
    unconstrained space (positive definite): ``(dim, dim)`` shared by every start, ``(n, dim,
    dim)`` one per start (a start per chain of many objects), or ``None``."""

    position: torch.Tensor
    covariance: torch.Tensor | None


class RandomSource:
    """Standard normal and uniform draws from the caller's generator (torch or numpy), so a
    start uses the same random stream as the algorithm it starts."""

    def __init__(self, normal: Callable, uniform: Callable):
        self.normal, self.uniform = normal, uniform

    @classmethod
    def from_torch(cls, generator: torch.Generator, dtype, device) -> RandomSource:
        kw = dict(generator=generator, dtype=dtype, device=device)
        return cls(lambda shape: torch.randn(shape, **kw), lambda shape: torch.rand(shape, **kw))

    @classmethod
    def from_numpy(cls, rng: np.random.Generator, dtype, device) -> RandomSource:
        kw = dict(dtype=dtype, device=device)
        return cls(lambda shape: torch.as_tensor(rng.standard_normal(shape), **kw),
                   lambda shape: torch.as_tensor(rng.random(shape), **kw))


def _seeded(u) -> RandomSource:
    """A generator seeded 0: a start drawn without the caller's stream is still reproducible."""
    return RandomSource.from_torch(torch.Generator(device=u.device).manual_seed(0), u.dtype,
                                   u.device)


class InitStrategy(abc.ABC):
    """A rule giving ``n`` starts for a density. ``n_points``: the number of starts the strategy
    fixes itself (explicit per-chain starts), else ``None``."""

    n_points: int | None = None

    @abc.abstractmethod
    def __call__(self, u: UnconstrainedDensity, n: int, random: RandomSource, space: str,
                 scale) -> Start:
        """``n`` starts in ``space`` ("constrained" or "unconstrained"); ``scale`` is the spread
        of a ball around a single point in that space (``None`` or 0: no ball)."""

    def gaussian(self, u: UnconstrainedDensity) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean, covariance or None)`` in the unconstrained space: the Gaussian a variational
        fit starts from. A point strategy gives its point and no covariance."""
        return self(u, 1, _seeded(u), "unconstrained", None).position[0], None


def check_finite(density: LogDensity, x: torch.Tensor) -> None:
    """Raise :class:`~skyfit.errors.LogDensityError` naming the values of the first start of
    ``x (dim,)`` or ``(n, dim)`` (inside the support) where the log-density is not finite."""
    with torch.no_grad():
        logp = density.log_prob(x).reshape(-1)
    bad = ~torch.isfinite(logp) | (logp == torch.inf)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        point = x.reshape(-1, density.dim)[i]
        values = ", ".join(f"{n}={v:g}" for n, v in zip(density.names, point.tolist()))
        where = f" of start {i}" if x.ndim == 2 and x.shape[0] > 1 else ""
        raise LogDensityError(
            f"log-density is {logp[i].item()} at the start point{where} ({values}); start "
            "inside the support where the model is defined (check the model, data and priors "
            "at these values, or pass another init)")
