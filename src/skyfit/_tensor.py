"""Tensor helpers shared by every kind of module (sources, lenses, light curves)."""

from __future__ import annotations

import torch

__all__ = ["batch_param"]


def batch_param(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Append ``x.ndim`` singleton axes to ``p`` so parameter batches broadcast over coordinates."""
    if not (isinstance(p, torch.Tensor) and p.dtype == x.dtype and p.device == x.device):
        p = torch.as_tensor(p, dtype=x.dtype, device=x.device)
    if p.ndim == 0:  # broadcasts as it is: no reshape (and no autograd node) needed
        return p
    return p.reshape(p.shape + (1,) * x.ndim)
