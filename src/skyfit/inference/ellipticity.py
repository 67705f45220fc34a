"""Ellipticity ``(e1, e2)`` as smooth coordinates for an ellipse's axis ratio and angle.

Convention (lenstronomy's ``param_util.phi_q2_ellipticity``)::

    e1 = (1 - q) / (1 + q) cos(2 phi),   e2 = (1 - q) / (1 + q) sin(2 phi)

with ``q`` the axis ratio (minor / major, in ``(0, 1]``) and ``phi`` the position angle of the
major axis (rad, counter-clockwise from +x, period pi). ``q -> 1`` is ``e -> 0``, an interior
point, and swapping the axes is a smooth path through it, where ``(q, phi)`` has a wall at
``q = 1`` and an undefined angle.
"""

from __future__ import annotations

import math

import torch

from .._ellipticity import e1e2_to_q_phi, q_phi_to_e1e2
from .density import LogDensity

__all__ = ["q_phi_to_e1e2", "e1e2_to_q_phi", "EllipticityCoordinates", "ellipse_pairs"]

def ellipse_pairs(density: LogDensity) -> list[tuple[int, int]]:
    """Indices ``(i_q, i_phi)`` of each ``<prefix>.q`` / ``<prefix>.phi`` pair of ``density``
    with ``q`` in ``(lo, 1]`` and ``phi`` periodic over ``[0, pi)``: the ellipses of
    :class:`~skyfit.Sersic`, :class:`~skyfit.GaussianSource` and the SIE lens."""
    index = {n: i for i, n in enumerate(density.names)}
    pairs = []
    for name, i in index.items():
        if not name.endswith(".q"):
            continue
        j = index.get(name[:-2] + ".phi")
        if j is None or not bool(density.periodic[j]):
            continue
        # q_lo <= 0.99: EllipticityCoordinates keeps q above q_lo by a margin (1e-6 of the
        # disc's radius) that must exceed the floor of |e| (1e-8); no ellipse needs it above.
        # pi within 1e-6: a bound declared in float32 (a float32 model, caustics' Params) is
        # pi rounded to 3.14159274
        if float(density.upper[i]) == 1.0 and float(density.lower[i]) <= 0.99 and \
                float(density.lower[j]) == 0.0 and abs(float(density.upper[j]) - math.pi) < 1e-6:
            pairs.append((i, j))
    return pairs


class EllipticityCoordinates(LogDensity):
    """``density`` with each ellipse's ``(q, phi)`` replaced by ``(e1, e2)`` (named
    ``<prefix>.e1``, ``<prefix>.e2``), as optimiser coordinates.

    ``log_prob(y) = density.log_prob(x(y))`` WITHOUT a Jacobian: this is a change of the
    coordinates an optimiser moves in, so the maximum is the same point as the density's own
    (mapped by :meth:`to_x`); it is not a reparametrised posterior for sampling. ``e1, e2`` are
    boxed in ``[-c, c]`` with ``c = (1 - q_lo) / (1 + q_lo)``; a point in a corner beyond the
    disc ``|e| <= c`` maps radially onto it (``q = q_lo``), so the box has no wall inside it
    (a ``-inf`` there stops a bounded quasi-Newton line search).
    """

    def __init__(self, density: LogDensity, pairs: list[tuple[int, int]]):
        self.density, self.pairs = density, pairs
        self.names = list(density.names)
        self.lower, self.upper = density.lower.clone(), density.upper.clone()
        self._periodic = density.periodic.clone()
        for i, j in pairs:
            prefix = self.names[i][:-2]
            self.names[i], self.names[j] = prefix + ".e1", prefix + ".e2"
            q_lo = float(density.lower[i])
            c = (1 - q_lo) / (1 + q_lo)
            self.lower[[i, j]], self.upper[[i, j]] = -c, c
            self._periodic[[i, j]] = False
        # a hair inside the disc: q_lo itself can be singular (q = 0 divides by zero)
        q_lo = density.lower[[i for i, _ in pairs]]
        self._radius_squared = ((1 - 1e-6) * (1 - q_lo) / (1 + q_lo)) ** 2
        self._pair_index = torch.tensor([k for pair in pairs for k in pair],
                                        dtype=torch.long, device=density.device)

    @property
    def periodic(self) -> torch.Tensor:
        """Mask ``(dim,)`` of the periodic coordinates (the density's, less the ``e1, e2``
        that replace an ellipse's angle)."""
        return self._periodic

    def to_x(self, y: torch.Tensor) -> torch.Tensor:
        """The density's own parameters of coordinates ``y (..., dim)``: every ellipse's
        ``(q, phi)`` inside the density's bounds (a corner of the box beyond the disc
        ``|e| <= c`` is taken radially onto it, ``q`` just above ``q_lo``: the density is
        continuous there, no wall for a bounded optimiser), the other entries as given."""
        # all pairs in one gather and one scatter: the fewest operations (and autograd nodes)
        # per evaluation, which at small images costs as much as the model's own
        pairs = y.index_select(-1, self._pair_index).unflatten(-1, (-1, 2))
        q, phi = e1e2_to_q_phi(pairs[..., 0], pairs[..., 1], self._radius_squared)
        return y.index_copy(-1, self._pair_index, torch.stack([q, phi], -1).flatten(-2))

    def to_y(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(x.unbind(-1))
        for i, j in self.pairs:
            parts[i], parts[j] = q_phi_to_e1e2(parts[i], parts[j])
        return torch.stack(parts, -1)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=self.dtype, device=self.device)
        # no bounds check of its own: to_x puts every (q, phi) inside the density's bounds
        # (q in (q_lo, 1 - 2e-8], phi in [0, pi]) and passes the other entries, whose bounds
        # are the density's, to the density's own log_prob
        return self.density.log_prob(self.to_x(y))
