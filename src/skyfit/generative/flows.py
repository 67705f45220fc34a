"""Normalising flows on a VAE latent space (zuko masked autoregressive transforms): MAF and IAF.

Which direction is fast. A masked autoregressive transform ``f`` computes every output
``f(x)_i = mu_i(x_<i) + s_i(x_<i) x_i`` from its input in one network pass, but inverting it
needs one pass per feature (``D`` passes: ``x_i`` needs ``x_<i`` first). A flow is a bijection
between the latent ``z`` and a standard normal ``eps``; which way ``f`` points decides the cost:

- **MAF** (masked autoregressive flow): ``eps = f(z)``. The density ``log p(z)`` takes one pass
  (fast density, used to fit and evaluate); sampling ``z = f^-1(eps)`` takes ``D`` passes.
- **IAF** (inverse autoregressive flow): ``z = f(eps)``, i.e. the MAF with the transform turned
  round (zuko ``MaskedAutoregressiveTransform(...).inv``). Sampling and the reparametrisation
  ``z = IAF(eps)`` take one pass (fast sampling, used for inference); the density of a given ``z``
  takes ``D`` passes.

Either kind can be fitted by maximum likelihood to draws of ``q(z|x)`` (:func:`fit_flow`; an
IAF then pays ``D`` passes per step); :func:`train_galaxy_model` fits the MAF that way and
distils the IAF from it (:func:`distill_flow`), which needs only one-pass directions. Each
flow's sampling map and density map are exact inverses of each other (same weights, two
directions).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ShapeError

__all__ = ["LatentFlow"]

KINDS = ("iaf", "maf")


class LatentFlow(nn.Module):
    """A normalising flow ``p(z)`` on a ``features``-dimensional latent space, MAF or IAF.

    ``z = loc + scale * T(eps)`` with ``eps ~ N(0, I)``, where ``T`` is a stack of ``transforms``
    affine masked autoregressive layers (alternating feature order) and ``loc, scale`` a fixed
    standardisation set from the training draws. With ``kind="maf"`` each layer is autoregressive
    in the density direction (one pass to evaluate ``log p(z)``); with ``kind="iaf"`` in the
    sampling direction (one pass for ``z(eps)``). See the module docstring.

    References:
        | Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017)
        | https://arxiv.org/abs/1705.07057
        | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
        | https://arxiv.org/abs/1606.04934

    Arguments:
        features: latent dimension ``D``.
        kind: ``"iaf"`` (fast sampling) or ``"maf"`` (fast density).
        transforms: number of autoregressive layers.
        hidden: hidden layer widths of each layer's masked MLP.

    Example:
        >>> import torch
        >>> flow = LatentFlow(4, kind="iaf")
        >>> eps = torch.randn(10, 4)
        >>> z = flow.from_noise(eps)  # one pass
        >>> bool(torch.allclose(flow.to_noise(z), eps, atol=1e-5))  # D passes back
        True
    """

    def __init__(self, features: int, kind: str = "iaf", transforms: int = 4,
                 hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        try:
            import zuko
        except ImportError as err:  # pragma: no cover - zuko is the `ml` extra
            raise ImportError("LatentFlow needs zuko: pip install 'skyfit[ml]'") from err
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if features < 2:
            raise ValueError(f"a latent flow needs at least 2 features, got {features}")
        self.features = int(features)
        self.kind = kind
        self.n_transforms = int(transforms)
        self.hidden = tuple(int(h) for h in hidden)
        maf = zuko.flows.MAF(features, transforms=transforms, hidden_features=self.hidden,
                             activation=nn.SiLU)
        if kind == "maf":
            self.flow = maf
        else:
            layers = [t.inv for t in maf.transform.transforms]
            self.flow = zuko.flows.Flow(layers, maf.base)
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    # ---- configuration ------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The constructor arguments as a JSON-ready dict; :meth:`from_config` rebuilds it."""
        return {"features": self.features, "kind": self.kind, "transforms": self.n_transforms,
                "hidden": list(self.hidden)}

    @property
    def sampling_passes(self) -> int:
        """Sequential network passes per layer to map ``eps -> z``."""
        return 1 if self.kind == "iaf" else self.features

    @property
    def density_passes(self) -> int:
        """Sequential network passes per layer to map ``z -> eps`` (the density)."""
        return self.features if self.kind == "iaf" else 1

    def standardise(self, draws: torch.Tensor) -> None:
        """Set the fixed affine standardisation (mean and std of ``draws (n, D)``)."""
        self._check(draws)
        self.loc.copy_(draws.mean(0))
        self.scale.copy_(draws.std(0).clamp(min=1e-6))

    # ---- the two directions -------------------------------------------------------------------
    def _check(self, z: torch.Tensor) -> None:
        if z.ndim == 0 or z.shape[-1] != self.features:
            raise ShapeError(f"latent vector has trailing size {tuple(z.shape)[-1:] or 0}, this "
                             f"flow has {self.features} features")

    def _transform(self):
        return self.flow().transform  # z_std -> eps

    def to_noise(self, z: torch.Tensor) -> torch.Tensor:
        """``eps`` such that ``from_noise(eps) = z`` (density direction)."""
        self._check(z)
        return self._transform()((z - self.loc) / self.scale)

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """The latent ``z`` of the standard-normal ``eps`` (sampling direction; differentiable)."""
        self._check(eps)
        return self.loc + self.scale * self._transform().inv(eps)

    def from_noise_and_log_prob(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z(eps)`` and ``log p(z)``, both in the sampling direction's cost."""
        self._check(eps)
        u, ladj = self._transform().inv.call_and_ladj(eps)
        base = -0.5 * eps.pow(2).sum(-1) - 0.5 * self.features * math.log(2 * math.pi)
        return self.loc + self.scale * u, base - ladj - self.scale.log().sum()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for ``z (..., D)``, shape ``(...)`` (density direction)."""
        self._check(z)
        return self.flow().log_prob((z - self.loc) / self.scale) - self.scale.log().sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws ``(n, D)`` of ``z``."""
        eps = torch.randn(n, self.features, generator=generator, dtype=self.loc.dtype,
                          device=self.loc.device)
        with torch.no_grad():
            return self.from_noise(eps)

    # ---- weights ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write config and weights (loadable with ``weights_only=True``)."""
        torch.save({"format": "skyfit.LatentFlow", "config": self.config,
                    "state_dict": self.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location=None) -> LatentFlow:
        """Read a flow written by :meth:`save` (``torch.load(weights_only=True)``), checking that
        the weights fit its configuration."""
        from .vae import _read, load_checked_state

        blob = _read(path, "skyfit.LatentFlow", map_location)
        flow = cls.from_config(blob["config"])
        load_checked_state(flow, blob["state_dict"], f"LatentFlow ({flow.kind})")
        return flow.eval()

    @classmethod
    def from_config(cls, config: dict) -> LatentFlow:
        """An untrained flow built from :attr:`config`."""
        c = dict(config)
        return cls(c["features"], kind=c["kind"], transforms=c["transforms"],
                   hidden=tuple(c["hidden"]))

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return (f"kind={self.kind}, features={self.features}, transforms={self.n_transforms}, "
                f"hidden={self.hidden}, sampling passes/layer={self.sampling_passes}, "
                f"density passes/layer={self.density_passes}")
