"""Pieces of light curves fitted to real data: shared band subsets, redshift, distance dimming."""

from __future__ import annotations

import numpy as np
import torch

# Gauss-Legendre nodes on [0, 1] for the comoving-distance integral (as skyfit.lenses.cosmology;
# not imported from it: light curves sit below the lenses in the layers)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
_NODES, _WEIGHTS = (_NODES + 1) / 2, _WEIGHTS / 2
_C_KM_S = 299_792.458  # speed of light, km/s

__all__ = ["parse_shared", "subset_entries", "distance_dimming"]


def parse_shared(shared, bands) -> tuple[frozenset, dict[str, tuple[str, ...]]]:
    """``shared`` as (names shared by all bands, {name: the band subset that shares it}).

    ``shared`` holds parameter names (one value for every band) and ``(name, bands)`` pairs (one
    value for those bands, one per band for the others); a mapping ``{name: bands or None}``
    says the same.
    """
    items = shared.items() if isinstance(shared, dict) else [
        (s, None) if isinstance(s, str) else tuple(s) for s in shared]
    everywhere, subsets = set(), {}
    for name, subset in items:
        if subset is None or bands is None or set(subset) >= set(bands):
            everywhere.add(name)
            continue
        subset = (subset,) if isinstance(subset, str) else tuple(str(b) for b in subset)
        unknown = [b for b in subset if b not in bands]
        if unknown or len(subset) < 2:
            raise ValueError(f"shared {name!r} over bands {list(subset)}: give at least two of "
                             f"the model's bands {list(bands)}" + (f"; unknown {unknown}"
                                                                  if unknown else ""))
        subsets[name] = subset
    return frozenset(everywhere), subsets


def subset_entries(bands: tuple[str, ...], subset: tuple[str, ...]) -> torch.Tensor:
    """For a parameter shared by ``subset``: the index of each band's entry, ``(n_bands,)``.

    The entries follow the bands, the subset's one value at the place of its first band:
    bands ``u g r i`` with ``g, r`` shared give entries ``[u, gr, i]`` and indices
    ``[0, 1, 1, 2]``.
    """
    index, entry, seen = [], -1, None
    for b in bands:
        if b in subset and seen is not None:
            index.append(seen)
            continue
        entry += 1
        if b in subset:
            seen = entry
        index.append(entry)
    return torch.tensor(index, dtype=torch.long)


def distance_dimming(z: torch.Tensor, H0: float = 70.0, Om0: float = 0.3) -> torch.Tensor:
    """``(1 + z) 10^(-0.4 mu(z))``: the flux per unit frequency at redshift ``z`` of a source
    whose flux at 10 pc is 1 (distance modulus ``mu`` of a flat Lambda-CDM cosmology; the
    ``(1 + z)`` is the compression of the frequency interval; no K-correction of the SED)."""
    nodes = torch.as_tensor(np.asarray(_NODES), dtype=z.dtype, device=z.device)
    weights = torch.as_tensor(np.asarray(_WEIGHTS), dtype=z.dtype, device=z.device)
    inv_e = 1 / torch.sqrt(Om0 * (1 + z[..., None] * nodes) ** 3 + 1 - Om0)
    comoving = _C_KM_S / H0 * z * (inv_e * weights).sum(-1)  # Mpc
    luminosity_pc = (1 + z) * comoving * 1e6
    return (1 + z) * (10.0 / luminosity_pc) ** 2
