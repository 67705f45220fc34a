"""Unconstrained reparametrisation of a bounded log-density, with its log |Jacobian|."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .density import LogDensity

__all__ = ["UnconstrainedDensity"]


class UnconstrainedDensity(LogDensity):
    """``log p(x(z)) + log |dx/dz|`` for an unconstrained ``z`` in R^dim.

    Per entry: both bounds finite -> ``x = lo + (hi - lo) sigmoid(z)``; lower only ->
    ``x = lo + exp(z)``; upper only -> ``x = hi - exp(z)``; none -> ``x = z`` (as Stan).
    Without the Jacobian term a sampler in ``z`` would sample the wrong distribution.

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

    def fingerprint(self) -> dict:
        """The fingerprint of the constrained density (the same problem, reparametrised)."""
        return self.density.fingerprint()

    def to_constrained(self, z: torch.Tensor) -> torch.Tensor:
        """Map unconstrained ``z`` to parameters within the bounds: a scaled sigmoid between two
        bounds, ``exp`` beside one bound, identity without bounds."""
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        both = self._lo + (self._hi - self._lo) * torch.sigmoid(z)
        low = self._lo + torch.exp(z)
        high = self._hi - torch.exp(z)
        return torch.where(self._both, both, torch.where(self._low_only, low,
                           torch.where(self._high_only, high, z)))

    def to_unconstrained(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_constrained` (logit / log), for points inside the bounds."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        width = torch.where(self._both, self._hi - self._lo, torch.ones_like(self._lo))
        u = ((x - self._lo) / width).clamp(1e-300, 1 - 1e-16)
        both = torch.log(u) - torch.log1p(-u)
        low = torch.log((x - self._lo).clamp(min=1e-300))
        high = torch.log((self._hi - x).clamp(min=1e-300))
        return torch.where(self._both, both, torch.where(self._low_only, low,
                           torch.where(self._high_only, high, x)))

    def log_abs_det_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """``log |d x / d z|`` of :meth:`to_constrained` at ``z``, summed over parameters."""
        width = torch.where(self._both, self._hi - self._lo, torch.ones_like(self._lo))
        # -softplus(-z) = log sigmoid(z); F.logsigmoid is avoided because it is multithreaded
        # even for tiny tensors, which contends with the log-density's own threads
        both = torch.log(width) - F.softplus(-z) - F.softplus(z)
        one_sided = z
        terms = torch.where(self._both, both,
                            torch.where(self._low_only | self._high_only, one_sided,
                                        torch.zeros_like(z)))
        return terms.sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of ``z``: the density at ``to_constrained(z)`` plus the log-Jacobian."""
        return self.density.log_prob(self.to_constrained(z)) + self.log_abs_det_jacobian(z)
