"""Sampling coordinates for a multi-band Villar posterior: fluxes at fixed times instead of
``t0``, ``tau_rise`` and the amplitudes.

Why (measured on LSQ12dlf, benchmark row ``lightcurve_real_slsn_villar``): in the model's own
parameters the posterior is a thin curved ridge. The precise decline points fix each band's
decline level ``ln A_b + ln(1 + beta gamma) - (t - t1) / tau_fall_b``, the precise rise points
of the best-sampled band fix the shape of the rise; both are nonlinear in ``t0``, ``tau_rise``,
``gamma`` and ``beta``, so the Hessian of the log-density whitened by the posterior covariance
had one eigenvalue of median 47 (up to 200; a Gaussian has 1): NUTS with a step size adapted to
the bulk diverged where that curvature peaks. In the coordinates below the largest eigenvalue
has median 2.9 (at most 6.4) over the bulk's draws and NUTS takes 2.7x fewer leapfrog steps per
draw. Not removed: a tail where the plateau end reaches the first points of the other bands
(eigenvalues 10-190 where the blend's kink crosses precise points), where NUTS still diverges;
and on a synthetic two-band curve with a faint, sparse rise these coordinates diverged more
than the model's own. Hence an option (``anchored=True`` of
:func:`~skyfit.lightcurve_fit.sample_light_curve_nuts`), not a default. With the blend width
0.2 ``tau_fall`` (:class:`~skyfit.lightcurves.Villar` ``transition_fraction``) the tail holds
less mass on LSQ12dlf and R-hat falls below 1.01; a few divergences remain.

The coordinates (a bijection on the anchor's side of a fold, see
:class:`VillarAnchoredDensity`; the log-density of the new coordinates adds
``log |d(old)/d(new)|``):

- ``A_b`` -> ``ln f_b(T_b)``: the log of band ``b``'s light curve at a reference time ``T_b``
  (the median time of its detections). The model is ``A_b`` times a shape ``g_b`` that does not
  depend on ``A_b`` (the plateau slope is relative to ``A``), so ``ln A_b = ln f_b(T_b) -
  ln g_b(T_b)``: explicit, unit Jacobian in log coordinates.
- ``(t0, tau_rise)`` -> ``(ln f_r(t_1) - ln f_r(T_r), ln f_r(t_2) - ln f_r(T_r))``: the rise
  band ``r``'s light curve at two rise epochs ``t_1 < t_2`` relative to its reference time
  (10% and 80% of the way from its first detection to the peak). Given the others this is a
  2-D equation in ``(t0, ln tau_rise)``, solved by Newton's method from the anchor, and where
  that fails by continuation from the anchor; its first derivatives come from the implicit
  function theorem (a last Newton step differentiated at the solution) and its log-Jacobian is
  ``-ln |det d(rise coordinates) / d(t0, ln tau_rise)|``.

The map's image is not all of R^2: for given ``beta``, ``gamma`` and ``tau_fall`` the rise
coordinates are bounded by the image of the fold, and where the model's flux at a rise epoch or
reference time is not positive they do not exist. There the log-density is ``-inf``, a wall
that a NUTS trajectory reports as a divergence: on LSQ12dlf (seed 0, target_accept 0.9) 10 of
the 11 divergent transitions were trajectories that reached it (RESULTS.md); at 0.95, 7 of 9.
Of the 22 points of one run (seed 0, 0.9) where the density was ``-inf``, a grid search over
``(t0, tau_rise)`` found no solution for 18 (outside the image: a rising plateau, ``beta`` 0.02
to 0.18 / day, with ``gamma`` under 8 days, or ``gamma`` over 25 days) and a solution on the
anchor's branch, far from the anchor (``t0`` 27-45 days later), for 4. Coordinates with a
closed-form inverse onto R^2 (the sigmoid's phase at the first rise epoch and the log of the
rise times between the two) have no wall but lose the geometry: 2.5x the leapfrog steps per
draw, R-hat 1.033, 24 divergent. The fluxes are the model's before redshift dimming (a
constant factor per band), not the data's.
"""

from __future__ import annotations

import numpy as np
import torch

from ._anchored_rise import (
    NUMPY_OPS,
    TORCH_OPS,
    det_2x2,
    numpy_copy,
    rise_anchors,
    rise_equations,
    solve_2x2,
)
from .inference.approximations import GaussianApproximation
from .inference.checkpoint import data_fingerprint
from .inference.density import LogDensity
from .inference.results import Samples
from .lightcurves.functions import villar_light_curve
from .lightcurves.villar import Villar

