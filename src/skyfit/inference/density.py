"""The interface between models and inference: a log-density of one flat parameter vector."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import torch

from ..errors import ParameterVectorError

__all__ = ["LogDensity", "FunctionDensity"]


class LogDensity(abc.ABC):
    """A (possibly unnormalised) log-density ``log p(x)`` of a flat vector ``x`` of ``dim`` entries.

    Inference code only sees this interface, never a model. Subclasses set ``names`` (one per
    entry of ``x``), ``lower`` / ``upper`` (support bounds, ``-inf`` / ``inf`` where open) and
    implement :meth:`log_prob` for ``x`` of shape ``(..., dim)`` returning shape ``(...)``:
    a batch of points is evaluated in one call.
    """

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

    def check_inside(self, x: torch.Tensor) -> None:
        """Raise :class:`ParameterVectorError` naming the entries of ``x`` outside the support."""
        x = self.as_tensor(x)
        bad = (x < self.lower) | (x > self.upper)
        if bad.any():
            idx = sorted(set(torch.nonzero(bad)[:, -1].tolist()))
            msg = ", ".join(
                f"{self.names[i]} (bounds [{self.lower[i].item():g}, {self.upper[i].item():g}])"
                for i in idx
            )
            raise ParameterVectorError(f"parameter values outside their valid range: {msg}")


class FunctionDensity(LogDensity):
    """Wrap a torch function as a :class:`LogDensity` (for tests, toy targets, custom models).

    Arguments:
        fn: ``fn(x)`` for ``x (..., dim)`` returning ``(...)``; with ``batched=False`` it takes one
            ``(dim,)`` vector and is vectorised with ``torch.vmap``.
        names: parameter names, or an int ``dim`` for ``x0, x1, ...``.
        lower, upper: support bounds (default unbounded).

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

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``fn`` at ``x`` of shape ``(..., dim)``; unbatched functions are ``torch.vmap``-ped."""
        if self.batched or x.ndim == 1:
            return self.fn(x)
        flat = x.reshape(-1, x.shape[-1])
        return torch.vmap(self.fn)(flat).reshape(x.shape[:-1])
