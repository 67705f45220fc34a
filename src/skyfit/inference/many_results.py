"""The result of a batched fit of many objects: one row per object, as a table."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConvergenceWarning, HessianWarning

__all__ = ["ManyResult"]


@dataclass
class ManyResult:
    """Per-object results of :func:`~skyfit.inference.fit_map_many`,
    :func:`~skyfit.inference.laplace_many` or :func:`~skyfit.inference.sample_nuts_many`.

    Attributes:
        names: parameter names. x: values ``(N, dim)`` (modes, or posterior means for samples).
        log_density: ``(N,)``. converged: ``(N,)`` bool. covariance: ``(N, dim, dim)`` or None.
        messages: why each object's optimiser stopped. warnings: per object, a list of texts.
        rhat, ess: ``(N, dim)`` sampling diagnostics, or None. extra: further per-object
        tensors (``newton_decrement``, ``repaired``, ...); each ``(N,)`` one becomes a column.
        wall_time: seconds. draws: ``(N, chains, draws, dim)`` for sampled results, or None.

    Example:
        >>> import torch
        >>> result = ManyResult(names=["flux"], x=torch.tensor([[1.0], [2.0]]),
        ...                     log_density=torch.tensor([-0.5, -1.0]),
        ...                     converged=torch.tensor([True, False]),
        ...                     covariance=torch.tensor([[[0.04]], [[0.25]]], dtype=torch.float64))
        >>> len(result), result.std.flatten().tolist()  # sqrt of the variances
        (2, [0.2, 0.5])
        >>> list(result.columns())[:4]
        ['flux', 'flux_err', 'log_density', 'converged']
    """

    names: list[str]
    x: torch.Tensor
    log_density: torch.Tensor
    converged: torch.Tensor
    covariance: torch.Tensor | None = None
    messages: list[str] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    rhat: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    wall_time: float = float("nan")
    draws: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        n = self.x.shape[0]
        self.messages = list(self.messages) or [""] * n
        self.warnings = [list(w) for w in self.warnings] or [[] for _ in range(n)]

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def std(self) -> torch.Tensor | None:
        """Standard deviations ``(N, dim)`` from the covariance, or None."""
        if self.covariance is None:
            return None
        return self.covariance.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()

    def subset(self, rows) -> ManyResult:
        """Objects ``rows`` (indices or a boolean mask over the objects) as a ManyResult of
        their own, in that order: every per-object entry indexed, including each extra whose
        leading axis is the objects; 0-d extras (run totals) and ``wall_time`` kept as they
        are.

        Example:
            >>> import torch
            >>> result = ManyResult(names=["flux"], x=torch.tensor([[1.0], [2.0], [3.0]]),
            ...                     log_density=torch.zeros(3),
            ...                     converged=torch.tensor([True, False, True]))
            >>> result.subset(~result.converged).x.flatten().tolist()
            [2.0]
        """
        index = self.object_indices(rows)
        n = len(self)
        pick = index.tolist()
        return ManyResult(
            names=list(self.names), x=self.x[index], log_density=self.log_density[index],
            converged=self.converged[index],
            covariance=None if self.covariance is None else self.covariance[index],
            messages=[self.messages[i] for i in pick],
            warnings=[list(self.warnings[i]) for i in pick],
            rhat=_take(self.rhat, index), ess=_take(self.ess, index),
            extra={key: _take(value, index) if _per_object(value, n) else value
                   for key, value in self.extra.items()},
            wall_time=self.wall_time, draws=_take(self.draws, index))

    def with_rows(self, rows, other: ManyResult) -> ManyResult:
        """A copy whose objects ``rows`` are ``other``'s (``len(other) == len(rows)``, in that
        order), e.g. objects sampled again (:func:`~skyfit.inference.resample_unconverged`).
        Both must have the same names and the same kinds of entries (covariances, draws of one
        shape per object, per-object extras); 0-d extras and ``wall_time`` are this result's.
        """
        index = self.object_indices(rows)
        if len(other) != len(index):
            raise ValueError(f"with_rows: {len(index)} rows but the other result has "
                             f"{len(other)} objects")
        if list(other.names) != list(self.names):
            raise ValueError(f"with_rows: parameter names differ: {self.names} vs {other.names}")
        merged = self.subset(torch.arange(len(self)))
        pairs = {"x": (merged.x, other.x), "log_density": (merged.log_density, other.log_density),
                 "converged": (merged.converged, other.converged),
                 "covariance": (merged.covariance, other.covariance),
                 "rhat": (merged.rhat, other.rhat), "ess": (merged.ess, other.ess),
                 "draws": (merged.draws, other.draws)}
        for name, (mine, theirs) in pairs.items():
            if (mine is None) != (theirs is None) or (
                    mine is not None and tuple(mine.shape[1:]) != tuple(theirs.shape[1:])):
                raise ValueError(f"with_rows: {name} differs in kind or shape per object: "
                                 f"{_shape(mine)} vs {_shape(theirs)}")
            if mine is not None:
                _put(mine, index, theirs)
        n = len(self)
        for key, value in merged.extra.items():
            if not _per_object(value, n):
                continue
            theirs = other.extra.get(key)
            if theirs is None or tuple(theirs.shape[1:]) != tuple(value.shape[1:]):
                raise ValueError(f"with_rows: the other result's extra {key!r} is missing or "
                                 f"has another shape per object: {_shape(theirs)}")
            _put(value, index, theirs)
        for i, j in enumerate(index.tolist()):
            merged.messages[j] = other.messages[i]
            merged.warnings[j] = list(other.warnings[i])
        return merged

    def object_indices(self, rows) -> torch.Tensor:
        """``rows`` (indices, negative ones counting from the end, or a boolean mask over the
        objects) as non-negative int64 indices on the CPU, checked."""
        rows = torch.as_tensor(rows).cpu()
        if rows.numel() == 0 and rows.ndim == 1:  # [] is a float tensor
            return torch.zeros(0, dtype=torch.long)
        if rows.dtype == torch.bool:
            if rows.shape != (len(self),):
                raise ValueError(f"a boolean mask over the objects must have shape "
                                 f"({len(self)},), got {tuple(rows.shape)}")
            return rows.nonzero().flatten()
        if rows.is_floating_point() or rows.is_complex() or rows.ndim != 1:
            raise TypeError(f"object rows must be 1-d integers or a boolean mask, got "
                            f"{rows.dtype} of shape {tuple(rows.shape)}")
        n = len(self)
        if bool(((rows < -n) | (rows >= n)).any()):
            raise IndexError(f"object rows {rows.tolist()} out of range for {n} objects")
        return rows.long() % n

    def columns(self) -> dict[str, np.ndarray]:
        """Column name -> ``(N,)`` numpy array: each parameter, ``<name>_err``, ``<name>_rhat``,
        ``<name>_ess``, ``log_density``, ``converged``, the extras, ``message``, ``warnings``."""
        cols: dict[str, np.ndarray] = {}
        x = self.x.detach().cpu().numpy()
        std = None if self.std is None else self.std.detach().cpu().numpy()
        for j, name in enumerate(self.names):
            cols[name] = x[:, j]
            if std is not None:
                cols[f"{name}_err"] = std[:, j]
            for label, diag in (("rhat", self.rhat), ("ess", self.ess)):
                if diag is not None:
                    cols[f"{name}_{label}"] = np.asarray(diag)[:, j]
        cols["log_density"] = self.log_density.detach().cpu().numpy()
        cols["converged"] = self.converged.detach().cpu().numpy().astype(bool)
        for key, value in self.extra.items():
            value = torch.as_tensor(value).detach().cpu().numpy()
            if value.ndim == 1:  # per-object arrays (step sizes per chain, ...) stay in extra
                cols[key] = value
        cols["message"] = np.asarray(self.messages, dtype=object)
        cols["warnings"] = np.asarray(["; ".join(w) for w in self.warnings], dtype=object)
        return cols

    def to_pandas(self, index=None):
        """A pandas DataFrame with one row per object (:meth:`columns`)."""
        import pandas as pd

        return pd.DataFrame(self.columns(), index=index)

    def to_astropy(self):
        """An astropy Table with one row per object (needs astropy)."""
        from astropy.table import Table

        cols = self.columns()
        return Table([np.asarray(v, dtype=str) if v.dtype == object else v
                      for v in cols.values()], names=list(cols))


def _per_object(value, n: int) -> bool:
    """Whether an extra has a leading object axis (a 0-d total has none)."""
    return (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1
            and value.shape[0] == n)


def _take(value, index: torch.Tensor):
    """``value[index]`` for a tensor (on its device) or an array; None stays None."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)]
    return np.asarray(value)[index.numpy()]


