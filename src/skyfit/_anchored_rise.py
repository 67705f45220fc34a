"""The rise map of :class:`~skyfit.lightcurve_anchored.VillarAnchoredDensity` in closed form:
the log of a Villar light curve's shape (``A = 1``, relative slope) and its derivatives in
``(t0, ln tau_rise)``, the rise equations, 2 x 2 linear solves, and the rise epochs' choice.

Why closed form: the density solves the rise equations by Newton's method at every evaluation
and needs their Jacobian's log-determinant with a graph. Forward differences cost three
evaluations per Newton step and were accurate to ~1e-7 only (so was the implicit-function
gradient built on them); two nested autograd passes for the determinant (``create_graph``) and
the double backward through them were the largest part of a NUTS gradient's cost after the
posterior itself. Here one evaluation gives the value and both derivatives to rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .lightcurves.functions import _time_scale

# the elementwise functions of log_shape_and_slopes: torch's, or numpy's for Newton's iterations
# (no graph; a few rows: numpy's per-operation overhead is a fraction of torch's)
TORCH_OPS = (torch.exp, torch.log, F.logsigmoid, torch.sigmoid, _time_scale)
NUMPY_OPS = (np.exp, np.log, lambda v: -np.logaddexp(0.0, -v),
             lambda v: np.exp(-np.logaddexp(0.0, -v)),
             lambda tau: np.maximum(tau, np.finfo(np.float64).tiny ** 0.25))


def log_shape_and_slopes(t, t0, beta, gamma, ln_tau_rise, tau_fall, width, redshift: float,
                         ops=TORCH_OPS, slopes: bool = True):
    """``ln g(t)``, ``d ln g / d t0`` and ``d ln g / d ln tau_rise`` of the Villar shape
    :func:`~skyfit.lightcurves.functions.villar_light_curve` with ``A = 1`` at observed times
    ``t`` (rest-frame time ``(t - t0) / (1 + z)`` after ``t0``); arguments broadcast.

    With ``x = dt / tau_rise``, the blend weight ``w = sigmoid((dt - gamma) / width)`` and
    ``a = dt - gamma``: ``g = sigmoid(x) H(dt)``, ``H = (1 + beta dt)(1 - w) + (1 + beta gamma)
    w exp(-a / tau_fall)``, so ``d ln g / d ln tau_rise = -x sigmoid(-x)`` and
    ``d ln g / d dt = sigmoid(-x) / tau_rise + H' / H``. ``ops``: :data:`TORCH_OPS` for
    tensors, :data:`NUMPY_OPS` for float64 arrays. Without ``slopes``: ``ln g(t)`` only.

    Example:
        >>> import torch
        >>> t = torch.tensor([2.0, 40.0], dtype=torch.float64)  # days
        >>> ln_tau = torch.tensor(1.0, dtype=torch.float64)
        >>> ln_g, d_t0, d_tau = log_shape_and_slopes(t, 0.0, -0.01, 20.0, ln_tau, 30.0, 6.0, 0.0)
        >>> bool(d_t0[0] < 0 and d_tau[0] < 0)  # on the rise: later or slower means fainter
        True
    """
    exp, log, log_sigmoid, sigmoid, time_scale = ops
    k = 1.0 / (1.0 + redshift)
    dt = (t - t0) * k
    rate = 1.0 / time_scale(exp(ln_tau_rise))
    fall_rate = 1.0 / time_scale(tau_fall)
    x = dt * rate
    after_end = dt - gamma
    inv_width = 1.0 / width
    u = after_end * inv_width
    log_w = log_sigmoid(u)
    before = exp(log_w - u)  # 1 - w
    decline = exp(log_w - after_end * fall_rate)  # w exp(-a / tau_fall)
    level, end_level = 1.0 + beta * dt, 1.0 + beta * gamma
    h = level * before + end_level * decline
    if not slopes:
        return log_sigmoid(x) + log(h)
    slope = (beta * before - level * before * sigmoid(u) * inv_width
             + end_level * decline * (before * inv_width - fall_rate))
    not_risen = sigmoid(-x)
    d_dt = not_risen * rate + slope / h
    return log_sigmoid(x) + log(h), -k * d_dt, -x * not_risen


def solve_2x2(jac, rhs):
    """``jac^{-1} rhs`` for batches of 2 x 2 systems (``(..., 2, 2)``, ``(..., 2)``; tensors
    or arrays)."""
    a, b, c, d = jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1]
    det = a * d - b * c
    parts = [(d * rhs[..., 0] - b * rhs[..., 1]) / det, (a * rhs[..., 1] - c * rhs[..., 0]) / det]
    return torch.stack(parts, -1) if torch.is_tensor(det) else np.stack(parts, -1)


def det_2x2(jac):
    """Determinants of a batch of 2 x 2 matrices ``(..., 2, 2)``."""
    return jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]


def rise_equations(t, s, beta, gamma, tau_fall, width, redshift: float, ops,
                    slopes: bool = True):
    """The rise coordinates (log shape at ``t[:2]`` minus at ``t[2]``) at ``s = (t0, ln
    tau_rise)`` and their Jacobian in ``s`` (with ``slopes``); tensors, or arrays with
    ``ops=NUMPY_OPS``."""
    out = log_shape_and_slopes(t, s[..., :1], beta, gamma, s[..., 1:], tau_fall, width,
                               redshift, ops, slopes)
    if not slopes:
        return out[..., :2] - out[..., 2:]
    ln_g, d_t0, d_tau = out
    jac = (d_t0[..., :2] - d_t0[..., 2:], d_tau[..., :2] - d_tau[..., 2:])
    jac = torch.stack(jac, -1) if ops is TORCH_OPS else np.stack(jac, -1)
    return ln_g[..., :2] - ln_g[..., 2:], jac


def numpy_copy(v) -> np.ndarray:
    """A float64 numpy copy of a tensor (no graph)."""
    return v.detach().to("cpu", torch.float64).numpy()


def rise_anchors(time, band, flux, det, n_bands: int, rise_band):
    """The band with most detections before the peak of the best-sampled band (unless given)
    and its two rise epochs: 10% and 80% of the way from its first detection to that peak."""
    counts = torch.bincount(band[det], minlength=n_bands)
    best = torch.nonzero(det & (band == int(counts.argmax()))).flatten()
    t_peak = float(time[best[flux[best].argmax()]])
    if rise_band is None:
        before = torch.bincount(band[det & (time < t_peak)], minlength=n_bands)
        rise_band = int(before.argmax())
    first = float(time[det & (band == rise_band)].min())
    span = max(t_peak - first, 1.0)
    return rise_band, [first + 0.1 * span, first + 0.8 * span]