__all__ = ["VillarAnchoredDensity"]


class VillarAnchoredDensity(LogDensity):
    """A Villar posterior in the coordinates of the module docstring: same distribution, a
    near-Gaussian geometry for NUTS. Its draws map back with :meth:`to_original` and
    :meth:`original_samples`.

    The light curve must be a :class:`~skyfit.lightcurves.Villar` with ``relative_slope=True``,
    ``t0`` and ``tau_rise`` shared by all bands and every band's ``A``, as
    :func:`~skyfit.lightcurves.from_photometry` builds it (``beta``, ``gamma``, ``tau_fall``
    shared or per band); ``t0``, ``tau_rise``, ``A``, ``beta``, ``gamma``, ``tau_fall``
    dynamic, the redshift static. Other dynamic parameters (a baseline, a jitter) pass through.

    The map from ``(t0, tau_rise)`` to the rise coordinates can fold: far from the anchor a
    second ``(t0, tau_rise)`` with the Jacobian's determinant of the other sign can give the
    same rise coordinates (seen on a synthetic light curve with a sparse rise, at twice the
    Laplace width). Only the anchor's side of the fold is kept (the log-density is ``-inf`` on
    the other): this density is the posterior restricted to that side, which is the whole
    posterior where its mass lies there (all 2000 draws of a long original-parameter run on
    LSQ12dlf did; check it with :meth:`on_anchor_branch` on draws of the original posterior).

    Arguments:
        posterior: the :class:`~skyfit.Posterior` of a photometric Villar fit.
        anchor: the point the coordinates are built around and Newton's method starts from
            (default ``posterior.initial()``; pass the MAP).
        rise_band: index of the band whose rise sets ``t0`` and ``tau_rise`` (default: the
            band with most detections before the peak).
        rise_times: the two rise epochs (days, the data's time axis; default in the module
            docstring).
        reference_times: one time per band (days; default in the module docstring).

    Example:
        >>> import torch
        >>> from skyfit import Posterior, PhotometryLikelihood
        >>> from skyfit.data import load_example
        >>> from skyfit.lightcurves import default_priors, from_photometry
        >>> phot = load_example("LSQ12dlf")
        >>> like = PhotometryLikelihood(from_photometry("villar", phot), phot, space="mag")
        >>> post = Posterior(like, priors=default_priors(like))
        >>> dens = VillarAnchoredDensity(post)
        >>> x = post.initial()
        >>> bool(torch.allclose(dens.to_original(dens.from_original(x)), x))
        True
    """

    def __init__(self, posterior, anchor=None, rise_band: int | None = None,
                 rise_times=None, reference_times=None):
        self.posterior = posterior
        like = posterior.likelihood
        lc = getattr(like, "lightcurve", None)
        self._index = _villar_slices(posterior, lc)
        self.redshift = _static_redshift(lc)
        self.blend_width = lc.blend_width  # the plateau-end blend's width, from tau_fall
        kw = dict(dtype=posterior.dtype, device=posterior.device)
        time, det, n_bands = like.time, like.detected & torch.isfinite(like.flux), lc.n_bands
        band = torch.zeros_like(time, dtype=torch.long) if like.band is None else like.band
        self.rise_band, times = rise_anchors(time, band, like.flux, det, n_bands, rise_band)
        self.rise_times = torch.as_tensor(times if rise_times is None else rise_times, **kw)
        if reference_times is None:
            reference_times = [float(time[det & (band == b)].median()) if bool(
                (det & (band == b)).any()) else float(time[det].median()) for b in range(n_bands)]
        self.reference_times = torch.as_tensor(reference_times, **kw)
        if self.rise_times.shape != (2,) or not bool(self.rise_times[0] < self.rise_times[1]):
            raise ValueError(f"rise_times must be two increasing times, got {self.rise_times}")
        if self.reference_times.shape != (n_bands,):
            raise ValueError(f"reference_times must have one time per band ({n_bands}), "
                             f"got shape {tuple(self.reference_times.shape)}")
        r = self.rise_band  # its two rise epochs and reference time, for the rise equations
        self._rise_t = torch.cat([self.rise_times, self.reference_times[r:r + 1]])
        self._rise_t_np = numpy_copy(self._rise_t)
        x_anchor = posterior.initial() if anchor is None else torch.as_tensor(anchor, **kw)
        i = self._index
        self._anchor = x_anchor
        self._start = torch.stack([x_anchor[i["t0"]], x_anchor[i["tau_rise"]].log()])
        _, jac = self._rise_and_jacobian(self._start, self._band_params(x_anchor))
        self._branch = torch.sign(det_2x2(jac)).item()
        self.names = list(posterior.names)
        bands = lc.bands or ("0",)
        r = bands[self.rise_band]
        self.names[i["t0"]] = f"rise_{r}@{float(self.rise_times[0]):.3g}d"
        self.names[i["tau_rise"]] = f"rise_{r}@{float(self.rise_times[1]):.3g}d"
        for b, k in enumerate(i["A"]):
            self.names[k] = f"log_flux_{bands[b]}@{float(self.reference_times[b]):.3g}d"
        self.lower, self.upper = posterior.lower.clone(), posterior.upper.clone()
        replaced = [i["t0"], i["tau_rise"], *i["A"]]
        self.lower[replaced], self.upper[replaced] = -torch.inf, torch.inf

    # ------------------------------------------------------------------ the map and its inverse

    def _log_shape(self, t, t0, beta, gamma, tau_rise, tau_fall):
        """``ln g(t)``: log of the light curve with ``A = 1`` at observed times ``t``."""
        rest = t0 + (t - t0) / (1 + self.redshift)
        return villar_light_curve(rest, t0, 1.0, beta, gamma, tau_rise, tau_fall,
                                  self.blend_width(tau_fall)).log()

    def _band_params(self, x):
        """``beta, gamma, tau_fall`` per band, ``(..., n_bands)``, from a vector of either space
        (they are the same entries in both)."""
        i = self._index
        return x[..., i["beta"]], x[..., i["gamma"]], x[..., i["tau_fall"]]

    def _rise_and_jacobian(self, s, args, slopes: bool = True):
        """The rise coordinates at ``s = (t0, ln tau_rise)``, ``(..., 2)``, and their Jacobian
        in ``s``, ``(..., 2, 2)``, in closed form (:mod:`skyfit._anchored_rise`); without
        ``slopes`` the rise coordinates only."""
        r = self.rise_band
        beta, gamma, tau_fall = (a[..., r:r + 1] for a in args)
        return rise_equations(self._rise_t, s, beta, gamma, tau_fall,
                               self.blend_width(tau_fall), self.redshift, TORCH_OPS, slopes)

    def from_original(self, x: torch.Tensor) -> torch.Tensor:
        """The new coordinates of the model's parameter vector(s) ``x`` (``(..., dim)``)."""
        x = self.as_tensor(x)
        i = self._index
        beta, gamma, tau_fall = self._band_params(x)
        t0, tau_rise = x[..., i["t0"]], x[..., i["tau_rise"]]
        s = torch.stack([t0, tau_rise.log()], -1)
        ln_g = self._log_shape(self.reference_times, t0[..., None], beta, gamma,
                               tau_rise[..., None], tau_fall)
        w = x.clone()
        w[..., i["A"]] = x[..., i["A"]].log() + ln_g
        w[..., [i["t0"], i["tau_rise"]]] = self._rise_and_jacobian(s, (beta, gamma, tau_fall))[0]
        return w

    def _solve(self, w, beta, gamma, tau_fall, max_iter: int = 30):
        """``(t0, ln tau_rise)`` for the rise coordinates of ``w`` and ``ln |det J|``, ``J`` the
        Jacobian of the rise coordinates in ``(t0, ln tau_rise)``. Newton's method from the
        anchor without a graph; rows it leaves unsolved or on the other side of the fold are
        solved again by continuation from the anchor (:meth:`_continue`). Then one Newton step
        at the solution with a graph: the step is ~0, its derivatives are the exact first
        derivatives of the solution (implicit function theorem). Rows with no solution on the
        anchor's branch are NaN."""
        i = self._index
        target = w[..., [i["t0"], i["tau_rise"]]]
        args = (beta, gamma, tau_fall)
        with torch.no_grad():
            s, res, jac = self._newton(self._start.expand(target.shape).clone(), target, args,
                                       max_iter)
            failed = ~self._solved(res, jac)
            if bool(failed.any()):
                s = torch.where(failed[..., None], self._continue(target, args, max_iter), s)
                res, jac = self._rise_and_jacobian(s, args)
                res = res - target
        ok = (res.abs() < 1e-8).all(-1, keepdim=True)
        # the residual with a graph to w (through args and target), s and J without one
        res = self._rise_and_jacobian(s, args, slopes=False) - target
        s = torch.where(ok, s - solve_2x2(jac, res), torch.nan)
        det = det_2x2(self._rise_and_jacobian(s, args)[1])
        # the other side of a fold of the map (see the class docstring): not this branch
        s = torch.where((det * self._branch > 0)[..., None], s, torch.nan)
        return s, det.abs().log()

    def _newton(self, s, target, args, max_iter: int):
        """Newton's method for ``_rise_and_jacobian(s)[0] = target`` from ``s`` (no graph),
        with bounded steps: a full step from far away may leave the model's range. Returns
        the last ``s``, the residual and the Jacobian there. Iterated in float64 numpy
        (tensors in and out): on a few rows torch's per-operation overhead was most of the
        solve's cost; the graph's last step (:meth:`_solve`) is torch's."""
        like, r = s, self.rise_band
        s, target = numpy_copy(s), numpy_copy(target)
        beta, gamma, tau_fall = (a[..., r:r + 1] for a in args)
        rise = (self._rise_t_np, *(numpy_copy(a) for a in (beta, gamma, tau_fall)),
                numpy_copy(torch.as_tensor(self.blend_width(tau_fall), dtype=torch.float64)))
        with np.errstate(all="ignore"):  # NaN rows are found unsolved by the caller
            for k in range(max_iter + 1):
                res, jac = rise_equations(rise[0], s, *rise[1:], self.redshift, NUMPY_OPS)
                res = res - target
                if k == max_iter:
                    break
                step = solve_2x2(jac, res)
                step[..., 0] = np.clip(step[..., 0], -10.0, 10.0)
                step[..., 1] = np.clip(step[..., 1], -1.0, 1.0)
                s = s - step
                if bool((np.abs(step) < 1e-10).all()):
                    max_iter = k + 1  # the residual and Jacobian at the last s, then stop
        return tuple(torch.as_tensor(v, dtype=like.dtype, device=like.device)
                     for v in (s, res, jac))

    def _solved(self, res, jac):
        """Rows whose residual ``res`` and Jacobian ``jac`` say a solution on the anchor's side
        of the fold."""
        return (res.abs() < 1e-9).all(-1) & (det_2x2(jac) * self._branch > 0)

    def _continue(self, target, args, max_iter: int, n_stages: int = 16):
        """The solution reached by following it from the anchor, where it is known, along the
        straight line to ``args`` and ``target`` in ``n_stages`` stages (a few Newton steps
        each). Plain Newton from the anchor fails where the solution lies far from it (a long
        plateau moves the solution's ``t0`` by tens of days) or where its steps cross a region
        where the model's flux is not positive; the continuation stays on the anchor's branch
        as long as one exists along the path."""
        anchor_args = self._band_params(self._anchor)
        anchor_target = self._rise_and_jacobian(self._start, anchor_args)[0]
        s = self._start.expand(target.shape).clone()
        for k in range(1, n_stages + 1):
            f = k / n_stages
            stage_args = tuple(a0 + f * (a - a0) for a0, a in zip(anchor_args, args))
            stage_target = anchor_target + f * (target - anchor_target)
            s = self._newton(s, stage_target, stage_args, 8 if k < n_stages else max_iter)[0]
        return s

    def _original_and_log_jacobian(self, w):
        i = self._index
        beta, gamma, tau_fall = self._band_params(w)
        s, log_det = self._solve(w, beta, gamma, tau_fall)
        t0, tau_rise = s[..., 0], s[..., 1].exp()
        ln_g = self._log_shape(self.reference_times, t0[..., None], beta, gamma,
                               tau_rise[..., None], tau_fall)
        ln_a = w[..., i["A"]] - ln_g
        x = w.clone()
        x[..., i["t0"]], x[..., i["tau_rise"]] = t0, tau_rise
        x[..., i["A"]] = ln_a.exp()
        # |dx/dw|: A_b = exp(ln_a) (ln A_b has unit slope in ln f_b), tau_rise = exp(ln tau),
        # (t0, ln tau) from the rise coordinates: 1 / |det J|; block triangular, so a product
        return x, ln_a.sum(-1) + s[..., 1] - log_det

    def on_anchor_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Whether the model's parameter vector(s) ``x`` lie on the anchor's side of the fold
        (those this density represents), ``(...,)`` bool."""
        x = self.as_tensor(x)
        i = self._index
        s = torch.stack([x[..., i["t0"]], x[..., i["tau_rise"]].log()], -1)
        return det_2x2(self._rise_and_jacobian(s, self._band_params(x))[1]) * self._branch > 0

    def to_original(self, w: torch.Tensor) -> torch.Tensor:
        """The model's parameter vector(s) of the new coordinates ``w`` (``(..., dim)``)."""
        return self._original_and_log_jacobian(self.as_tensor(w))[0]

    def log_abs_det_jacobian(self, w: torch.Tensor) -> torch.Tensor:
        """``ln |d(original) / d(new)|`` at ``w``."""
        return self._original_and_log_jacobian(self.as_tensor(w))[1]

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        x, log_jac = self._original_and_log_jacobian(w)
        bad = ~torch.isfinite(x).all(-1)
        if bool(bad.any()):  # Newton did not converge: outside the map's range
            x = torch.where(bad[..., None], self._anchor.to(x), x)
            return torch.where(bad, -torch.inf, self.posterior.log_prob(x) + log_jac)
        return self.posterior.log_prob(x) + log_jac

    def fingerprint(self) -> dict:
        """The posterior's (data, settings, priors) under these coordinates' names, bounds,
        anchor and times: a checkpoint resumes only on the same posterior, same coordinates."""
        inner = self.posterior.fingerprint()
        own = data_fingerprint(self.names, lower=self.lower, upper=self.upper, anchor=self._anchor,
                               rise_times=self.rise_times, reference_times=self.reference_times)
        return {**inner, "names": own["names"], "arrays": {**inner["arrays"], **own["arrays"]},
                "rise_band": int(self.rise_band)}

    def initial(self) -> torch.Tensor:
        return self.from_original(self.posterior.initial())

    # ------------------------------------------------------------------ results, both ways

    def gaussian(self, approximation) -> GaussianApproximation:
        """A Gaussian approximation of the posterior (e.g. its Laplace approximation) in these
        coordinates (delta method), to start :func:`~skyfit.inference.sample_nuts` from."""
        mean, cov = approximation.propagate(self.from_original)
        return GaussianApproximation(mean, cov, list(self.names))

    def original_samples(self, samples: Samples) -> Samples:
        """``samples`` of this density as draws of the model's parameters (the posterior's
        names; ``log_density`` that of the posterior, without the Jacobian)."""
        w = torch.as_tensor(samples.draws, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            x = self.to_original(w)
            log_density = self.posterior.log_prob(x)
        return Samples(draws=x.cpu().numpy(), names=list(self.posterior.names),
                       log_density=log_density.cpu().numpy(), sampler=samples.sampler,
                       sample_stats=samples.sample_stats,
                       info={**samples.info, "coordinates": list(self.names)},
                       units=self.posterior.units)


def _villar_slices(posterior, lc) -> dict:
    """Positions in the posterior's vector: ``t0``, ``tau_rise`` (ints), ``A``, ``beta``,
    ``gamma``, ``tau_fall`` (one index per band); a clear error for unsupported models."""
    if not isinstance(lc, Villar) or not lc.relative_slope:
        raise ValueError("VillarAnchoredDensity needs a Villar light curve with "
                         "relative_slope=True (as from_photometry builds it), got "
                         f"{type(lc).__name__}")
    by_param = {id(p): (sl, shape) for sl, shape, p in posterior.slices.values()}
    out = {}
    for name in ("t0", "tau_rise", "A", "beta", "gamma", "tau_fall"):
        entry = by_param.get(id(getattr(lc, name)))
        if entry is None:
            raise ValueError(f"VillarAnchoredDensity needs {name} dynamic in the posterior")
        sl, shape = entry
        idx = list(range(sl.start, sl.stop))
        per_band = tuple(shape) == (lc.n_bands,)
        if name in ("t0", "tau_rise"):
            if tuple(shape) != ():
                raise ValueError(f"VillarAnchoredDensity needs {name} shared by all bands")
            out[name] = idx[0]
        elif name == "A":
            if not per_band:
                raise ValueError("VillarAnchoredDensity needs one amplitude A per band")
            out[name] = idx
        elif per_band or tuple(shape) == ():
            out[name] = idx if per_band else idx * lc.n_bands
        else:
            raise ValueError(f"VillarAnchoredDensity needs {name} per band or shared by all "
                             f"bands, not by a subset (shape {tuple(shape)})")
    return out


def _static_redshift(lc) -> float:
    z = getattr(lc, "redshift", None)
    if z is None:
        return 0.0
    if z.dynamic:
        raise ValueError("VillarAnchoredDensity needs a static redshift")
    return float(z.value)
