"""Conditional flows ``q(z | c)`` (zuko): a neural-spline flow and a GLOW-style INN.

Both are :class:`zuko.flows.Flow` objects: ``flow(c)`` is a distribution over ``z`` with batch
shape ``c.shape[:-1]``, with ``log_prob`` and ``rsample``.

- ``"nsf"``: zuko's neural spline flow (rational-quadratic spline autoregressive transforms;
  Durkan et al. 2019, https://arxiv.org/abs/1906.04032). The default.
- ``"glow"``: an invertible neural network as in seed 000 (FrEIA's ``GLOWCouplingBlock``):
  blocks of two affine coupling layers with complementary masks (every feature transformed once
  per block) followed by a fixed random permutation; the log-scale of each coupling is soft
  clamped, ``s -> clamp * 2 / pi * atan(s / clamp)``, so that no layer can scale by more than
  ``exp(clamp)`` (Ardizzone et al. 2019, https://arxiv.org/abs/1808.04730; Kingma & Dhariwal
  2018, https://arxiv.org/abs/1807.03039). Sampling and density each take one pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FLOW_KINDS", "SoftClampAffineTransform", "conditional_flow"]

FLOW_KINDS = ("nsf", "glow")
"""Flow families: zuko's neural spline flow and the GLOW-style invertible network."""


def _zuko():
    try:
        import zuko
    except ImportError as err:  # pragma: no cover - zuko is the `ml` extra
        raise ImportError("skyfit.amortized needs zuko: pip install 'skyfit[ml]'") from err
    return zuko


class SoftClampAffineTransform:
    """Factory of ``f(x) = exp(s') x + b`` with the GLOW soft clamp ``s' = c 2/pi atan(s / c)``.

    A zuko ``MonotonicAffineTransform`` whose log-scale is replaced by the clamped one (zuko's own
    bound is ``|log slope|``; the INN of seed 000 used FrEIA's clamp 2).

    Example:
        >>> import math, torch
        >>> t = SoftClampAffineTransform(clamp=2.0)(torch.tensor(0.5), torch.tensor(100.0))
        >>> round(t(torch.tensor(1.0)).item(), 3)  # a log slope of 100 is clamped below 2
        7.703
        >>> round(math.exp(2.0 * 2 / math.pi * math.atan(100.0 / 2.0)) + 0.5, 3)
        7.703
    """

    def __init__(self, clamp: float = 2.0):
        self.clamp = float(clamp)

    def __call__(self, shift: torch.Tensor, scale: torch.Tensor, **kwargs):
        zuko = _zuko()
        t = zuko.transforms.MonotonicAffineTransform(shift, scale, **kwargs)
        t.log_scale = self.clamp * (2 / math.pi) * torch.atan(scale / self.clamp)
        t.scale = t.log_scale.exp()
        return t


def _glow(features: int, context: int, blocks: int, hidden: tuple[int, ...], clamp: float,
          seed: int) -> nn.Module:
    zuko = _zuko()
    if features < 2:
        raise ValueError("a coupling INN needs at least 2 parameters; use kind='nsf' for one")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(features) < features // 2
    layers = []
    for _ in range(blocks):
        for m in (mask, ~mask):
            layers.append(zuko.flows.GeneralCouplingTransform(
                features, context, mask=m, univariate=SoftClampAffineTransform(clamp),
                hidden_features=hidden, activation=nn.ReLU))
        perm = torch.randperm(features, generator=gen)
        layers.append(zuko.flows.UnconditionalTransform(
            zuko.transforms.PermutationTransform, perm, buffer=True))
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(features), torch.ones(features), buffer=True)
    return zuko.flows.Flow(layers, base)


def conditional_flow(kind: str, features: int, context: int, transforms: int = 5,
                     hidden: tuple[int, ...] = (64, 64), clamp: float = 2.0,
                     seed: int = 0) -> nn.Module:
    """A conditional flow over ``features`` dimensions given a ``context`` vector.

    Arguments:
        kind: ``"nsf"`` (neural spline flow) or ``"glow"`` (affine coupling INN).
        features: dimension of ``z``. context: dimension of the conditioning vector.
        transforms: spline transforms (nsf) or coupling blocks (glow).
        hidden: hidden widths of each transform's network (seed 000: three layers of 64).
        clamp: soft clamp of the GLOW log-scales. seed: the GLOW's fixed permutations.

    Example:
        >>> import torch
        >>> flow = conditional_flow("glow", 3, 4, transforms=3, hidden=(64, 64, 64))
        >>> z, c = torch.randn(10, 3), torch.randn(10, 4)
        >>> eps = flow(c).transform(z)
        >>> bool(torch.allclose(flow(c).transform.inv(eps), z, atol=1e-5))
        True
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"kind must be one of {FLOW_KINDS}, got {kind!r}")
    hidden = tuple(int(h) for h in hidden)
    if kind == "glow":
        return _glow(features, context, transforms, hidden, clamp, seed)
    return _zuko().flows.NSF(features, context, transforms=transforms, hidden_features=hidden)
