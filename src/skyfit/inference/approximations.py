"""Point and Gaussian approximations of a posterior: the results of fit_map, laplace and fit_vi.

They are plain data (tensors, names, settings). :class:`GaussianApproximation` is the one type
of Gaussian result: :func:`~skyfit.inference.laplace` returns it in the constrained (physical)
space, :func:`~skyfit.inference.fit_vi` in the unconstrained space of
:class:`~skyfit.inference.UnconstrainedDensity`; both hold torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .._display import Table, tensor_rows
from .density import LogDensity
from .result_files import load_result, save_result
from .results import Samples

__all__ = ["MAPResult", "GaussianApproximation", "SPACES"]

SPACES = ("constrained", "unconstrained")


def units_of(density) -> dict[str, str]:
    """``{name: units}`` of a density's parameters, where it knows them (a Posterior does)."""
    return dict(density.units)


def _quantity(names: list[str], values: torch.Tensor, units: dict, name: str):
    from ..units import to_quantity

    if name not in names:
        raise KeyError(f"no parameter {name!r}; the parameters are {names}")
    return to_quantity(float(values[names.index(name)]), units.get(name, ""))


@dataclass(repr=False)
class MAPResult:
    """The outcome of :func:`~skyfit.inference.fit_map`.

    Attributes:
        x: the optimum, ``(dim,)``. names: parameter names. log_density: ``log p`` at ``x``.
        n_evals: log-density (+ gradient) evaluations, counted as work: a batched call of ``k``
            points counts ``k``, an exact Hessian ``dim``. grad_norm: max |gradient x scale| over
            the free entries (scale: the preconditioning ``1/sqrt(curvature)``, so the gradient
            is in log p per posterior standard deviation).
        newton_decrement: ``g^T (-H)^-1 g / 2``, the log-density still to gain by a Newton step
            (nan if the Hessian was not used or not negative definite). converged: see
            :func:`~skyfit.inference.verdict.convergence_verdict`: finite, no parameter pinned at
            a bound with the gradient pushing out, and a small decrement or scaled gradient.
        message: scipy's message. wall_time: seconds. density: the fitted density.
        pinned: names of parameters pinned at a bound with the gradient pushing outward.
        reason: the verdict in words (names pinned parameters and suggests a remedy).
        optima: distinct optima of a multi-start fit as ``(log p, count)``, best first.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity, fit_map
        >>> d = FunctionDensity(lambda x: -((x - 0.3) ** 2).sum(-1), ["h"], lower=0.0, upper=1.0)
        >>> result = fit_map(d, torch.tensor([0.9]))
        >>> {k: round(v, 6) for k, v in result.values.items()}, result.converged, result.pinned
        ({'h': 0.3}, True, [])
    """

    x: torch.Tensor
    names: list[str]
    log_density: float
    n_evals: int
    grad_norm: float
    newton_decrement: float
    converged: bool
    message: str
    wall_time: float
    density: LogDensity | None = field(repr=False)
    units: dict = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)
    reason: str = ""
    optima: list[tuple[float, int]] = field(default_factory=list)

    def table(self) -> Table:
        """Summary: the optimum of each parameter, with its units."""
        rows = [[*row, self.units.get(row[0], "")]
                for row in tensor_rows(self.names, {"value": self.x})]
        title = (f"MAPResult: {len(self.names)} parameters, log p = {self.log_density:.6g}, "
                 f"converged={self.converged} after {self.n_evals} evaluations")
        return Table(title, ["parameter", "value", "units"], rows)

    def __repr__(self) -> str:
        return str(self.table())

    def _repr_html_(self) -> str:
        return self.table().html()

    def quantity(self, name: str):
        """The optimum of parameter ``name`` as an astropy Quantity in its declared units."""
        return _quantity(self.names, self.x, self.units, name)

    @property
    def values(self) -> dict[str, float]:
        """``{name: value}`` of the optimum."""
        return dict(zip(self.names, self.x.tolist()))

    def apply(self) -> None:
        """Write the optimum into the model's Params (:meth:`LogDensity.set`)."""
        if self.density is None:
            raise ValueError("this result has no density (it was loaded from a file): pass "
                             "density= to MAPResult.load")
        self.density.set(self.x)

    def save(self, path) -> None:
        """Write this result to the safetensors file ``path`` (JSON fields + tensors; the
        density is not stored)."""
        save_result(self, path)

    @classmethod
    def load(cls, path, density: LogDensity | None = None) -> MAPResult:
        """The result :meth:`save` wrote; ``density`` (optional) is the fitted density."""
        return load_result(cls, path, density=density)


