"""One model template and N datasets as one batched log-density (:class:`ManyObjects`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import DataError, ShapeError
from ..inference.batched import BatchedDensity
from ..posterior import Posterior

__all__ = ["ManyObjects", "stack_ragged"]


def stack_ragged(objects: Sequence[Mapping[str, np.ndarray]], length: int | None = None
                 ) -> dict[str, np.ndarray]:
    """Stack per-object 1-D arrays of different lengths into ``(N, length)`` arrays plus a
    boolean ``mask`` (True at real points).

    Padding repeats each object's last real entry (so a padded ``flux_err`` stays positive and a
    padded ``band`` stays a valid index); a likelihood given the mask ignores those points.

    Example:
        >>> data = stack_ragged([{"time": [1.0, 2.0]}, {"time": [5.0]}])
        >>> data["time"].tolist(), data["mask"].tolist()
        ([[1.0, 2.0], [5.0, 5.0]], [[True, True], [True, False]])
    """
    if not objects:
        raise DataError("no objects to stack")
    keys = list(objects[0])
    sizes = []
    for i, obj in enumerate(objects):
        lengths = {key: len(np.asarray(obj[key])) for key in keys}
        if len(set(lengths.values())) != 1:
            raise ShapeError(f"object {i} has arrays of different lengths {lengths}")
        sizes.append(next(iter(lengths.values())))
    if min(sizes) == 0:
        raise DataError(f"object {sizes.index(0)} has no points")
    length = max(sizes) if length is None else length
    if length < max(sizes):
        raise ShapeError(f"length {length} is shorter than the longest object ({max(sizes)})")
    out = {}
    for key in keys:
        rows = [np.asarray(obj[key]) for obj in objects]
        out[key] = np.stack([np.pad(r, (0, length - len(r)), mode="edge") for r in rows])
    out["mask"] = np.arange(length)[None, :] < np.asarray(sizes)[:, None]
    return out


class ManyObjects(BatchedDensity):
    """N independent posteriors of one model: ``factory(**data_n)`` for each object's data,
    evaluated for all objects in one ``torch.vmap`` call.

    ``factory`` builds one object's :class:`~skyfit.Posterior` from keyword arrays, the keys of
    ``data``; it is called once, on object 0, to make the template. Each key must also be the
    name of the attribute of the likelihood (or of a module under it, as a dotted path, via
    ``attributes={key: "path.attr"}``) that holds that array: those attributes are swapped for
    each object's slice inside the vectorised call (checked once, on the last object, against
    ``factory`` on its own data). For photometry use :class:`PaddedPhotometry` (keys ``time``,
    ``flux``, ``flux_err``, ``band``, ``mask``; ragged light curves: :func:`stack_ragged`).
    The factory is a plain module-level function of arrays, so the same
    description ships to Dask workers (:func:`~skyfit.survey.fit_catalogue`).

    Arguments:
        factory: ``factory(**arrays_of_one_object) -> Posterior``.
        data: ``{key: array (N, ...)}``, one row per object.
        attributes: key -> attribute path in the likelihood, where it differs from the key.
        dtype: of the floating data given to ``factory``; the batch then holds each array in the
            dtype of the likelihood's attribute it replaces (PaddedPhotometry: float64).
        device: of the data and the batched evaluations.

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, Posterior
        >>> from skyfit.survey import PaddedPhotometry
        >>> def factory(time, flux, flux_err):
        ...     lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        ...     lc.to_dynamic()
        ...     return Posterior(PaddedPhotometry(lc, time, flux, flux_err))
        >>> t = torch.linspace(-5, 5, 11, dtype=torch.float64).expand(3, 11)
        >>> many = ManyObjects(factory, {"time": t, "flux": torch.ones(3, 11),
        ...                              "flux_err": torch.ones(3, 11)})
        >>> many.log_prob(torch.zeros(3, 3) + torch.tensor([0.0, 2.0, 1.0])).shape
        torch.Size([3])
    """

    def __init__(self, factory: Callable[..., Posterior], data: Mapping[str, np.ndarray],
                 attributes: Mapping[str, str] | None = None, dtype: torch.dtype = torch.float64,
                 device=None):
        if not data:
            raise DataError("no data arrays given")
        self.data = {key: _as_data(key, value, dtype, device) for key, value in data.items()}
        counts = {key: value.shape[0] for key, value in self.data.items()}
        if len(set(counts.values())) != 1:
            raise ShapeError(f"data arrays must share a leading object axis: {counts}")
        if min(counts.values()) == 0:
            raise DataError(f"no objects: the data arrays have no rows {counts}")
        self.factory = factory
        self.template = factory(**{key: value[0] for key, value in self.data.items()})
        if not isinstance(self.template, Posterior):
            raise TypeError(f"factory must return a skyfit.Posterior, got {type(self.template)}")
        self.names = list(self.template.names)
        self.lower, self.upper = self.template.lower.to(device), self.template.upper.to(device)
        attributes = dict(attributes or {})
        self._targets = [(*_attribute_owner(self.template.likelihood, attributes.get(key, key)),
                          key) for key in self.data]
        # each array in the dtype of the attribute it replaces, so that the batch computes what
        # factory(**data_n) does (float32 data a likelihood keeps in float64, integer band
        # indices given as floats)
        for owner, attr, key in self._targets:
            self.data[key] = _in_dtype(key, self.data[key], owner.__dict__[attr].dtype)
        self._check_swap()

    def _check_swap(self) -> None:
        """The last object through the swapped template must equal ``factory`` on its own
        data: a likelihood that derives working arrays from its data at construction (and so
        ignores the swap) would otherwise fit object 0's data N times."""
        if self.n_objects < 2:
            return
        last = self.n_objects - 1
        own = self.factory(**{key: value[last] for key, value in self.data.items()})
        x = self.template.initial().to(self.device)
        expected = own.log_prob(x)
        if expected.ndim:  # else vmap stacks (N, ...) rows and the fit fails far from the cause
            raise ShapeError(f"factory's posterior gives log p of shape {tuple(expected.shape)} "
                             "at one point, not a number: its likelihood must return the sum of "
                             "its terms (0-d)")
        batched = self.log_prob_rows(x[None], torch.tensor([last], device=self.device))[0]
        same = torch.isclose(batched, expected, rtol=1e-9, atol=1e-9) or (
            not torch.isfinite(expected) and bool(batched == expected))
        if not same:
            raise TypeError(
                f"{type(self.template.likelihood).__name__} does not read the swapped data: "
                f"object {last} gives log p {float(batched):.6g} in the batch but "
                f"{float(expected):.6g} from factory(**its data). It derives its arrays at "
                "construction (PhotometryLikelihood selects and transforms its rows there); "
                "use skyfit.survey.PaddedPhotometry, or a likelihood that computes from the "
                "swapped attributes at call time")

    def initial(self) -> torch.Tensor:
        """The template's current values, one row per object ``(N, dim)``."""
        return self.template.initial().to(self.device).expand(self.n_objects, self.dim).clone()

    def object_log_prob(self, x: torch.Tensor, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        saved = [(owner.__dict__[attr]) for owner, attr, _ in self._targets]
        try:
            for owner, attr, key in self._targets:
                owner.__dict__[attr] = data[key]
            total = self.template.log_likelihood(x) + self.template.log_prior(x)
        finally:
            for (owner, attr, _), value in zip(self._targets, saved):
                owner.__dict__[attr] = value
        inside = ((x >= self.lower) & (x <= self.upper)).all(-1)
        return torch.where(inside, total, torch.full_like(total, -math.inf))


def _as_data(key: str, value, dtype: torch.dtype, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value,
                        device=device)
    if t.is_floating_point():
        t = t.to(dtype)
        if not torch.isfinite(t).all():
            raise DataError(f"data {key!r} has NaN or inf values: set the 'mask' False there "
                            "and replace them by finite values (masked rows are computed too, "
                            "and a NaN in them makes the gradient NaN)")
    return t


def _in_dtype(key: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` in ``dtype``; floats into an integer or bool attribute (band indices, a mask)
    only where they are whole numbers (0 or 1 for bool): a cast would truncate 0.7 to 0."""
    if value.is_floating_point() and not dtype.is_floating_point:
        allowed = (value == 0) | (value == 1) if dtype == torch.bool else value == value.round()
        if not bool(allowed.all()):
            raise DataError(f"data {key!r} replaces a {dtype} attribute but has values that are "
                            f"not {'0 or 1' if dtype == torch.bool else 'whole numbers'}")
    return value.to(dtype)


def _attribute_owner(root, path: str):
    *modules, attr = path.split(".")
    owner = root
    for name in modules:
        owner = getattr(owner, name)
    if attr not in owner.__dict__ or not isinstance(owner.__dict__[attr], torch.Tensor):
        raise AttributeError(f"{type(owner).__name__} has no data tensor {attr!r} to swap per "
                             f"object; give attributes={{key: 'path.to.attr'}} or build the "
                             f"likelihood with this array (e.g. mask=...)")
    return owner, attr
