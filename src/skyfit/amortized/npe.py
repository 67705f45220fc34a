"""The amortised posterior ``q(theta | x)``: summary network + conditional flow, in the
Posterior's unconstrained space.

``theta`` (constrained, physical) is mapped to ``u`` in R^dim as the samplers do
(:class:`~skyfit.inference.UnconstrainedDensity`: logit for two finite bounds, log for one),
standardised to ``w = (u - loc) / scale`` with the training set's moments, and the flow models
``q(w | embed(x))``. Hence every draw lies inside the Param bounds, and
``log q(theta | x) = log q(w | x) - sum(log scale) - log |d theta / d u|``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError
from ..inference import FunctionDensity, Samples, UnconstrainedDensity
from .embeddings import make_embedding
from .flows import conditional_flow

__all__ = ["AmortizedPosterior"]

_FORMAT = "skyfit.AmortizedPosterior"


class AmortizedPosterior(nn.Module):
    """A trained (or to-be-trained) neural posterior estimate for one simulator.

    Usually made by :func:`skyfit.amortized.fit`. Observations ``x`` have the shape of the
    likelihood's data (``data_shape``); a leading batch of observations is handled in one call.

    Arguments:
        names, lower, upper: the Posterior's parameter names and bounds.
        data_shape: shape of one observation.
        kind: ``"nsf"`` or ``"glow"`` (see :func:`~skyfit.amortized.flows.conditional_flow`).
        embedding: ``"mlp"``, ``"lightcurve"`` or ``"stamp"``. features: its output size.
        embedding_hidden: hidden widths of the embedding's MLP.
        transforms, hidden, clamp, seed: flow settings.
        units: ``{name: units}`` of the parameters (the Posterior's :attr:`units`), carried by
            the :class:`~skyfit.inference.Samples` this network returns and by its saved file.

    Example:
        >>> import torch
        >>> post = AmortizedPosterior(["flux", "size"], [0.0, 0.1], [10.0, 2.0], (5,),
        ...                           transforms=1, hidden=(8,), features=4)
        >>> theta, log_q = post.draw(torch.zeros(5), 100)  # untrained, yet inside the bounds
        >>> tuple(theta.shape), bool((theta[:, 0] > 0).all() and (theta[:, 1] < 2).all())
        ((100, 2), True)
        >>> bool(torch.allclose(post.log_prob(theta, torch.zeros(5)), log_q, atol=1e-4))
        True
    """

    def __init__(self, names, lower, upper, data_shape, kind: str = "nsf",
                 embedding: str = "mlp", features: int = 32, transforms: int = 5,
                 hidden=(64, 64), clamp: float = 2.0, seed: int = 0,
                 embedding_hidden=(128, 128), units: dict[str, str] | None = None):
        super().__init__()
        lower = torch.as_tensor(lower, dtype=torch.float64)
        upper = torch.as_tensor(upper, dtype=torch.float64)
        self.config = dict(names=list(names), lower=lower.tolist(), upper=upper.tolist(),
                           data_shape=[int(s) for s in data_shape], kind=kind,
                           embedding=embedding, features=int(features),
                           transforms=int(transforms), hidden=[int(h) for h in hidden],
                           clamp=float(clamp), seed=int(seed),
                           embedding_hidden=[int(h) for h in embedding_hidden],
                           units={str(k): str(v) for k, v in (units or {}).items()})
        self.names = list(names)
        self.info: dict = {}  # training history, sizes and times (set by fit)
        self.data_shape = tuple(self.config["data_shape"])
        dim = len(self.names)
        with torch.random.fork_rng(devices=[]):  # initial weights set by `seed`
            torch.manual_seed(seed)
            self.embedding = make_embedding(embedding, self.data_shape, features,
                                            tuple(embedding_hidden))
            self.flow = conditional_flow(kind, dim, features, transforms, tuple(hidden), clamp,
                                         seed)
        self.register_buffer("w_loc", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("w_scale", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("x_loc", torch.zeros(self.data_shape))
        self.register_buffer("x_scale", torch.ones(self.data_shape))
        zero = lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype)  # noqa: E731 - bounds only
        self.bounds = UnconstrainedDensity(FunctionDensity(zero, self.names, lower, upper))

    @property
    def units(self) -> dict[str, str]:
        """``{name: units}`` of the parameters, as declared by the template Posterior."""
        return dict(self.config["units"])

    @property
    def dim(self) -> int:
        """Number of inferred parameters."""
        return len(self.names)

    # -- standardisation ------------------------------------------------------------------
    def standardise(self, theta: torch.Tensor, x: torch.Tensor) -> None:
        """Set the fixed affine maps of ``u`` and ``x`` from training draws."""
        u = self.bounds.to_unconstrained(theta.to(torch.float64))
        self.w_loc.copy_(u.mean(0))
        self.w_scale.copy_(u.std(0).clamp(min=1e-8))
        x = x.to(self.x_loc.dtype)
        self.x_loc.copy_(x.mean(0))
        # a floor relative to the overall spread: constant pixels must not be blown up
        self.x_scale.copy_(x.std(0).clamp(min=1e-3 * float(x.std()) + 1e-12))

    def to_w(self, theta: torch.Tensor) -> torch.Tensor:
        """Standardised unconstrained coordinates ``w`` of constrained ``theta``."""
        u = self.bounds.to_unconstrained(theta.to(torch.float64))
        return (u - self.w_loc) / self.w_scale

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of observations ``x (..., *data_shape)``, shape ``(..., features)``."""
        x = torch.as_tensor(x)
        n = len(self.data_shape)
        if x.ndim < n or tuple(x.shape[x.ndim - n:]) != self.data_shape:
            raise ShapeError(f"observation(s) of shape {tuple(x.shape)}: expected "
                             f"(..., {', '.join(map(str, self.data_shape))})")
        x = x.to(self.x_loc.dtype)
        return self.embedding((x - self.x_loc) / self.x_scale)

    # -- density and draws ----------------------------------------------------------------
    def log_prob_w(self, w: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Flow log-density of standardised ``w``; what training maximises."""
        return self.flow(context).log_prob(w.to(context.dtype))

    def log_prob(self, theta, x) -> torch.Tensor:
        """``log q(theta | x)`` (constrained space). ``x`` is one observation (``theta (..., dim)``
        gives ``(...)``) or a batch ``(B, *data_shape)`` (``theta (..., B, dim)`` gives
        ``(..., B)``: each row of theta is evaluated under its own observation)."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        if theta.shape[-1] != self.dim:
            raise ShapeError(f"theta has trailing size {theta.shape[-1]}, expected {self.dim}: "
                             f"{self.names}")
        inside = ((theta >= self.bounds.density.lower) &
                  (theta <= self.bounds.density.upper)).all(-1)
        u = self.bounds.to_unconstrained(theta)
        w = (u - self.w_loc) / self.w_scale
        lq = self.log_prob_w(w, self.context(x)).to(torch.float64)
        lq = lq - self.w_scale.log().sum() - self.bounds.log_abs_det_jacobian(u)
        return torch.where(inside, lq, torch.full_like(lq, -torch.inf))

    def draw(self, x, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws per observation and their ``log q``: ``(n, *batch, dim)``, ``(n, *batch)``.

        One batched call for every observation in ``x (*batch, *data_shape)``.
        """
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dist = self.flow(self.context(x))
            w = dist.rsample((n,))
            lq_w = dist.log_prob(w).to(torch.float64)
        u = w.to(torch.float64) * self.w_scale + self.w_loc
        theta = self.bounds.to_constrained(u)
        lq = lq_w - self.w_scale.log().sum() - self.bounds.log_abs_det_jacobian(u)
        return theta, lq

    def sample(self, x, n: int = 1000, seed: int = 0) -> Samples | list[Samples]:
        """Posterior draws as :class:`~skyfit.inference.Samples` (one chain of ``n`` draws;
        ``log_density`` holds ``log q(theta | x)``; ``units`` those of :attr:`units`); a list
        of them for a batch of observations."""
        x = torch.as_tensor(x)
        theta, lq = self.draw(x, n, seed)
        batch = x.shape[:x.ndim - len(self.data_shape)]
        theta, lq = theta.cpu().numpy(), lq.cpu().numpy()
        sampler = f"npe-{self.config['kind']}"
        info = {"seed": seed}
        if not batch:
            return Samples(theta[None], self.names, lq[None], sampler, info=info,
                           units=self.units)
        theta = theta.reshape(n, -1, self.dim)
        lq = lq.reshape(n, -1)
        return [Samples(np.ascontiguousarray(theta[None, :, i]), self.names, lq[None, :, i],
                        sampler, info=info, units=self.units) for i in range(theta.shape[1])]

    # -- storage --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the weights and the JSON config (read back with ``weights_only=True``)."""
        torch.save({"format": _FORMAT, "config": json.dumps(self.config),
                    "state_dict": self.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location=None) -> AmortizedPosterior:
        """Read a file written by :meth:`save` (no pickle: ``torch.load(weights_only=True)``)."""
        from ..generative.vae import _read, load_checked_state

        blob = _read(path, _FORMAT, map_location)
        post = cls.from_config(json.loads(blob["config"]))
        load_checked_state(post, blob["state_dict"], "AmortizedPosterior")
        return post.eval()

    @classmethod
    def from_config(cls, config: dict) -> AmortizedPosterior:
        """An untrained posterior network built from :meth:`config`'s dictionary."""
        c = dict(config)
        return cls(c.pop("names"), c.pop("lower"), c.pop("upper"), c.pop("data_shape"), **c)
