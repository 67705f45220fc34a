"""Start points of every inference algorithm: one resolver and numpyro-style ``init_to_*``
strategies.

``fit_map``, ``laplace``, ``fit_vi``, ``sample_emcee``, ``sample_nuts`` and ``sample_hmc`` all
turn their ``init=`` argument into starts with :func:`resolve_start`. ``init`` may be

- ``None``: :func:`init_to_initial` (``density.initial()``, e.g. a model's current values);
- a ``(dim,)`` vector or a ``{name: value}`` dict: :func:`init_to_value`;
- an ``(n, dim)`` array: one explicit start per chain / walker;
- a previous result (:class:`MAPResult`, :class:`GaussianApproximation` such as a Laplace or VI
  result, :class:`Samples`), converted by :func:`as_start`;
- a strategy: :func:`init_to_value`, :func:`init_to_initial`, :func:`init_to_feasible`,
  :func:`init_to_uniform`, :func:`init_to_sample`.

A strategy returns a :class:`Start`: ``n`` positions in the space the algorithm moves in, and,
when the start knows one, a covariance in the unconstrained space (a sampler's first metric).
Nothing here runs a fit: a start is only ever what was asked for.

References:
    numpyro's initialization strategies, ``numpyro/infer/initialization.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..errors import ParameterVectorError
from .approximations import GaussianApproximation, MAPResult
from .circular import wrap_periodic
from .density import LogDensity
from .results import Samples
from .start_strategy import InitStrategy, RandomSource, Start, _seeded, check_finite
from .transforms import UnconstrainedDensity

__all__ = [
    "Start", "RandomSource", "InitStrategy", "init_to_value", "init_to_initial",
    "init_to_feasible", "init_to_uniform", "init_to_sample", "as_start", "as_strategy",
    "resolve_start", "resolve_point", "resolve_gaussian", "check_finite",
]


def _ball(u: UnconstrainedDensity, x: torch.Tensor, n: int, random: RandomSource, space: str,
          scale) -> torch.Tensor:
    """``n`` starts around the point ``x (dim,)`` (checked inside the support here first)."""
    u.density.check_inside(x)
    check_finite(u.density, x)
    base = u.to_unconstrained(x) if space == "unconstrained" else x
    if callable(scale):
        scale = scale(x)
    if scale is None or (not torch.is_tensor(scale) and float(scale) == 0.0):
        return base.expand(n, u.dim).clone()
    noise = random.normal((n, u.dim))
    if torch.is_tensor(scale):
        return base + noise * scale
    return base + float(scale) * noise


def _name_of(key: str, names: list[str]) -> str | None:
    """``key`` itself or the one name ending with ``.key`` (as priors take the unique end of
    a parameter's path), else None."""
    if key in names:
        return key
    ends = [n for n in names if n.endswith(f".{key}")]
    return ends[0] if len(ends) == 1 else None


def _as_vector(density: LogDensity, values) -> torch.Tensor:
    """A ``(dim,)`` or ``(n, dim)`` tensor from a vector, an array or a ``{name: value}`` dict
    (a name or its unique end, like priors: ``"gamma_1"`` for ``"shear.gamma_1"``); periodic
    entries wrapped into their period."""
    if isinstance(values, Mapping):
        names = list(density.names)
        resolved = {key: _name_of(key, names) for key in values}
        unknown = sorted(key for key, name in resolved.items() if name is None)
        missing = [n for n in names if n not in resolved.values()]
        if unknown or missing or len(set(resolved.values())) < len(resolved):
            raise ParameterVectorError(
                f"init dict: unknown or ambiguous names {unknown}, missing names {missing}"
                f"{'' if unknown or missing else ' (two keys name one parameter)'}; the "
                f"density's names are {names}")
        by_name = {name: values[key] for key, name in resolved.items()}
        values = [float(by_name[n]) for n in names]
    try:
        x = density.as_tensor(values).detach()
    except (TypeError, RuntimeError) as err:
        raise TypeError(
            f"init of type {type(values).__name__} is not a start: pass a ({density.dim},) "
            "vector, an (n, dim) array, a {name: value} dict, a MAPResult, a "
            "GaussianApproximation (LaplaceResult, VIResult), Samples or an init_to_* "
            "strategy") from err
    if x.ndim not in (1, 2):
        raise ParameterVectorError(f"init has shape {tuple(x.shape)}; expected ({density.dim},) "
                                   f"or (n, {density.dim}) (names {list(density.names)})")
    return wrap_periodic(x, density.periodic, density.lower, density.upper)


class _Value(InitStrategy):
    def __init__(self, values):
        self.values = values
        if not isinstance(values, Mapping):
            shape = tuple(np.shape(values.detach().cpu() if torch.is_tensor(values) else values))
            self.n_points = shape[0] if len(shape) == 2 else None

    def __call__(self, u, n, random, space, scale):
        x = _as_vector(u.density, self.values)
        if x.ndim == 2:
            if x.shape[0] != n:
                raise ParameterVectorError(
                    f"init has shape {tuple(x.shape)}; expected ({u.dim},) or one start per "
                    f"chain ({n}, {u.dim})")
            u.density.check_inside(x)
            check_finite(u.density, x)
            return Start(u.to_unconstrained(x) if space == "unconstrained" else x.clone(), None)
        return Start(_ball(u, x, n, random, space, scale), None)


def init_to_value(values) -> InitStrategy:
    """Start at ``values``: a ``(dim,)`` vector or ``{name: value}`` dict (several chains start in
    a ball of the algorithm's ``scale`` around it), or an ``(n, dim)`` array of explicit starts.

    Example:
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), ["a", "b"])
        >>> resolve_point(d, init_to_value({"a": 1.0, "b": 2.0})).tolist()
        [1.0, 2.0]
    """
    return _Value(values)


class _Initial(InitStrategy):
    def __call__(self, u, n, random, space, scale):
        return _Value(u.density.initial())(u, n, random, space, scale)


def init_to_initial() -> InitStrategy:
    """Start at ``density.initial()`` (a Posterior: the model's current values); the default.

    Example:
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), ["a", "b"], initial=[0.5, -1.0])
        >>> resolve_point(d, init_to_initial()).tolist(), resolve_point(d, None).tolist()
        ([0.5, -1.0], [0.5, -1.0])
    """
    return _Initial()


class _Uniform(InitStrategy):
    def __init__(self, radius: float):
        if not float(radius) >= 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.radius = float(radius)

    def __call__(self, u, n, random, space, scale):
        if self.radius == 0.0:  # the centre of the support, with the algorithm's ball
            x = u.to_constrained(torch.zeros(u.dim, dtype=u.dtype, device=u.device))
            return Start(_ball(u, x, n, random, space, scale), None)
        z = (2 * random.uniform((n, u.dim)) - 1) * self.radius
        check_finite(u.density, u.to_constrained(z))
        return Start(z if space == "unconstrained" else u.to_constrained(z), None)


def init_to_uniform(radius: float = 2.0) -> InitStrategy:
    """Start each chain uniformly in ``(-radius, radius)`` of the unconstrained space (for a
    bounded parameter: around the middle of its range), as numpyro's ``init_to_uniform``.

    Example:
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), ["f"], lower=0.0, upper=1.0)
        >>> x = resolve_start(d, init_to_uniform(1.0), 1000, space="constrained").position
        >>> bounds = torch.sigmoid(torch.tensor([-1.0, 1.0], dtype=torch.float64))  # logit +-1
        >>> bool(((x > bounds[0]) & (x < bounds[1])).all()), round(float(x.mean()), 1)
        (True, 0.5)
    """
    return _Uniform(radius)


def init_to_feasible() -> InitStrategy:
    """Start at the centre of the support: the middle of each bounded range, ``bound + 1`` on a
    one-sided range, 0 on an open one (``init_to_uniform(radius=0)``).

    Example:
        >>> from skyfit.inference import FunctionDensity, resolve_start
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), 3, [0, 1, -np.inf], [2, np.inf, np.inf])
        >>> resolve_start(d, init_to_feasible(), 1, space="constrained").position
        tensor([[1., 2., 0.]], dtype=torch.float64)
    """
    return _Uniform(0.0)


def _positive_definite(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric ``cov`` with eigenvalues clipped to at least ``1e-10`` times the largest."""
    cov = 0.5 * (cov + cov.T)
    if int(torch.linalg.cholesky_ex(cov)[1]) == 0:
        return cov
    w, v = torch.linalg.eigh(cov)
    w = w.clamp(min=1e-10 * w.abs().max().clamp(min=1e-300))
    return (v * w) @ v.T


def _draw_inside(density: LogDensity, mean, cov, n: int, random: RandomSource) -> torch.Tensor:
    """``n`` draws of N(mean, cov) strictly inside the bounds (redrawn up to 100 times, then
    the mean)."""
    chol = torch.linalg.cholesky(_positive_definite(cov))
    x = mean.expand(n, mean.shape[0]).clone()
    todo = torch.ones(n, dtype=torch.bool, device=mean.device)
    for _ in range(100):
        cand = mean + random.normal((n, mean.shape[0])) @ chol.T
        ok = ((cand > density.lower) & (cand < density.upper)).all(-1) & todo
        x = torch.where(ok[:, None], cand, x)
        todo = todo & ~ok
        if not bool(todo.any()):
            break
    return x


class _Sample(InitStrategy):
    def __init__(self, approximation: GaussianApproximation):
        self.approximation = approximation

    def gaussian(self, u):
        a, kw = self.approximation, dict(dtype=u.dtype, device=u.device)
        if len(a.names) != u.dim:
            raise ParameterVectorError(f"the start's approximation has {len(a.names)} "
                                       f"parameters, the density {u.dim}")
        mean, cov = torch.as_tensor(a.mean, **kw), torch.as_tensor(a.covariance, **kw)
        if a.space == "unconstrained":
            return mean, _positive_definite(cov)
        u.density.check_inside(mean)
        check_finite(u.density, mean)
        # covariance in the unconstrained space: J cov J^T, J = d to_unconstrained / dx (diagonal)
        with torch.enable_grad():
            m = mean.detach().clone().requires_grad_(True)
            (jac,) = torch.autograd.grad(u.to_unconstrained(m).sum(), m)
        cov_z = cov * jac[:, None] * jac[None, :]
        cov_z = 0.5 * (cov_z + cov_z.T)
        ok = bool(torch.isfinite(cov_z).all()) and bool((torch.diagonal(cov_z) > 0).all())
        return u.to_unconstrained(mean), (_positive_definite(cov_z) if ok else None)

    def __call__(self, u, n, random, space, scale):
        a = self.approximation
        mean_z, cov_z = self.gaussian(u)
        if a.space == "unconstrained":
            z = mean_z + random.normal((n, u.dim)) @ torch.linalg.cholesky(cov_z).T
            return Start(z if space == "unconstrained" else u.to_constrained(z), cov_z)
        mean = torch.as_tensor(a.mean, dtype=u.dtype, device=u.device)
        cov = torch.as_tensor(a.covariance, dtype=u.dtype, device=u.device)
        x = _draw_inside(u.density, mean, cov, n, random)
        return Start(u.to_unconstrained(x) if space == "unconstrained" else x, cov_z)


def init_to_sample(approximation: GaussianApproximation) -> InitStrategy:
    """Start at draws of a Gaussian approximation (Laplace or VI) inside the support; its
    covariance, mapped to the unconstrained space, is a sampler's first metric.

    Example:
        >>> from skyfit.inference import FunctionDensity, laplace, resolve_start
        >>> d = FunctionDensity(lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1), 2)  # N(1, identity)
        >>> start = init_to_sample(laplace(d, torch.ones(2)))
        >>> x = resolve_start(d, start, 4000, space="constrained").position
        >>> x.mean(0).round(decimals=1), x.std(0).round(decimals=1)
        (tensor([1., 1.], dtype=torch.float64), tensor([1., 1.], dtype=torch.float64))
    """
    return _Sample(approximation)


class _Draws(InitStrategy):
    def __init__(self, samples: Samples):
        self.samples = samples

    def gaussian(self, u):
        flat = u.to_unconstrained(torch.as_tensor(np.asarray(self.samples.draws), dtype=u.dtype,
                                                  device=u.device).reshape(-1, u.dim))
        cov = self(u, 1, _seeded(u), "unconstrained", None).covariance
        return flat.mean(0), cov

    def __call__(self, u, n, random, space, scale):
        kw = dict(dtype=u.dtype, device=u.device)
        draws = torch.as_tensor(np.asarray(self.samples.draws), **kw)  # (chain, draw, dim)
        if draws.ndim != 3 or draws.shape[-1] != u.dim or draws.shape[1] == 0:
            raise ParameterVectorError(f"the start's Samples have draws {tuple(draws.shape)}; "
                                       f"expected (chains, draws >= 1, {u.dim})")
        last = draws[:, -1]
        x = last[torch.arange(n, device=u.device) % last.shape[0]]
        u.density.check_inside(x)
        check_finite(u.density, x)
        flat = u.to_unconstrained(draws.reshape(-1, u.dim))
        cov = None
        if flat.shape[0] > u.dim + 1:
            cov = torch.cov(flat.T).reshape(u.dim, u.dim)
            cov = _positive_definite(cov) if bool(torch.isfinite(cov).all()) else None
        return Start(u.to_unconstrained(x) if space == "unconstrained" else x, cov)


def as_start(result) -> InitStrategy:
    """The start a previous result gives: a :class:`MAPResult` its optimum
    (:func:`init_to_value`), a :class:`GaussianApproximation` (Laplace, VI) draws of it
    (:func:`init_to_sample`), :class:`Samples` the last draw of each chain (repeated when more
    chains are asked for) with the draws' covariance as metric.

    Example:
        >>> from skyfit.inference import FunctionDensity, resolve_start
        >>> chain = np.array([[[0.0, 0.0], [2.0, 1.0], [1.0, 2.0]]])  # one chain of three draws
        >>> previous = Samples(chain, ["x0", "x1"], chain[..., 0], "demo")
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), 2)
        >>> resolve_start(d, as_start(previous), 1, space="constrained").position  # its last draw
        tensor([[1., 2.]], dtype=torch.float64)
    """
    if isinstance(result, MAPResult):
        return init_to_value(result.x)
    if isinstance(result, GaussianApproximation):
        return init_to_sample(result)
    if isinstance(result, Samples):
        return _Draws(result)
    raise TypeError(f"as_start takes a MAPResult, a GaussianApproximation (LaplaceResult, "
                    f"VIResult) or Samples, got {type(result).__name__}")


def as_strategy(init) -> InitStrategy:
    """The strategy behind an ``init=`` argument (see the module docstring)."""
    if init is None:
        return init_to_initial()
    if isinstance(init, InitStrategy):
        return init
    if isinstance(init, (MAPResult, GaussianApproximation, Samples)):
        return as_start(init)
    return init_to_value(init)


def resolve_start(density: LogDensity, init, n: int, random: RandomSource | None = None,
                  space: str = "unconstrained", scale=None) -> Start:
    """``n`` starts for ``density`` from ``init`` (see the module docstring).

    Arguments:
        density: the density to start (its own, constrained parameters).
        init: ``None``, a vector, a dict, an ``(n, dim)`` array, a result or a strategy.
        n: number of starts (chains, walkers; 1 for an optimiser).
        random: the random stream of the draws (default: a torch generator seeded 0).
        space: ``"unconstrained"`` (HMC, NUTS, VI) or ``"constrained"`` (emcee, fit_map).
        scale: spread of the ball around a single start point, in ``space``: a number, a
            ``(dim,)`` tensor or a function of the point giving one.

    Example:
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), ["s"], lower=0.0)  # s > 0: z = log s
        >>> start = resolve_start(d, [2.0], 4, space="unconstrained", scale=0.1)
        >>> tuple(start.position.shape), round(float(start.position.mean()), 1)  # around log 2
        ((4, 1), 0.7)
    """
    u = UnconstrainedDensity(density)
    random = _seeded(u) if random is None else random
    return as_strategy(init)(u, int(n), random, space, scale)


def resolve_gaussian(density: LogDensity, init) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mean, covariance or None)`` in the unconstrained space (the start of a variational
    fit): a Gaussian result's moments, the draws' moments, or one point and no covariance."""
    return as_strategy(init).gaussian(UnconstrainedDensity(density))


def resolve_point(density: LogDensity, init) -> torch.Tensor:
    """One start point ``(dim,)`` in the constrained space (for fit_map and laplace)."""
    return resolve_start(density, init, 1, space="constrained").position[0].detach().clone()
