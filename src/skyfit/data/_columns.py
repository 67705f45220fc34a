"""Column helpers of :class:`~skyfit.data.Photometry`: text and masked cells to arrays, a
table's columns by name, per-row magnitude systems."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ..errors import DataError, ShapeError


def _array(values, name: str, dtype=np.float64) -> np.ndarray:
    """A 1-D numpy array from a list, numpy/astropy column, pandas Series or torch tensor."""
    if values is None:
        return None
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    if hasattr(values, "to_numpy"):  # pandas: positions, not the (possibly filtered) index
        values = values.to_numpy()
    if isinstance(values, np.ma.MaskedArray):  # astropy MaskedColumn: masked entries are missing
        fill = False if dtype is bool else (None if dtype is None else np.nan)
        values = values.filled(fill) if fill is not None else values.filled()
    if dtype is None:  # band names: strings, bytes decoded
        out = np.asarray([_text(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist()])
        arr = np.asarray(values, dtype=object)
    elif dtype is bool:
        arr = np.asarray(values)
        if arr.dtype.kind in "OUS":  # "True"/"false"/"1" from text files, bytes from FITS
            arr = np.asarray([_text(v).strip().lower() in ("true", "1", "yes", "t", "y")
                              for v in arr.reshape(-1)]).reshape(arr.shape)
        out = arr.astype(bool)
    else:
        arr = np.asarray(values, dtype=object if np.asarray(values).dtype.kind in "OUS" else None)
        out = np.asarray(_floats(arr.reshape(-1), name) if arr.dtype == object else arr,
                         dtype=np.float64)
    if arr.ndim != 1:
        raise ShapeError(f"column {name!r} must be one-dimensional, got shape {arr.shape}")
    return out


_MISSING = ("", "nan", "--", "null", "n/a", "none")  # empty cells as text files write them


def _text(v) -> str:
    """A cell as text: bytes (FITS string columns) decoded."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _floats(cells, name: str) -> list[float]:
    """Text cells as floats; a cell that is not a number is a DataError naming the column and
    the row (it was Python's bare "could not convert string to float")."""
    out = []
    for row, v in enumerate(cells):
        try:
            out.append(_to_float(v))
        except ValueError:
            hint = (" (an upper limit? flag the row in an upper_limit column, with the number)"
                    if _text(v).lstrip().startswith(("<", ">")) else "")
            raise DataError(f"the {name} column holds {_text(v)!r} in row {row}, which is not a "
                            f"number{hint}") from None
    return out


def _to_float(v) -> float:
    if isinstance(v, bytes):
        v = v.decode()
    if v is None or (isinstance(v, str) and v.strip().lower() in _MISSING):
        return math.nan
    return float(v)


def _vega_rows(system, n: int) -> np.ndarray:
    """True for the rows in Vega magnitudes; ``system`` is ``"AB"``, ``"Vega"`` or one per row
    (either, any case)."""
    if isinstance(system, str):
        if system not in ("AB", "Vega"):
            raise ValueError(f"system must be 'AB' or 'Vega', got {system!r}")
        return np.full(n, system == "Vega")
    names = np.asarray([s.strip().lower() for s in _array(system, "system", dtype=None)])
    if names.shape != (n,):
        raise ShapeError(f"system has {names.size} rows, time has {n}")
    bad = ~np.isin(names, ("ab", "vega"))
    if bad.any():
        raise DataError(f"system must be 'AB' or 'Vega' in every row; got "
                        f"{sorted(set(names[bad].tolist()))} in {_bad_rows(bad)} (a table's "
                        f"system column is read as each row's magnitude system: "
                        f"columns={{'system': None}} or --columns system= leaves it out)")
    return names == "vega"


def _columns_of(table) -> Mapping:
    """``{column name: values}`` of an astropy Table, pandas DataFrame, mapping or record array."""
    if hasattr(table, "colnames"):  # astropy Table
        return {n: table[n] for n in table.colnames}
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # pandas DataFrame
        return {str(c): table[c] for c in table.columns}
    if isinstance(table, np.ndarray) and table.dtype.names:
        return {n: table[n] for n in table.dtype.names}
    if isinstance(table, Mapping):
        return table
    raise TypeError(f"cannot read a photometry table from {type(table).__name__}: give an astropy "
                    f"Table, a pandas DataFrame, a dict of columns or a file path")


def _bad_rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    return f"{rows.size} rows (first: {rows[:5].tolist()})"
