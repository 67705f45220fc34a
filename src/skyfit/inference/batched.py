"""Many independent log-densities of one shape, evaluated together: the batched-objects interface.

A :class:`BatchedDensity` is N log-densities ``log p_n(x)`` of vectors of the same ``dim`` entries
(one model, N datasets). Object ``n``'s density is ``object_log_prob(x, data_n)`` with ``data_n``
its slice of :attr:`BatchedDensity.data`; everything else (a batch of points of chosen objects,
per-object gradients and Hessians) is ``torch.func.vmap`` over that one function, so N objects
cost one vectorised call, on any device.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping

import torch

from ..errors import LogDensityError, ParameterVectorError
from .density import LogDensity, ParameterBounds

__all__ = ["BatchedDensity", "ObjectRows", "OneObject"]


class BatchedDensity(ParameterBounds, abc.ABC):
    """N independent log-densities ``log p_n(x)``, ``x`` of ``dim`` entries, sharing names and
    bounds.

    Subclasses set ``names``, ``lower``, ``upper`` (``(dim,)``), ``data`` (a dict of tensors
    with a leading object axis ``(N, ...)``) and implement :meth:`object_log_prob`, one object's
    ``log p`` for ``x (dim,)`` and its data, written so that ``torch.func`` can transform it
    (``vmap``, ``jacrev``). They may override :meth:`initial`.

    Example:
        >>> import torch
        >>> class Normals(BatchedDensity):  # object n: x ~ N(mu_n, sigma_n^2), up to a constant
        ...     names = ["x"]
        ...     lower = torch.tensor([-torch.inf], dtype=torch.float64)
        ...     upper = torch.tensor([torch.inf], dtype=torch.float64)
        ...     def __init__(self, mu, sigma):
        ...         self.data = {"mu": mu, "sigma": sigma}
        ...     def object_log_prob(self, x, data):
        ...         return -0.5 * (((x - data["mu"]) / data["sigma"]) ** 2).sum()
        >>> d = Normals(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]]))
        >>> d.n_objects, d.log_prob(torch.tensor([[1.0], [5.0]])).tolist()  # -z^2/2 each
        (2, [-0.5, -2.0])
    """

    data: dict[str, torch.Tensor]

    @property
    def n_objects(self) -> int:
        """Number of objects N."""
        return next(iter(self.data.values())).shape[0]

    @abc.abstractmethod
    def object_log_prob(self, x: torch.Tensor, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``log p`` of one object at ``x (dim,)`` given its data (one slice of :attr:`data`)."""

    def initial(self) -> torch.Tensor:
        """Default starts ``(N, dim)``; the base class has none."""
        raise NotImplementedError(f"{type(self).__name__} has no initial() starts: pass init= "
                                  f"an (N, {self.dim}) tensor of starts")

    def object(self, index: int) -> OneObject:
        """Object ``index``'s log-density alone, as a :class:`~skyfit.inference.LogDensity`
        (for the single-object tools: ``fit_map``, ``sample_nuts``, ...)."""
        if not -self.n_objects <= int(index) < self.n_objects:
            raise IndexError(f"object {index} out of range for {self.n_objects} objects")
        return OneObject(self, int(index) % self.n_objects)

    def subset(self, rows) -> BatchedDensity:
        """Objects ``rows`` alone, as a density of the same class: a shallow copy whose
        :attr:`data` are those rows (in that order), the model, names and bounds shared.
        ``rows``: indices or a boolean mask, as :meth:`rows_data` takes them. A subclass that
        keeps per-object state outside :attr:`data` overrides this to subset it too.

        Example:
            >>> import torch
            >>> class Normals(BatchedDensity):
            ...     names = ["x"]
            ...     lower, upper = torch.tensor([-torch.inf]), torch.tensor([torch.inf])
            ...     def __init__(self, mu):
            ...         self.data = {"mu": mu}
            ...     def object_log_prob(self, x, data):
            ...         return -0.5 * ((x - data["mu"]) ** 2).sum()
            >>> d = Normals(torch.tensor([[0.0], [1.0], [2.0]]))
            >>> part = d.subset([2, 0])
            >>> part.n_objects, part.data["mu"].flatten().tolist(), d.n_objects
            (2, [2.0, 0.0], 3)
        """
        part = copy.copy(self)
        part.data = self.rows_data(rows)
        if part.n_objects == 0:
            raise ValueError("subset: no objects selected")
        return part

    def rows_data(self, rows) -> dict[str, torch.Tensor]:
        """The data of objects ``rows (k,)``, stacked ``(k, ...)``. ``rows``: an int64 tensor of
        non-negative indices on the data's device (the samplers' own, taken as they are), or
        what :func:`torch.as_tensor` makes indices of (a list; negative indices count from the
        end), or a boolean mask over the objects."""
        if not (isinstance(rows, torch.Tensor) and rows.dtype == torch.long
                and rows.device == self.device):
            rows = self._row_indices(rows)
        # index_select: the same rows as value[rows], several times faster on CPU; the samplers'
        # and optimisers' own rows (non-negative int64 on the data's device) take it directly
        return {key: value.index_select(0, rows) for key, value in self.data.items()}

    def _row_indices(self, rows) -> torch.Tensor:
        """``rows`` as non-negative int64 indices on the data's device."""
        rows = torch.as_tensor(rows, device=self.device)
        if rows.dtype == torch.bool:
            return rows.nonzero().squeeze(-1)
        if rows.is_floating_point() or rows.is_complex():
            raise TypeError(f"object rows must be integers or a boolean mask, got {rows.dtype}")
        rows = rows.long()
        if bool(((rows < -self.n_objects) | (rows >= self.n_objects)).any()):
            raise IndexError(f"object rows {rows.tolist()} out of range for {self.n_objects} "
                             "objects")
        return rows % self.n_objects

    def as_points(self, x) -> torch.Tensor:
        """``x`` as a tensor of this density's dtype/device, checked for its trailing length."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ParameterVectorError(f"points have trailing length {tuple(x.shape)[-1:] or 0}, "
                                       f"expected {self.dim} ({', '.join(self.names)})")
        return x

    def log_prob_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``log p_{rows[i]}(x[i])`` for ``x (k, dim)`` and object indices ``rows (k,)``."""
        x = self.as_points(x)
        return torch.func.vmap(self.object_log_prob)(x, self.rows_data(rows))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p_n(x[..., n, :])`` for ``x (..., N, dim)``: shape ``(..., N)``."""
        x = self.as_points(x)
        n = self.n_objects
        if x.ndim < 2 or x.shape[-2] != n:
            raise ParameterVectorError(f"points must have shape (..., {n}, {self.dim}) (one row "
                                       f"per object), got {tuple(x.shape)}")
        flat = x.reshape(-1, n, self.dim)
        rows = torch.arange(n, device=x.device).repeat(flat.shape[0])
        return self.log_prob_rows(flat.reshape(-1, self.dim), rows).reshape(x.shape[:-1])

    def value_and_grad_rows(self, x: torch.Tensor, rows: torch.Tensor):
        """``log p`` ``(k,)`` and its gradient ``(k, dim)`` for points of objects ``rows``."""
        with torch.enable_grad():
            x = self.as_points(x).detach().requires_grad_(True)
            logp = self.log_prob_rows(x, rows)
            (grad,) = torch.autograd.grad(logp.sum(), x)
        return logp.detach(), grad

    def hessian_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Per-object Hessians ``d^2 log p / dx dx^T`` ``(k, dim, dim)``: ``vmap`` of
        reverse-over-reverse autograd (``jacrev(jacrev)``), symmetrised."""
        x = self.as_points(x).detach()
        H = torch.func.vmap(torch.func.jacrev(torch.func.jacrev(self.object_log_prob)))(
            x, self.rows_data(rows))
        H = 0.5 * (H + H.transpose(-1, -2))
        if not torch.isfinite(H).all():
            bad = torch.nonzero(~torch.isfinite(H).flatten(1).all(1)).flatten()[:5].tolist()
            raise LogDensityError(f"the Hessian has NaN or inf entries for objects {bad}; are "
                                  "their points inside the support?")
        return H


