"""Summary networks: a simulated observation ``x`` to a short vector that conditions the flow.

Light curves use a **fixed grid**: every observation is the flux at the same epochs and bands
(the grid of the likelihood the training set was simulated from), so the light curve is one
vector and an MLP reads it. A survey's irregular epochs are first put on that grid with
:func:`interpolate_to_grid` (per band, linear; epochs outside a band's coverage get the nearest
measured flux). Image stamps use a small CNN. Inputs are standardised by the posterior object
before they reach these networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ShapeError

__all__ = ["MLPEmbedding", "LightCurveEmbedding", "StampEmbedding", "interpolate_to_grid",
           "make_embedding"]


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.SiLU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class MLPEmbedding(nn.Module):
    """Flatten ``x (..., *shape)`` and map it to ``features`` numbers: an MLP plus a linear map.

    The linear path (a skip connection) carries the summaries that are linear in the data (a
    posterior mean often nearly is) without the MLP having to learn them.

    Arguments:
        shape: shape of one observation. features: output size. hidden: hidden widths.

    Example:
        >>> import torch
        >>> net = MLPEmbedding((3, 4), features=8, hidden=(16,))
        >>> tuple(net(torch.randn(5, 3, 4)).shape)  # five observations of shape (3, 4)
        (5, 8)
    """

    def __init__(self, shape: tuple[int, ...], features: int = 32,
                 hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.features = int(features)
        self.net = _mlp(math.prod(self.shape), tuple(hidden), self.features)
        self.linear = nn.Linear(math.prod(self.shape), self.features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The summary vector of each observation in ``x``."""
        n = len(self.shape)
        if tuple(x.shape[x.ndim - n:]) != self.shape:
            raise ShapeError(f"observation of shape {tuple(x.shape[x.ndim - n:])}, the embedding "
                             f"was built for {self.shape}")
        flat = x.flatten(x.ndim - n)
        return self.net(flat) + self.linear(flat)


class LightCurveEmbedding(MLPEmbedding):
    """Light curves on a fixed grid of ``n_points`` (epoch, band) pairs: an MLP (see module).

    Example:
        >>> import torch
        >>> net = LightCurveEmbedding(60, features=16)
        >>> tuple(net(torch.randn(5, 60)).shape)
        (5, 16)
    """

    def __init__(self, n_points: int, features: int = 32, hidden: tuple[int, ...] = (128, 128)):
        super().__init__((n_points,), features, hidden)


class StampEmbedding(nn.Module):
    """Image stamps ``(..., H, W)`` or ``(..., C, H, W)``: two conv + pool stages and an MLP.

    Arguments:
        shape: ``(H, W)`` or ``(C, H, W)`` of one stamp. features: output size.
        channels: channels of the two convolution stages.

    Example:
        >>> import torch
        >>> net = StampEmbedding((32, 32), features=16)
        >>> tuple(net(torch.randn(4, 32, 32)).shape)
        (4, 16)
    """

    def __init__(self, shape: tuple[int, ...], features: int = 32,
                 channels: tuple[int, int] = (16, 32)):
        super().__init__()
        if len(shape) not in (2, 3):
            raise ShapeError(f"a stamp is (H, W) or (C, H, W), got shape {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.features = int(features)
        c_in = 1 if len(shape) == 2 else self.shape[0]
        h, w = self.shape[-2:]
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c1, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2))
        self.head = _mlp(c2 * (h // 4) * (w // 4), (128,), self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The summary vector of each stamp in ``x``."""
        n = len(self.shape)
        if tuple(x.shape[x.ndim - n:]) != self.shape:
            raise ShapeError(f"stamp of shape {tuple(x.shape[x.ndim - n:])}, the embedding was "
                             f"built for {self.shape}")
        batch = x.shape[:x.ndim - n]
        images = x.reshape(-1, *self.shape)
        if n == 2:
            images = images.unsqueeze(1)
        out = self.head(self.conv(images).flatten(1))
        return out.reshape(*batch, self.features)


def make_embedding(kind: str, shape: tuple[int, ...], features: int,
                   hidden: tuple[int, ...] = (128, 128)) -> nn.Module:
    """``"mlp"``, ``"lightcurve"`` or ``"stamp"`` embedding for observations of ``shape``.

    Example:
        >>> import torch
        >>> net = make_embedding("stamp", (16, 16), features=4)
        >>> type(net).__name__, tuple(net(torch.randn(2, 16, 16)).shape)
        ('StampEmbedding', (2, 4))
    """
    if kind == "stamp":
        return StampEmbedding(shape, features)
    if kind == "lightcurve":
        if len(shape) != 1:
            raise ShapeError(f"a fixed-grid light curve is a vector, got shape {tuple(shape)}")
        return LightCurveEmbedding(shape[0], features, hidden)
    if kind == "mlp":
        return MLPEmbedding(shape, features, hidden)
    raise ValueError(f"embedding must be 'mlp', 'lightcurve' or 'stamp', got {kind!r}")


def interpolate_to_grid(time, band, flux, grid_time, grid_band) -> torch.Tensor:
    """Flux of an irregular light curve at the grid's ``(grid_time, grid_band)`` points.

    Per band, linear interpolation in time between the measured points (nearest value outside
    them). Every band of the grid must have at least one measured point.

    Example:
        >>> import torch
        >>> t, f = torch.tensor([0., 2., 1.]), torch.tensor([0., 2., 5.])
        >>> band = torch.tensor([0, 0, 1])
        >>> grid_t, grid_band = torch.tensor([1., 3., 0.]), torch.tensor([0, 0, 1])
        >>> interpolate_to_grid(t, band, f, grid_t, grid_band).tolist()
        [1.0, 2.0, 5.0]
    """
    time, flux, grid_time = (torch.as_tensor(a, dtype=torch.float64)
                             for a in (time, flux, grid_time))
    band, grid_band = torch.as_tensor(band), torch.as_tensor(grid_band)
    out = torch.empty_like(grid_time)
    for b in grid_band.unique().tolist():
        at = grid_band == b
        here = band == b
        if not here.any():
            raise ShapeError(f"band {b} of the grid has no measured point")
        order = torch.argsort(time[here])
        t, f = time[here][order], flux[here][order]
        q = grid_time[at]
        i = torch.searchsorted(t, q).clamp(1, max(len(t) - 1, 1))
        if len(t) == 1:
            out[at] = f[0]
            continue
        t0, t1, f0, f1 = t[i - 1], t[i], f[i - 1], f[i]
        w = ((q - t0) / (t1 - t0)).clamp(0.0, 1.0)
        out[at] = f0 + w * (f1 - f0)
    return out
