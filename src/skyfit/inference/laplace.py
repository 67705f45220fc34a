"""Laplace approximation: the Hessian at a mode as a Gaussian covariance, and the delta method."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import HessianWarning, LogDensityError
from .approximations import GaussianApproximation, units_of
from .circular import wrap
from .compiled import CompiledDensity
from .density import LogDensity
from .initialization import resolve_point
from .results import Samples
from .verdict import pinned_mask

__all__ = ["log_density_hessian", "laplace", "LaplaceResult"]


def log_density_hessian(density: LogDensity, x: torch.Tensor) -> torch.Tensor:
    """Hessian ``d^2 log p / dx dx^T`` at ``x (dim,)``: reverse-over-reverse autograd, the
    gradient's graph differentiated once more for all ``dim`` rows in one batched backward pass
    (``torch.autograd.grad(..., is_grads_batched=True)``).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -(x[..., 0] ** 2 + 3 * x[..., 0] * x[..., 1]), 2)
        >>> log_density_hessian(d, torch.zeros(2)).tolist()  # d2/dx0^2 = -2, d2/dx0dx1 = -3
        [[-2.0, -3.0], [-3.0, 0.0]]
    """
    x = density.as_tensor(x).detach()
    # a compiled density gives first derivatives: the Hessian is taken on its eager density
    if isinstance(density, CompiledDensity):
        density = density.eager_density
    f = lambda v: density.log_prob(v)  # noqa: E731
    try:
        H = _batched_double_backward(f, x)
    except (RuntimeError, NotImplementedError):  # an op without a batched backward: row by row
        H = torch.autograd.functional.hessian(f, x)
    H = 0.5 * (H + H.T)  # exact symmetry for Cholesky
    if not torch.isfinite(H).all():
        raise LogDensityError("the Hessian has NaN or inf entries at this point (parameters "
                              f"{density.names}); is the point inside the support?")
    return H


def _batched_double_backward(f, x: torch.Tensor) -> torch.Tensor:
    # Same values as torch.func.jacrev(jacrev(f)) (the previous implementation) at about half
    # its cost on small image models, and without torch.func's first-call import of
    # torch._dynamo (seconds, once per process)
    zeros = torch.zeros(x.shape[0], x.shape[0], dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = f(x)
        if not value.requires_grad:  # constant in x (e.g. -inf outside the support)
            return zeros
        (grad,) = torch.autograd.grad(value, x, create_graph=True)
        if not grad.requires_grad:  # linear in x
            return zeros
        eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
        with warnings.catch_warnings():  # torch's note that an op has no batching rule
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            (H,) = torch.autograd.grad(grad, x, eye, is_grads_batched=True)
    return H.detach()


@dataclass(repr=False)
class LaplaceResult(GaussianApproximation):
    """Gaussian approximation ``N(mean, covariance)`` of a posterior around its mode, in the
    constrained (physical) space.

    Attributes (beyond :class:`GaussianApproximation`'s ``mean``, ``covariance``, ``names``,
    ``space``, ``std``, ``correlation``):
        hessian: ``H`` at the mode. repaired: True if ``-H`` was not positive definite and was
        repaired (see :func:`laplace`). periodic: ``{name: [lower, upper]}`` of the periodic
        parameters: the Gaussian lives on their unwrapped line, its draws are wrapped.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity, laplace
        >>> d = FunctionDensity(lambda x: -0.5 * (((x - 1.0) / 0.5) ** 2).sum(-1), ["mu"])
        >>> result = laplace(d, torch.ones(1))  # a Gaussian of sd 0.5: Laplace is exact
        >>> round(float(result.std[0]), 6), result.repaired
        (0.5, False)
        >>> round(float(result.sample(20000, seed=1).draws.std()), 2)
        0.5
    """

    hessian: torch.Tensor = None
    repaired: bool = False
    periodic: dict = field(default_factory=dict)

    def _summary_extra(self) -> str:
        return ", -H repaired to positive definite" if self.repaired else ""

    def sample(self, n: int = 4000, seed: int = 0) -> Samples:
        """Draws from the Gaussian approximation, as one chain of :class:`Samples` (periodic
        parameters wrapped into their range; the Samples' summary is then circular)."""
        draws = self.draw(n, seed)[None].cpu().numpy()
        for name, (lo, hi) in self.periodic.items():
            i = self.names.index(name)
            draws[..., i] = wrap(draws[..., i], lo, hi)
        return Samples(draws=draws, names=list(self.names),
                       log_density=np.full((1, n), np.nan), sampler="laplace",
                       units=dict(self.units),
                       info={"periodic": dict(self.periodic)} if self.periodic else {})


def _warn_at_bounds(density: LogDensity, x: torch.Tensor) -> None:
    # a parameter pinned at its bound with the density still rising outward (e.g. a flux fitted
    # to 0) is not at a mode: its Gaussian error is no confidence interval, say so
    at_low, at_high = x <= density.lower, x >= density.upper
    if not ((at_low | at_high) & ~density.periodic).any():
        return
    _, g = density.value_and_grad(x)
    pinned = pinned_mask(x, g, density)
    if pinned.any():
        names = [f"{density.names[i]}={x[i].item():g}" for i in torch.nonzero(pinned).flatten()]
        warnings.warn(HessianWarning(
            f"{', '.join(names)} at the bound of the valid range with the log-density still "
            "rising outward: not a mode, so the Laplace error there is no confidence interval; "
            "quote a limit (e.g. from samples) for these parameters"), stacklevel=3)


def _check_finite_point(density: LogDensity, x: torch.Tensor) -> None:
    # at a NaN/inf point the Hessian is NaN, or zero where log p is a constant -inf: say that,
    # rather than calling the Hessian flat
    logp, grad = density.value_and_grad(x)
    if not (torch.isfinite(logp) and torch.isfinite(grad).all()):
        bad = [n for n, g in zip(density.names, grad.tolist()) if not np.isfinite(g)]
        values = ", ".join(f"{n}={v:g}" for n, v in zip(density.names, x.tolist()))
        raise LogDensityError(
            f"laplace: log p or its gradient is NaN or inf at the point ({values}): "
            f"log p = {float(logp):g}"
            + (f", non-finite gradient for {bad}" if bad else "")
            + ": no Gaussian approximation there; pass a converged mode (fit_map's result)")


def laplace(density: LogDensity, x=None, tol: float = 1e-12) -> LaplaceResult:
    """Laplace approximation at a mode ``x`` of ``density``.

    The covariance is ``(-H)^-1`` with ``H`` the Hessian of ``log p`` at ``x``. Positive
    definiteness of ``-H`` is checked by Cholesky (``torch.linalg.cholesky_ex``). If it fails (a
    flat or curved-the-wrong-way direction: ``x`` is not a mode, or a parameter is not
    constrained), a :class:`~skyfit.errors.HessianWarning` names the parameters that dominate
    each bad eigen-direction, and the precision is repaired by replacing each eigenvalue
    ``lambda`` by ``max(|lambda|, tol * max|lambda|)`` (eigenvalues below ``tol * max|lambda|``
    count as flat even when Cholesky succeeds): negative curvature is mirrored (as in
    saddle-free Newton, Dauphin et al. 2014, arXiv:1406.2572) and flat directions get a very
    large but finite variance. Treat the uncertainties along those directions as meaningless.

    Arguments:
        density: any :class:`~skyfit.inference.LogDensity`.
        x: the mode: a :class:`MAPResult`, a ``(dim,)`` vector, a ``{name: value}`` dict or an
            ``init_to_*`` strategy (resolved by :func:`~skyfit.inference.resolve_point`;
            ``None``: ``density.initial()``).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> C = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        >>> P = torch.linalg.inv(C)
        >>> d = FunctionDensity(lambda x: -0.5 * ((x @ P) * x).sum(-1), 2)
        >>> torch.allclose(laplace(d, torch.zeros(2)).covariance, C)
        True
    """
    x = resolve_point(density, x)
    _check_finite_point(density, x)
    _warn_at_bounds(density, x)
    H = log_density_hessian(density, x)
    precision = -H
    _, info = torch.linalg.cholesky_ex(precision)
    # judge flatness on the Jacobi-scaled precision S P S (S = diag(P)^-1/2): invariant to the
    # parameters' units, so a PD Hessian of arcsec- and flux-sized parameters is not "flat"
    d = precision.diagonal()
    s = torch.where(d > 0, d.clamp(min=torch.finfo(d.dtype).tiny).rsqrt(), torch.ones_like(d))
    scaled = precision * s[:, None] * s[None, :]
    evals, evecs = torch.linalg.eigh(scaled)
    scale = evals.abs().max().clamp(min=torch.finfo(evals.dtype).tiny)
    bad = evals <= tol * scale  # Cholesky also "succeeds" on numerically singular matrices
    repaired = False
    if int(info) != 0 or bad.any():
        parts = []
        for i in torch.nonzero(bad).flatten().tolist():
            top = evecs[:, i].abs().argsort(descending=True)[:3].tolist()
            kind = "flat" if evals[i].abs() <= tol * scale else "negative curvature"
            parts.append(f"{kind} (eigenvalue {evals[i].item():.3g}) along "
                         + ", ".join(f"{density.names[j]} ({evecs[j, i].item():+.2f})"
                                     for j in top))
        warnings.warn(HessianWarning(
            "-Hessian is not positive definite at this point: " + "; ".join(parts)
            + ". Repaired by |eigenvalue| with a floor; those uncertainties are not meaningful. "
            "Check that the point is a converged mode and that every parameter is constrained."),
            stacklevel=2)
        fixed = torch.maximum(evals.abs(), tol * scale)
        precision = ((evecs * fixed) @ evecs.T) / (s[:, None] * s[None, :])
        repaired = True
    L = torch.linalg.cholesky(precision)
    covariance = torch.cholesky_inverse(L)
    covariance = 0.5 * (covariance + covariance.T)
    periodic = {n: [float(lo), float(hi)] for n, lo, hi, w in zip(
        density.names, density.lower.tolist(), density.upper.tolist(), density.periodic.tolist())
        if w}
    return LaplaceResult(mean=x, covariance=covariance, names=list(density.names),
                         units=units_of(density), space="constrained", hessian=H,
                         repaired=repaired, periodic=periodic)
