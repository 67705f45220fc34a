"""The result of a batched fit of many objects: one row per object, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

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