def _put(target, index: torch.Tensor, values) -> None:
    """``target[index] = values`` in place, ``values`` converted to ``target``'s kind."""
    if isinstance(target, torch.Tensor):
        target[index.to(target.device)] = torch.as_tensor(values).to(target)
    else:
        target[index.numpy()] = np.asarray(values)


def _shape(value) -> str:
    return "none" if value is None else str(tuple(value.shape))


def warn_not_converged(result: ManyResult, who: str) -> None:
    """Objects not converged: a warning each (their message: why) and one in all. An object
    whose optimiser stopped content but whose exact derivatives there disagree (a mode on a
    bound, a saddle, a flat direction) has its message say so, not "converged: ..."."""
    bad = (~result.converged).nonzero().flatten().tolist()
    decrement = result.extra.get("newton_decrement")
    for i in bad:
        if decrement is not None and result.messages[i].startswith("converged"):
            result.messages[i] = (f"not converged: the optimiser stopped ({result.messages[i]}) "
                                  f"but the exact gradient and Hessian there give a Newton "
                                  f"decrement of {float(decrement[i]):.3g} (a mode on a bound, "
                                  f"a saddle, a flat direction?)")
        result.warnings[i].append(f"{who}: not converged ({result.messages[i]})")
    if bad:
        warnings.warn(ConvergenceWarning(
            f"{who}: {len(bad)} of {len(result.converged)} objects did not converge (first "
            f"{bad[:5]}); see the 'warnings' column of the table"), stacklevel=3)


def warn_not_finite(result: ManyResult, finite: torch.Tensor) -> None:
    """Objects whose Hessian is not finite: not converged, a warning each and one in all."""
    bad = (~finite).nonzero().flatten().tolist()
    result.converged = result.converged & finite.to(result.converged.device)
    for i in bad:
        result.warnings[i].append("laplace: the Hessian is not finite here: covariance NaN")
    if bad:
        warnings.warn(HessianWarning(f"laplace_many: the Hessian is not finite for {len(bad)} "
                                     f"objects (first {bad[:5]}): their covariances are NaN; "
                                     "see the 'warnings' column"), stacklevel=3)