class ObjectRows(LogDensity):
    """One :class:`LogDensity` over a chain axis whose entry ``i`` belongs to object ``rows[i]``:
    ``log_prob(x (..., k, dim))`` is ``log p_{rows[i]}(x[..., i, :])``. This is how objects x
    chains run through the single-density samplers in one batch."""

    def __init__(self, batched: BatchedDensity, rows: torch.Tensor):
        self.batched = batched
        self.all_rows = torch.as_tensor(rows, device=batched.device)
        self.rows = self.all_rows
        self.names = list(batched.names)
        self.lower, self.upper = batched.lower, batched.upper

    def select(self, chains: torch.Tensor | None) -> None:
        """Evaluate only the entries ``chains`` of the chain axis from now on (None: all)."""
        self.rows = self.all_rows if chains is None else self.all_rows[chains]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        k = self.rows.shape[0]
        if x.ndim < 2 or x.shape[-2] != k:
            raise ParameterVectorError(f"points must have shape (..., {k}, {self.dim}), got "
                                       f"{tuple(x.shape)}")
        flat = x.reshape(-1, self.dim)
        rows = self.rows.repeat(flat.shape[0] // k)
        return self.batched.log_prob_rows(flat, rows).reshape(x.shape[:-1])


class OneObject(LogDensity):
    """Object ``index`` of a :class:`BatchedDensity` as a plain :class:`LogDensity`:
    ``log_prob(x (..., dim))`` is ``log p_index(x)``, evaluated by the same vmapped function as
    the batch (so a single-object run and the batched one see the same numbers)."""

    def __init__(self, batched: BatchedDensity, index: int):
        self.batched, self.index = batched, index
        self.names = list(batched.names)
        self.lower, self.upper = batched.lower, batched.upper

    def initial(self) -> torch.Tensor:
        return self.batched.initial()[self.index]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = self.batched.as_points(x)
        flat = x.reshape(-1, self.dim)
        rows = torch.full((flat.shape[0],), self.index, dtype=torch.long, device=x.device)
        return self.batched.log_prob_rows(flat, rows).reshape(x.shape[:-1])
