"""Unconstrained reparametrisation of a bounded log-density, with its log |Jacobian|."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .density import LogDensity

__all__ = ["UnconstrainedDensity", "UnwrappedAngles"]


class UnconstrainedDensity(LogDensity):
    """``log p(x(z)) + log |dx/dz|`` for an unconstrained ``z`` in R^dim.

    Per entry: both bounds finite -> ``x = lo + (hi - lo) sigmoid(z)``; lower only ->
    ``x = lo + exp(z)``; upper only -> ``x = hi - exp(z)``; none -> ``x = z`` (as Stan).
    Without the Jacobian term a sampler in ``z`` would sample the wrong distribution.

    Periodic entries (``density.periodic``, e.g. angles of period ``P = hi - lo``) have no wall:
    ``x = lo + (z - lo) mod P`` with ``z`` unbounded (``|dx/dz| = 1``), and ``z`` carries a
    weak Normal ``P N(z; c, (10 P)^2)`` centred on the range, so that the density of ``z`` is
    proper and normalised. The wrapped marginal is ``p(x) P sum_k N(x + kP; c, (10P)^2)``, and
    by Poisson summation ``P sum_k N(...) = 1 + O(exp(-200 pi^2))``: exactly ``p(x)`` in
    floating point. Within one
    period the Normal tilts the density by at most ``1 / (200 P)`` per unit of ``x``, far below
    any posterior width. The Normal's log-density is part of :meth:`log_abs_det_jacobian`.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> flat = FunctionDensity(lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype), 1, 0.0, 1.0)
        >>> u = UnconstrainedDensity(flat)
        >>> round(u(torch.zeros(1)).exp().item(), 4)  # density of z at 0: sigmoid'(0) = 1/4
        0.25
    """

    def __init__(self, density: LogDensity):
        self.density = density
        self.names = list(density.names)
        lo, hi = density.lower, density.upper
        self.lower = torch.full_like(lo, -torch.inf)
        self.upper = torch.full_like(hi, torch.inf)
        self._lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
        self._hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
        self._both = torch.isfinite(lo) & torch.isfinite(hi)
        self._low_only = torch.isfinite(lo) & ~torch.isfinite(hi)
        self._high_only = ~torch.isfinite(lo) & torch.isfinite(hi)
        self._periodic = density.periodic & self._both
        # a Python bool, so that torch.compile traces to_constrained without a graph break
        self._any_periodic = bool(self._periodic.any())
        self._period = torch.where(self._periodic, self._hi - self._lo, torch.ones_like(lo))
        self._center = 0.5 * (self._lo + self._hi)

    @property
    def periodic(self) -> torch.Tensor:
        """Mask ``(dim,)`` of the periodic coordinates: an angle stays an unbounded variable
        here, wrapped when mapped back (:meth:`wrap`)."""
        return self._periodic

    def wrap(self, x: torch.Tensor) -> torch.Tensor:
        """Periodic entries of ``x`` brought into ``[lo, hi)``; the others unchanged."""
        wrapped = self._lo + torch.remainder(x - self._lo, self._period)
        return torch.where(self._periodic, wrapped, x)

    def fingerprint(self) -> dict:
        """The fingerprint of the constrained density (the same problem, reparametrised)."""
        return self.density.fingerprint()

    def to_constrained(self, z: torch.Tensor) -> torch.Tensor:
        """Map unconstrained ``z`` to parameters within the bounds: a scaled sigmoid between two
        bounds, ``exp`` beside one bound, identity without bounds."""
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        both = self._lo + (self._hi - self._lo) * torch.sigmoid(z)
        exp_z = torch.exp(z)
        low, high = self._lo + exp_z, self._hi - exp_z
        x = torch.where(self._both, both, torch.where(self._low_only, low,
                        torch.where(self._high_only, high, z)))
        if not self._any_periodic:
            return x
        return torch.where(self._periodic, self.wrap(z), x)

    def to_unconstrained(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_constrained` (logit / log), for points inside the bounds."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        width = torch.where(self._both, self._hi - self._lo, torch.ones_like(self._lo))
        u = ((x - self._lo) / width).clamp(1e-300, 1 - 1e-16)
        both = torch.log(u) - torch.log1p(-u)
        low = torch.log((x - self._lo).clamp(min=1e-300))
        high = torch.log((self._hi - x).clamp(min=1e-300))
        z = torch.where(self._both, both, torch.where(self._low_only, low,
                        torch.where(self._high_only, high, x)))
        return torch.where(self._periodic, self.wrap(x), z)

    def log_abs_det_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """``log |d x / d z|`` of :meth:`to_constrained` at ``z``, summed over parameters."""
        width = torch.where(self._both, self._hi - self._lo, torch.ones_like(self._lo))
        # -softplus(-z) = log sigmoid(z); F.logsigmoid is avoided because it is multithreaded
        # even for tiny tensors, which contends with the log-density's own threads
        both = torch.log(width) - F.softplus(-z) - F.softplus(z)
        one_sided = z
        # periodic: |dx/dz| = 1, and the log-density of the weak Normal on the unwrapped z
        terms = torch.where(self._both, both, torch.where(self._low_only | self._high_only,
                                                          one_sided, torch.zeros_like(z)))
        if self._any_periodic:  # (a gradient's few operations fewer without angles)
            terms = torch.where(self._periodic, self.line_weight(z), terms)
        return terms.sum(-1)

    def line_weight(self, z: torch.Tensor) -> torch.Tensor:
        """``log(P N(z; c, (10 P)^2))`` per entry (meaningful at the periodic ones): the weak
        Normal that makes the density of an unwrapped angle ``z`` proper, normalised so that
        its wrapped marginal is the density's own (see the class docstring)."""
        spread = 10.0 * self._period
        return -0.5 * ((z - self._center) / spread) ** 2 - math.log(10.0) \
            - 0.5 * math.log(2 * math.pi)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of ``z``: the density at ``to_constrained(z)`` plus the log-Jacobian."""
        return self.density.log_prob(self.to_constrained(z)) + self.log_abs_det_jacobian(z)


class UnwrappedAngles(LogDensity):
    """``density`` with each periodic entry (an angle of period ``P``) as an unbounded variable
    ``z``, ``x = lo + (z - lo) mod P``, weighted by :meth:`UnconstrainedDensity.line_weight` so
    that the density of ``z`` is proper and its wrapped marginal is exactly ``density``'s; the
    other entries keep their values and bounds (no Jacobian, unlike
    :class:`UnconstrainedDensity`).

    For samplers that move in the constrained space (emcee): an angle near an end of its range
    is crossed smoothly instead of meeting a wall. :meth:`wrap` brings draws of ``z`` back.

    Example:
        >>> import math, torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: torch.cos(2 * x[..., 0]), ["phi"], 0.0, math.pi,
        ...                     periodic=["phi"])
        >>> line = UnwrappedAngles(d)
        >>> line.upper.tolist(), round(float(line.wrap(torch.tensor([-0.1]))), 6)
        ([inf], 3.041593)
    """

    def __init__(self, density: LogDensity):
        self.density = density
        self.names = list(density.names)
        self._line = UnconstrainedDensity(density)
        self._angles = self._line.periodic
        self.lower = torch.where(self._angles, -torch.inf, density.lower)
        self.upper = torch.where(self._angles, torch.inf, density.upper)

    @property
    def units(self) -> dict[str, str]:
        """The density's units."""
        return self.density.units

    def initial(self) -> torch.Tensor:
        """The density's initial point (inside the canonical range)."""
        return self.density.initial()

    def wrap(self, z: torch.Tensor) -> torch.Tensor:
        """The angles of ``z`` brought into their canonical range; the others unchanged."""
        return self._line.wrap(torch.as_tensor(z, dtype=self.dtype, device=self.device))

    def set(self, z) -> None:
        """Write the wrapped point into the model (:meth:`LogDensity.set`)."""
        self.density.set(self.wrap(self.as_tensor(z)))

    def weight(self, z: torch.Tensor) -> torch.Tensor:
        """The weak Normal's log-density of the unwrapped angles of ``z (..., dim)``, ``(...)``:
        ``log_prob(z) - weight(z)`` is the density's own ``log p(wrap(z))``."""
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        return torch.where(self._angles, self._line.line_weight(z), torch.zeros_like(z)).sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(wrap(z))`` plus the weak Normal of the unwrapped angles (:meth:`weight`)."""
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        return self.density.log_prob(self.wrap(z)) + self.weight(z)
