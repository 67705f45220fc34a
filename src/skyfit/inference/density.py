"""The interface between models and inference: a log-density of one flat parameter vector."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import torch

from ..errors import ParameterRangeError, ParameterVectorError
from .checkpoint import data_fingerprint

__all__ = ["LogDensity", "FunctionDensity"]


class ParameterBounds:
    """Parameter vectors of ``dim`` entries: ``names`` (one per entry) and ``lower`` / ``upper``
    bounds, whose dtype and device the vectors take (shared by :class:`LogDensity` and
    :class:`~skyfit.inference.BatchedDensity`)."""

    names: list[str]
    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def dim(self) -> int:
        """Number of parameters (length of a parameter vector)."""
        return len(self.names)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of parameter vectors (that of the bounds)."""
        return self.lower.dtype

    @property
    def device(self) -> torch.device:
        """Device of parameter vectors (that of the bounds)."""
        return self.lower.device


class LogDensity(ParameterBounds, abc.ABC):
    """A (possibly unnormalised) log-density ``log p(x)`` of a flat vector ``x`` of ``dim`` entries.

    This is the whole interface the inference layer sees, never a model. Subclasses set
    ``names`` (one per entry of ``x``), ``lower`` / ``upper`` (support bounds, ``-inf`` / ``inf``
    where open) and implement :meth:`log_prob` for ``x`` of shape ``(..., dim)`` returning shape
    ``(...)``: a batch of points is evaluated in one call. They may override :meth:`initial`
    (a default start, e.g. a model's current values) and set :attr:`periodic`.

    The interface: :attr:`names`, :attr:`lower`, :attr:`upper`, :attr:`periodic`,
    :meth:`initial`, :meth:`check_inside` (the one support check, raising
    :class:`~skyfit.errors.ParameterRangeError`), :meth:`log_prob` and :meth:`value_and_grad`,
    and :meth:`fingerprint` (what a checkpoint records to refuse resuming on other data).
    ``dim``, ``dtype`` and ``device`` follow from ``names`` and the bounds.

    Example:
        >>> import torch
        >>> class StandardNormal(LogDensity):
        ...     def __init__(self, dim):
        ...         self.names = [f"x{i}" for i in range(dim)]
        ...         self.lower = torch.full((dim,), -torch.inf, dtype=torch.float64)
        ...         self.upper = torch.full((dim,), torch.inf, dtype=torch.float64)
        ...     def log_prob(self, x):
        ...         return -0.5 * (x**2).sum(-1)
        >>> d = StandardNormal(2)
        >>> d.dim, d(torch.ones(3, 2, dtype=torch.float64))  # a batch of three points in one call
        (2, tensor([-1., -1., -1.], dtype=torch.float64))
        >>> d.value_and_grad(torch.ones(2, dtype=torch.float64))
        (tensor(-1., dtype=torch.float64), tensor([-1., -1.], dtype=torch.float64))
    """

    @property
    def units(self) -> dict[str, str]:
        """``{name: units}`` of the entries whose units the density knows (a Posterior knows
        every Param's); empty by default."""
        return {}

    def fingerprint(self) -> dict:
        """What identifies this problem in a checkpoint (see
        :func:`~skyfit.inference.data_fingerprint`): by default the parameter names and the
        bounds; a :class:`~skyfit.Posterior` adds a hash of every data array of its likelihood.
        Resumable samplers store it and refuse to resume when it differs.

        Example:
            >>> d = FunctionDensity(lambda x: -(x**2).sum(-1), ["a", "b"], lower=0.0)
            >>> d.fingerprint()["names"], sorted(d.fingerprint()["arrays"])
            (['a', 'b'], ['lower', 'upper'])
        """
        return data_fingerprint(self.names, lower=self.lower, upper=self.upper)

    @property
    def periodic(self) -> torch.Tensor:
        """``(dim,)`` bool mask of the entries that wrap around their bounds (angles); none by
        default. Samplers and optimisers do not use it yet: they treat every entry as bounded."""
        return torch.zeros(self.dim, dtype=torch.bool, device=self.device)

    def initial(self) -> torch.Tensor:
        """A default start point ``(dim,)`` inside the support (used by ``init=None``).

        The base class has none: pass ``init=`` a point, a named dict, a previous result or a
        strategy such as :func:`~skyfit.inference.init_to_feasible`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no initial() start point: pass init= a ({self.dim},) "
            "vector, a {name: value} dict, a previous result (MAPResult, LaplaceResult, "
            "VIResult, Samples) or a strategy such as init_to_feasible()")

    def set(self, x) -> None:
        """Write ``x`` into the model behind the density; a density without a model has none."""
        raise TypeError(f"{type(self).__name__} has no model to write values into")

    @abc.abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x (..., dim)``, shape ``(...)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

    def as_tensor(self, x) -> torch.Tensor:
        """``x`` as a tensor of this density's dtype/device, checked for length and finiteness."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ParameterVectorError(
                f"parameter vector has trailing length {tuple(x.shape)[-1:] or 0}, expected "
                f"{self.dim} ({', '.join(self.names)})"
            )
        if not torch.isfinite(x).all():
            bad = sorted({self.names[i] for i in torch.nonzero(~torch.isfinite(x))[:, -1].tolist()})
            raise ParameterVectorError(f"parameter vector has NaN or inf entries for: {bad}")
        return x

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p`` and its gradient for a batch ``x (..., dim)``, in one backward pass."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = self.log_prob(x)
            if not logp.requires_grad:  # e.g. -inf constant outside the support everywhere
                return logp.detach(), torch.zeros_like(x)
            total = logp if logp.ndim == 0 else logp.sum()
            (grad,) = torch.autograd.grad(total, x, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(x)
        return logp.detach(), grad

    def check_inside(self, x) -> None:
        """Raise :class:`~skyfit.errors.ParameterRangeError` if a point of ``x (..., dim)`` lies
        outside ``[lower, upper]``, naming every offending entry with its value and bounds, and
        the offending points of a batch (the first three)."""
        x = self.as_tensor(x)
        rows = x.reshape(-1, self.dim)
        bad = (rows < self.lower) | (rows > self.upper)
        if not bool(bad.any()):
            return
        parts = []
        bad_rows = torch.nonzero(bad.any(1)).flatten().tolist()
        for r in bad_rows[:3]:
            v = rows[r]
            msg = ", ".join(f"{self.names[i]}={v[i].item():g} not in "
                            f"[{self.lower[i].item():g}, {self.upper[i].item():g}]"
                            for i in torch.nonzero(bad[r]).flatten().tolist())
            parts.append(f"point {r} of {rows.shape[0]}: {msg}" if rows.shape[0] > 1 else msg)
        more = f" (and {len(bad_rows) - 3} more points)" if len(bad_rows) > 3 else ""
        raise ParameterRangeError(
            "parameter values outside their valid range: " + "; ".join(parts) + more)


class FunctionDensity(LogDensity):
    """Wrap a torch function as a :class:`LogDensity` (for tests, toy targets, custom models).

    Arguments:
        fn: ``fn(x)`` for ``x (..., dim)`` returning ``(...)``; with ``batched=False`` it takes one
            ``(dim,)`` vector and is vectorised with ``torch.vmap``.
        names: parameter names, or an int ``dim`` for ``x0, x1, ...``.
        lower, upper: support bounds (default unbounded).
        initial: the default start point returned by :meth:`initial` (default: none, so
            ``init=None`` asks for a start).
        periodic: names (or a ``(dim,)`` bool mask) of entries that wrap around their bounds.

    Example:
        >>> import torch
        >>> d = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 3)
        >>> d(torch.zeros(4, 3)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        names: Sequence[str] | int,
        lower=None,
        upper=None,
        batched: bool = True,
        dtype: torch.dtype = torch.float64,
        device=None,
        initial=None,
        periodic=None,
    ):
        self.names = [f"x{i}" for i in range(names)] if isinstance(names, int) else list(names)
        d = len(self.names)
        kw = dict(dtype=dtype, device=device)
        lower = -torch.inf if lower is None else lower
        upper = torch.inf if upper is None else upper
        self.lower = torch.as_tensor(lower, **kw).expand(d).clone()
        self.upper = torch.as_tensor(upper, **kw).expand(d).clone()
        self.fn = fn
        self.batched = batched
        self._initial = None if initial is None else self.as_tensor(initial).reshape(d)
        if periodic is None:
            periodic = torch.zeros(d, dtype=torch.bool)
        elif not isinstance(periodic, torch.Tensor):
            periodic = torch.tensor([n in set(periodic) for n in self.names])
        self._periodic = periodic.to(dtype=torch.bool, device=self.lower.device).reshape(d)

    @property
    def periodic(self) -> torch.Tensor:
        """Which parameters are periodic (bool, ``(dim,)``), as given to the constructor."""
        return self._periodic

    def initial(self) -> torch.Tensor:
        """The start point given to the constructor, else the base class's default."""
        if self._initial is None:
            return super().initial()
        return self._initial.clone()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``fn`` at ``x`` of shape ``(..., dim)``; unbatched functions are ``torch.vmap``-ped."""
        if self.batched or x.ndim == 1:
            return self.fn(x)
        flat = x.reshape(-1, x.shape[-1])
        return torch.vmap(self.fn)(flat).reshape(x.shape[:-1])
