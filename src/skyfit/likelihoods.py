"""Likelihoods: a model and its data as a log-likelihood (a caskade Module).

Every likelihood is a ``ck.Module`` whose ``@forward __call__()`` returns ``log p(data | params)``
(a scalar, or one value per batch entry under ``torch.vmap``). Wrap it in a
:class:`~skyfit.Posterior` to get a log-density of one flat parameter vector.
"""

from __future__ import annotations

import math

import caskade as ck
import torch

from ._display import ModuleDisplay
from ._forward import forward
from .errors import DataError, ShapeError
from .likelihoods_photometry import PhotometryLikelihood, censored_log_likelihood

__all__ = ["GaussianLikelihood", "PoissonLikelihood", "PhotometryLikelihood",
           "censored_log_likelihood"]


def _finite_tensor(name: str, value, dtype=None, device=None, mask=None,
                   fill: float = 0.0) -> torch.Tensor:
    """``value`` as a floating tensor; NaN or inf is an error where ``mask`` is True (or
    anywhere without a mask) and becomes ``fill`` where the mask leaves it out."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    bad = ~torch.isfinite(t)
    if mask is not None and bad.any():
        t = torch.where(bad & ~mask, torch.full_like(t, fill), t)
        bad = bad & mask
    if bad.any():
        where = torch.nonzero(bad)[:5].tolist()
        raise DataError(f"{name} has {int(bad.sum())} NaN or inf values (first at indices "
                        f"{where}); mask them out (mask=...) or fix the data")
    return t


def _nonempty(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.numel() == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)}): there is nothing to fit")
    return t


def _check_mask(mask, shape) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if tuple(mask.shape) != tuple(shape):
        raise ShapeError(f"mask shape {tuple(mask.shape)} differs from data shape {tuple(shape)}")
    if not mask.any():
        raise DataError("mask excludes every pixel: nothing left to fit")
    return mask


def _variance_floor(noise) -> torch.Tensor | None:
    # the variance of an empty pixel, (sky t + read^2) / t^2 > 0 iff read > 0 or sky > 0;
    # None when the noise model's parameters are not known yet (dynamic, no value)
    values = []
    for label in ("read_noise", "sky"):
        param = getattr(noise, label, None)
        value = None if param is None else param.value
        if param is not None and value is None:
            return None
        values.append(torch.as_tensor(0.0 if value is None else value))
    read, sky = values
    return read.abs() + sky


def _check_model_shape(model_out: torch.Tensor, data: torch.Tensor, who: str) -> None:
    if tuple(model_out.shape) != tuple(data.shape):
        raise ShapeError(f"{who}: model output has shape {tuple(model_out.shape)} but data has "
                         f"shape {tuple(data.shape)}")


class GaussianLikelihood(ModuleDisplay, ck.Module):
    """Independent Gaussian pixels: ``log L = -1/2 sum[(d - m)^2 / v + log(2 pi v)]``.

    The variance ``v`` is either given (a sigma map squared, fixed) or computed from the model
    by a noise model (e.g. :class:`~skyfit.ReadPoissonNoise`, whose variance grows with the model
    flux; then the ``log v`` term matters and is kept).

    Arguments:
        model: a Module whose ``@forward __call__()`` returns an image (stack) shaped like data.
        data: observed image(s), same shape as the model output.
        variance: per-pixel variance (broadcastable to data), or None to use ``noise``.
        noise: a noise model with ``variance(model_image)``.
        mask: boolean, True where a pixel is used.

    Example:
        >>> import math, torch
        >>> from skyfit import GaussianLikelihood, PixelGrid, Scene, Gaussian
        >>> scene = Scene(PixelGrid((16, 16), 0.1, dtype=torch.float64), [Gaussian(flux=1.0)])
        >>> like = GaussianLikelihood(scene, scene().detach(), variance=torch.full((16, 16), 0.01))
        >>> round(like().item(), 3)  # perfect model: only the normalisation term
        354.214
        >>> round(-0.5 * 256 * math.log(2 * math.pi * 0.01), 3)
        354.214
    """

    def __init__(self, model: ck.Module, data, variance=None, noise=None, mask=None,
                 name: str | None = None):
        super().__init__(name)
        if (variance is None) == (noise is None):
            raise ValueError("give exactly one of `variance` (a sigma map squared) or `noise` "
                             "(a noise model such as ReadPoissonNoise)")
        self.model = model
        # the mask first: NaN data (or variance) in masked-out pixels is allowed
        self.mask = _check_mask(mask, torch.as_tensor(data).shape)
        self.data = _nonempty("data", _finite_tensor("data", data, mask=self.mask))
        if variance is not None:
            v_mask = self.mask if self.mask is not None and (
                torch.as_tensor(variance).shape == self.mask.shape) else None
            v = _finite_tensor("variance", variance, self.data.dtype, self.data.device,
                               mask=v_mask, fill=1.0)
            if v_mask is not None:
                v = torch.where(v_mask, v, torch.ones_like(v))
            if (v <= 0).any():
                raise DataError(f"variance must be positive; {int((v <= 0).sum())} values are <= 0 "
                                f"(min {v.min().item():g}); mask those pixels instead")
            try:
                shape = torch.broadcast_shapes(v.shape, self.data.shape)
            except RuntimeError:
                shape = None
            if shape != self.data.shape:
                raise ShapeError(f"variance shape {tuple(v.shape)} does not broadcast to data "
                                 f"shape {tuple(self.data.shape)}")
            self.variance = v
        else:
            floor = _variance_floor(noise)
            if floor is not None and not (floor > 0).all():
                raise DataError("noise model has read_noise <= 0 and sky <= 0: empty pixels "
                                "would have zero variance; set a positive read noise or sky")
            self.variance = None
        self.noise = noise

    @forward
    def residuals(self) -> torch.Tensor:
        """Normalised residuals ``(data - model) / sqrt(variance)``, shaped like the data."""
        model = self.model()
        _check_model_shape(model, self.data, type(self).__name__)
        var = self.variance if self.variance is not None else self.noise.variance(model)
        return (self.data - model) / var.sqrt()

    @forward
    def __call__(self) -> torch.Tensor:
        model = self.model()
        _check_model_shape(model, self.data, type(self).__name__)
        var = self.variance if self.variance is not None else self.noise.variance(model)
        # log(2 pi var) = log(var) + log(2 pi): the constant is added once, not per pixel
        terms = (self.data - model) ** 2 / var + torch.log(var)
        if terms.shape != self.data.shape:  # a noise model whose parameters carry a batch
            raise ShapeError(f"the noise variance has shape {tuple(var.shape)}, which makes "
                             f"{tuple(terms.shape)} terms for data of shape "
                             f"{tuple(self.data.shape)}: noise parameters must not add batch "
                             f"dimensions")
        if self.mask is not None:
            # where, not boolean indexing: keeps shapes static so torch.vmap can batch it
            terms = torch.where(self.mask, terms, torch.zeros_like(terms))
            n_pixels = self.mask.expand(self.data.shape).sum().to(terms.dtype)
        else:
            n_pixels = self.data.numel()
        return -0.5 * (terms.sum() + n_pixels * math.log(2 * math.pi))


class PoissonLikelihood(ModuleDisplay, ck.Module):
    """Photon counts: ``log L = sum[k log(lambda) - lambda - log k!]``, ``lambda = (m + sky) t``.

    Arguments:
        model: Module returning the expected image in flux per pixel (e-/s).
        counts: observed counts (non-negative integers), same shape as the model output.
        exposure_time: seconds. sky: e-/s per pixel added to the model.
        mask: boolean, True where a pixel is used.

    Example:
        >>> import torch
        >>> from skyfit import PixelGrid, Scene, Gaussian
        >>> scene = Scene(PixelGrid((8, 8), pixel_scale=0.1), [Gaussian(sigma=0.15, flux=50.0)])
        >>> counts = torch.poisson(scene() * 10.0, generator=torch.Generator().manual_seed(0))
        >>> L = PoissonLikelihood(scene, counts, exposure_time=10.0)  # counts in 10 s
        >>> bool(torch.isfinite(L()))
        True
    """

    def __init__(self, model: ck.Module, counts, exposure_time: float = 1.0, sky: float = 0.0,
                 mask=None, name: str | None = None):
        super().__init__(name)
        self.model = model
        self.mask = _check_mask(mask, torch.as_tensor(counts).shape)
        counts = _nonempty("counts", _finite_tensor("counts", counts, mask=self.mask))
        if self.mask is not None:
            counts = torch.where(self.mask, counts, torch.zeros_like(counts))
        if (counts < 0).any() or (counts != counts.round()).any():
            raise DataError("Poisson counts must be non-negative integers")
        if not exposure_time > 0:
            raise DataError(f"exposure_time must be positive, got {exposure_time}")
        self.counts = counts
        self.exposure_time = float(exposure_time)
        self.sky = float(sky)
        self._log_factorial = torch.lgamma(counts + 1)

    @forward
    def __call__(self) -> torch.Tensor:
        model = self.model()
        _check_model_shape(model, self.counts, type(self).__name__)
        # the smallest normal number of the model's dtype (1e-300 would round to 0 in float32);
        # xlogy gives 0 log 0 = 0 for empty pixels with no counts
        rate = ((model + self.sky) * self.exposure_time).clamp(min=torch.finfo(model.dtype).tiny)
        terms = torch.xlogy(self.counts, rate) - rate - self._log_factorial
        if self.mask is not None:
            terms = torch.where(self.mask, terms, torch.zeros_like(terms))
        return terms.sum()
