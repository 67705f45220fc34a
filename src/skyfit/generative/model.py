"""A trained galaxy model: VAE decoder plus latent priors (IAF for sampling, MAF for density)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ShapeError
from .flows import LatentFlow
from .vae import GalaxyVAE, VAEConfig, _read, load_checked_state

__all__ = ["GalaxyModel"]

PRIORS = ("iaf", "maf", "normal")


class GalaxyModel(nn.Module):
    """A galaxy generator: ``x = decoder(z)`` with ``z = IAF(eps)``, ``eps ~ N(0, I)``.

    Holds a :class:`GalaxyVAE` and two flows fitted to the aggregate posterior of its training
    latents: ``iaf`` (one-pass sampling: the reparametrisation used for inference) and ``maf``
    (one-pass density). ``info`` records how it was trained (config, histories, metrics).

    Arguments:
        vae: the trained VAE. iaf, maf: fitted :class:`LatentFlow` of kinds ``"iaf"``, ``"maf"``
            (either may be None). info: JSON-like dict of training facts.

    Example:
        >>> import torch
        >>> from skyfit.generative import load_pretrained
        >>> model = load_pretrained("galaxy32")  # the shipped GalaxyModel
        >>> model.size, model.latent_dim
        (32, 16)
        >>> x = model.sample(4, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), torch.allclose(x.sum((1, 2)), torch.ones(4), atol=0.1)  # ~unit flux
        ((4, 32, 32), True)
    """

    def __init__(self, vae: GalaxyVAE, iaf: LatentFlow | None = None,
                 maf: LatentFlow | None = None, info: dict | None = None):
        super().__init__()
        for flow, kind in ((iaf, "iaf"), (maf, "maf")):
            if flow is None:
                continue
            if flow.kind != kind:
                raise ValueError(f"the {kind} slot needs a LatentFlow of kind {kind!r}, got "
                                 f"{flow.kind!r}")
            if flow.features != vae.latent_dim:
                raise ShapeError(f"{kind} has {flow.features} features but the VAE has "
                                 f"latent_dim={vae.latent_dim}")
        self.vae, self.iaf, self.maf = vae, iaf, maf
        self.info = dict(info or {})

    @property
    def latent_dim(self) -> int:
        """Dimension of the VAE's latent space."""
        return self.vae.latent_dim

    @property
    def size(self) -> int:
        """Stamp side in pixels."""
        return self.vae.size

    def flow(self, prior: str) -> LatentFlow | None:
        """The flow behind ``prior`` (``"iaf"``, ``"maf"``) or None for ``"normal"``."""
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        flow = None if prior == "normal" else getattr(self, prior)
        if prior != "normal" and flow is None:
            raise ValueError(f"this GalaxyModel has no {prior} flow")
        return flow

    @torch.no_grad()
    def sample_latents(self, n: int, prior: str = "iaf",
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents ``(n, D)`` from ``prior``: ``"iaf"``/``"maf"`` (the fitted aggregate
        posterior) or ``"normal"`` (the VAE's N(0, I) prior)."""
        flow = self.flow(prior)
        if flow is None:
            p = next(self.vae.parameters())
            return torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype,
                               device=p.device)
        return flow.sample(n, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, prior: str = "iaf",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` noiseless unit-flux galaxy stamps ``(n, size, size)`` decoded from ``prior``."""
        return self.vae.decode(self.sample_latents(n, prior, generator))

    # ---- weights -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to rebuild the model: configs, weights, info (no pickled classes)."""
        blob = {"format": "skyfit.GalaxyModel", "info": self.info,
                "vae": {"config": self.vae.config.to_dict(), "state_dict": self.vae.state_dict()}}
        for kind in ("iaf", "maf"):
            flow = getattr(self, kind)
            if flow is not None:
                blob[kind] = {"config": flow.config, "state_dict": flow.state_dict()}
        return blob

    def save(self, path: str | Path) -> None:
        """Write the model with ``torch.save`` (tensors, numbers, strings only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)

    @classmethod
    def load(cls, path: str | Path, map_location=None) -> GalaxyModel:
        """Rebuild a model written by :meth:`save` (read with ``torch.load(weights_only=True)``)."""
        blob = _read(path, "skyfit.GalaxyModel", map_location)
        vae = GalaxyVAE(VAEConfig(**blob["vae"]["config"]))
        load_checked_state(vae, blob["vae"]["state_dict"], "GalaxyVAE")
        flows = {}
        for kind in ("iaf", "maf"):
            if kind in blob:
                flow = LatentFlow.from_config(blob[kind]["config"])
                load_checked_state(flow, blob[kind]["state_dict"], f"LatentFlow ({kind})")
                flows[kind] = flow.eval()
        return cls(vae.eval(), flows.get("iaf"), flows.get("maf"), blob.get("info", {}))

    def load_weights(self, path: str | Path, map_location=None) -> GalaxyModel:
        """Load weights written by :meth:`save` into this model's networks; raise
        :class:`ShapeError` naming what differs when the file holds another architecture."""
        other = type(self).load(path, map_location)
        diffs = []
        if other.vae.config != self.vae.config:
            diffs += [f"vae {k}={getattr(other.vae.config, k)} in file vs "
                      f"{getattr(self.vae.config, k)} here"
                      for k in ("size", "latent_dim", "channels", "hidden")
                      if getattr(other.vae.config, k) != getattr(self.vae.config, k)]
        for kind in ("iaf", "maf"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            if (mine is None) != (theirs is None):
                diffs.append(f"{kind}: {'absent' if theirs is None else 'present'} in file, "
                             f"{'absent' if mine is None else 'present'} here")
            elif mine is not None and mine.config != theirs.config:
                diffs.append(f"{kind} config {theirs.config} in file vs {mine.config} here")
        if diffs:
            raise ShapeError(f"weights in {path} are for another GalaxyModel architecture: "
                             + "; ".join(diffs))
        self.load_state_dict(other.state_dict())
        self.info = other.info
        return self