@dataclass(repr=False)
class GaussianApproximation:
    """``N(mean, covariance)`` approximating a posterior, in an explicit parameter space.

    Attributes:
        mean: ``(dim,)`` tensor. covariance: ``(dim, dim)`` tensor. names: parameter names.
        space: ``"constrained"`` (the density's own parameters, e.g. a Laplace approximation)
            or ``"unconstrained"`` (the space of :class:`UnconstrainedDensity`, e.g. VI).

    Example:
        >>> import torch
        >>> g = GaussianApproximation(torch.zeros(2, dtype=torch.float64),
        ...                           torch.eye(2, dtype=torch.float64), ["a", "b"])
        >>> g.sample(1000, seed=0).draws.shape, g.std.tolist()
        ((1, 1000, 2), [1.0, 1.0])
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    names: list[str]
    space: str = "constrained"
    units: dict = field(default_factory=dict)

    def summary(self) -> Table:
        """Summary: mean and standard deviation of each parameter, with its units."""
        rows = [[*row, self.units.get(row[0], "")]
                for row in tensor_rows(self.names, {"mean": self.mean, "std": self.std})]
        return Table(f"{type(self).__name__}: {len(self.names)} parameters, {self.space} space"
                     f"{self._summary_extra()}", ["parameter", "mean", "std", "units"], rows)

    def _summary_extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary().html()

    def quantity(self, name: str):
        """The mean of parameter ``name`` as an astropy Quantity in its declared units (a
        constrained-space approximation only: an unconstrained mean is not a physical value)."""
        if self.space != "constrained":
            raise ValueError("the mean of an unconstrained-space approximation is not a "
                             "parameter value: use result.sample(...) and its summary")
        return _quantity(self.names, self.mean, self.units, name)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        dim = len(self.names)
        if tuple(self.mean.shape) != (dim,) or tuple(self.covariance.shape) != (dim, dim):
            raise ValueError(f"mean {tuple(self.mean.shape)} and covariance "
                             f"{tuple(self.covariance.shape)} do not fit {dim} names")

    def save(self, path) -> None:
        """Write this approximation to the safetensors file ``path`` (JSON fields + tensors;
        a fitted density, and VI's torch module ``q``, are not stored)."""
        save_result(self, path)

    @classmethod
    def load(cls, path, **not_data):
        """The approximation :meth:`save` wrote, of this class; ``not_data``: ``density=``
        (and VI's ``q=``) where needed (``VIResult.sample`` needs the density)."""
        return load_result(cls, path, **not_data)

    @property
    def std(self) -> torch.Tensor:
        """Marginal standard deviations, ``(dim,)``."""
        return self.covariance.diagonal().sqrt()

    @property
    def correlation(self) -> torch.Tensor:
        """Correlation matrix ``cov_ij / (std_i std_j)``."""
        s = self.std
        return self.covariance / (s[:, None] * s[None, :])

    def propagate(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        """Delta method: mean and covariance of ``fn(x)`` for ``x ~ N(mean, covariance)``.

        ``fn`` maps the flat vector (in this approximation's space) to any tensor (a derived
        quantity such as a peak time or a magnification); returns ``(value, covariance)`` with
        ``covariance = J C J^T`` where ``J`` is the autograd Jacobian of ``fn`` at the mean.
        """
        value = fn(self.mean)
        J = torch.autograd.functional.jacobian(lambda v: fn(v).reshape(-1), self.mean)
        J = J.reshape(-1, self.mean.shape[-1])
        return value.detach(), J @ self.covariance @ J.T

    def draw(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` draws ``(n, dim)`` of ``N(mean, covariance)`` in this approximation's space."""
        g = torch.Generator(device=self.mean.device).manual_seed(seed)
        L = torch.linalg.cholesky(self.covariance)
        eps = torch.randn(n, self.mean.shape[0], generator=g, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + eps @ L.T

    def sample(self, n: int = 4000, seed: int = 0) -> Samples:
        """Draws from the Gaussian, as one chain of :class:`Samples` (in its own space)."""
        draws = self.draw(n, seed)
        return Samples(draws=draws[None].cpu().numpy(), names=list(self.names),
                       log_density=np.full((1, n), np.nan), sampler="gaussian",
                       units=dict(self.units) if self.space == "constrained" else {})

    def table(self, truth: dict | None = None) -> str:
        """Plain-text table of mean +- standard deviation (and truth when given)."""
        head = "value" if self.space == "constrained" else "value (unconstr.)"
        rows = [f"{'parameter':<28}{head:>14}{'+-':>12}" + (f"{'truth':>14}" if truth else "")]
        for name, v, s in zip(self.names, self.mean.tolist(), self.std.tolist()):
            line = f"{name:<28}{v:>14.6g}{s:>12.3g}"
            if truth:
                line += f"{truth.get(name, float('nan')):>14.6g}"
            rows.append(line)
        return "\n".join(rows)
