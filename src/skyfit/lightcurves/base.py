"""Base class of light-curve models: parameters per band, and ``flux(t, band)``."""

from __future__ import annotations

import caskade as ck
import torch

from .._display import ModuleDisplay
from .._tensor import batch_param
from ..errors import ShapeError
from ..params import Param
from .observed import distance_dimming, parse_shared, subset_entries

__all__ = ["LightCurve"]


class LightCurve(ModuleDisplay, ck.Module):
    """A light curve: flux (image flux units) as a function of time ``t`` (days), per band.

    Single band (``bands=None``): every parameter is a scalar (or carries only batch dimensions)
    and ``flux(t)`` takes no band. Several bands (``bands=("g", "r")``): every parameter holds one
    value per band, shape ``(n_bands,)`` (each band has its own light curve, as the per-filter fits
    of Bazin et al. 2009 and Villar et al. 2019), except the parameters named in ``shared``, which
    hold one value for all bands (for instance ``shared=("t0",)`` for one explosion time). A scalar
    given for a per-band parameter is repeated for every band. A string of one-letter names
    counts as one band per letter: ``bands="gri"`` is ``("g", "r", "i")``.

    ``flux(t, band)``: ``t`` is a tensor of any shape; ``band`` holds integer band indices (or band
    names) broadcastable to ``t``; the result has the broadcast shape, with the batch dimensions of
    the parameters (if any) in front. Its dtype is that of ``t`` promoted with the parameters', so
    float64 parameter vectors give float64 fluxes. For MJD-sized times keep ``t`` (and ``t0``) in
    float64, or subtract a reference epoch: float32 resolves only ~0.004 day at t ~ 60000
    (:class:`~skyfit.data.Photometry` does).

    ``shared`` may also name a band subset: ``shared=["t0", ("tau_rise", ("g", "r"))]`` gives one
    ``t0``, one ``tau_rise`` for g and r together and one for every other band (entries follow the
    bands, the subset's value at the place of its first band; see
    :func:`~skyfit.lightcurves.observed.subset_entries`).

    ``redshift``: the source's redshift (a static Param ``redshift``; make it dynamic to fit it).
    The model's time scales are then rest-frame: observed time = rest time x (1 + z), about
    ``t0``. With ``dimming=True`` the amplitude is the flux at 10 pc and the observed flux is
    times :func:`~skyfit.lightcurves.observed.distance_dimming` (flat Lambda-CDM, H0 = 70,
    Om0 = 0.3; no K-correction). A baseline ``B`` is not dimmed.

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=[1.0, 3.0], bands="gr",
        ...                         shared=("t0",))
        >>> tuple(lc.peak_flux.value.shape), tuple(lc.t0.value.shape)
        ((2,), ())
        >>> lc.flux(torch.tensor([0.0, 2.0]), torch.tensor([1, 0]))  # r at peak, g 1 sigma on
        tensor([3.0000, 0.6065], dtype=torch.float64)
    """

    def __init__(self, name: str | None = None, bands=None, shared=(), redshift=None,
                 dimming: bool = False):
        super().__init__(name)
        if bands is not None:
            bands = tuple(str(b) for b in bands)
            if len(bands) == 0 or len(set(bands)) != len(bands):
                raise ValueError(f"bands must be distinct names, at least one, got {bands}")
        self.bands = bands
        self.shared, self.shared_bands = parse_shared(shared, bands)
        self._entries = {}  # parameter shared by a band subset -> entry index of each band
        self.dimming = bool(dimming)
        if dimming and redshift is None:
            raise ValueError("dimming=True needs a redshift")
        if redshift is not None:
            self.redshift = Param("redshift", redshift, shape=(), valid=(0.0, None),
                                  description="redshift: observed time = rest time x (1 + z)")

    @property
    def n_bands(self) -> int:
        """Number of bands (1 for a single-band light curve)."""
        return 1 if self.bands is None else len(self.bands)

    def _per_band(self, name: str, value) -> tuple:
        """``(value, shape)`` of Param ``name``: shape ``(n_bands,)`` if it holds one value per
        band (a scalar value is repeated for every band), else ``()``."""
        if self.bands is None or name in self.shared:
            return value, ()
        n = len(self.bands)
        if name in self.shared_bands:  # shared by a band subset: one entry per group
            self._entries[name] = subset_entries(self.bands, self.shared_bands[name])
            n = int(self._entries[name].max()) + 1
        if value is not None and not callable(value) and not isinstance(value, ck.Param):
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(value, dtype=torch.float64)
            if value.ndim == 0:
                value = value.repeat(n)
            elif value.shape[-1] != n:
                raise ShapeError(
                    f"{self.name}.{name} is per band: expected a scalar or a last dimension of "
                    f"{n} for bands {self.bands} (shared: {self.shared_bands.get(name)}), got "
                    f"shape {tuple(value.shape)} (or name it in shared=...)"
                )
        return value, (n,)

    def _check_shared(self, names: tuple[str, ...]) -> None:
        unknown = (self.shared | set(self.shared_bands)) - set(names)
        if unknown:
            raise ValueError(f"shared names {sorted(unknown)} are not parameters of "
                             f"{type(self).__name__}; its parameters are {list(names)}")

    def band_index(self, band) -> torch.Tensor:
        """Integer band indices for ``band``: a name, a sequence of names, or integer indices."""
        if isinstance(band, str) or (
            isinstance(band, (list, tuple)) and band and all(isinstance(b, str) for b in band)
        ):
            names = [band] if isinstance(band, str) else list(band)
            # distinct names, in order of first appearance: a table of 97 rows names each once
            missing = list(dict.fromkeys(b for b in names if b not in (self.bands or ())))
            if missing:
                raise ValueError(f"unknown band(s) {missing}; {self.name} has bands {self.bands}")
            index = torch.tensor([self.bands.index(b) for b in names])
            return index[0] if isinstance(band, str) else index
        band = torch.as_tensor(band)
        if band.is_floating_point() or band.is_complex() or band.dtype == torch.bool:
            raise TypeError(f"band must hold integer indices or band names, got dtype {band.dtype}")
        band = band.long()
        # likelihoods and links check their bands when they are built; here the values are read
        # where they can be: not while torch.compile traces (no data-dependent branch in its
        # graph), and not for a band batched by torch.vmap (it has no single value to test)
        if band.numel() and not torch.compiler.is_compiling():
            try:
                outside = bool(((band < 0) | (band >= self.n_bands)).any())
            except RuntimeError:  # vmap: data-dependent control flow on a batched band
                outside = False
            if outside:
                raise ValueError(f"band indices must lie in 0..{self.n_bands - 1} for "
                                 f"{self.name}'s bands {self.bands}, got {band.unique().tolist()}")
        return band

    def _optional(self, name: str):
        """The value of the optional Param ``name`` (``B``, ``redshift``) in the running model,
        None if the model has none. Optional Params are read here, not taken as arguments of
        ``flux``: an argument that names no Param would count as a positional input."""
        param = self.children.get(name)
        return param.value if isinstance(param, ck.Param) else None

    def _observed(self, flux: torch.Tensor, redshift) -> torch.Tensor:
        """The rest-frame model's flux as observed: times ``distance_dimming(z)`` if dimming."""
        if not self.dimming:
            return flux
        z = torch.as_tensor(redshift, dtype=flux.dtype, device=flux.device)
        return flux * distance_dimming(z).reshape(z.shape + (1,) * (flux.ndim - z.ndim))

    def _inputs(self, t, band, redshift=None, **params):
        """Each parameter's value for each ``t`` (broadcast with ``band``), and ``t`` itself,
        converted to rest-frame time about ``t0`` when the model has a redshift."""
        t, out = self._broadcast(t, band, **params)
        if redshift is not None:  # observed time = rest time x (1 + z), about t0
            z = batch_param(redshift, t)
            t = out["t0"] + (t - out["t0"]) / (1 + z)
        return t, out

    def _broadcast(self, t, band, **params):
        """Broadcast ``t``, ``band`` and the parameters: each parameter's value for each ``t``."""
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        # as documented: t's dtype promoted with the parameters' (float64 fits stay float64)
        dtype = t.dtype
        for v in params.values():
            if torch.is_tensor(v) and v.is_floating_point() and v.dtype != dtype:
                dtype = torch.promote_types(dtype, v.dtype)
        if t.dtype != dtype:
            t = t.to(dtype)
        # batch_param converts what is not yet a tensor of t's dtype and device
        if self.bands is None:
            if band is not None:
                raise ValueError(f"{self.name} has no bands: call flux(t) without `band`, or build "
                                 f"it with bands=(...)")
            return t, {k: batch_param(v, t) for k, v in params.items()}
        params = {k: torch.as_tensor(v, dtype=dtype, device=t.device) for k, v in params.items()}
        if band is None:
            if len(self.bands) > 1:
                raise ValueError(f"{self.name} has bands {self.bands}: pass `band` (indices or "
                                 f"names, broadcastable to t)")
            band = 0
        band = self.band_index(band).to(t.device)
        try:
            shape = torch.broadcast_shapes(t.shape, band.shape)
        except RuntimeError:
            raise ShapeError(f"band of shape {tuple(band.shape)} does not broadcast with t of "
                             f"shape {tuple(t.shape)}") from None
        t, band = t.expand(shape), band.expand(shape)
        out = {}
        for k, v in params.items():
            if k in self.shared:
                out[k] = batch_param(v, t)
            elif k in self._entries:  # shared by a band subset: each band's entry
                out[k] = v[..., self._entries[k].to(band.device)[band]]
            else:
                out[k] = v[..., band]
        return t, out
