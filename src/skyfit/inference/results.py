"""One result type for every sampler: draws shaped (chain, draw, parameter) with names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Samples"]


@dataclass
class Samples:
    """Posterior draws from any skyfit sampler (NUTS, HMC, emcee, VI).

    Attributes:
        draws: ``(chain, draw, parameter)`` array in the constrained (physical) space.
        names: one name per parameter.
        log_density: ``(chain, draw)`` log-density of each draw (constrained space, no Jacobian).
        sample_stats: per-draw diagnostics, each ``(chain, draw)`` (for NUTS: ``diverging``,
            ``tree_depth``, ``energy``, ``step_size``, ``accept_prob``, ``n_steps``).
        sampler: the sampler's name.
        info: run-level facts (``wall_time`` s incl. warm-up, ``n_evals``, step size, mass matrix,
            autocorrelation times, ...).
    """

    draws: np.ndarray
    names: list[str]
    log_density: np.ndarray
    sampler: str
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.draws = np.asarray(self.draws)
        self.log_density = np.asarray(self.log_density)
        if self.draws.ndim != 3:
            raise ValueError(f"draws must be (chain, draw, parameter), got shape {self.draws.shape}")
        if self.draws.shape[-1] != len(self.names):
            raise ValueError(
                f"draws have {self.draws.shape[-1]} parameters but {len(self.names)} names"
            )

    @property
    def n_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def n_draws(self) -> int:
        return self.draws.shape[1]

    def flat(self) -> np.ndarray:
        """Draws of all chains concatenated: ``(chain * draw, parameter)``."""
        return self.draws.reshape(-1, self.draws.shape[-1])

    def __getitem__(self, name: str) -> np.ndarray:
        """Draws of one parameter, ``(chain, draw)``."""
        try:
            return self.draws[..., self.names.index(name)]
        except ValueError:
            raise KeyError(f"no parameter {name!r}; parameters are {self.names}") from None
