"""The variational families of :func:`~skyfit.inference.fit_vi`: a whitened Gaussian and a
zuko normalising flow behind a fixed affine standardisation."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianFamily", "FlowFamily", "make_flow", "require_zuko"]


class GaussianFamily(nn.Module):
    """``q(z) = N(loc, L L^T)`` in a whitened parametrisation around a reference ``(c, R)``:
    ``loc = c + R a``, ``L = R diag(exp(s)) (I + strictly-lower(B))``; the trained numbers are
    ``a``, ``s`` and ``B`` (``B`` only if ``fullrank``; ``R`` is then diagonal-free lower
    triangular, else diagonal).

    :meth:`recenter` moves the current ``q`` into the reference and zeroes ``a, s, B`` without
    changing ``q``: Adam then works in coordinates where ``q`` is a unit Gaussian, so its steps
    are scale-free however differently scaled and correlated the parameters are.
    """

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, fullrank: bool):
        super().__init__()
        dim = loc.shape[0]
        self.fullrank = fullrank
        ref = scale_tril if fullrank else torch.diag(scale_tril.diagonal())
        self.register_buffer("ref_loc", loc.detach().clone())
        self.register_buffer("ref_tril", ref.detach().clone())
        self.a = nn.Parameter(torch.zeros_like(loc))
        self.s = nn.Parameter(torch.zeros_like(loc))
        if fullrank:
            self.B = nn.Parameter(torch.zeros(dim, dim, dtype=loc.dtype, device=loc.device))

    @property
    def loc(self) -> torch.Tensor:
        return self.ref_loc + self.ref_tril @ self.a

    def _inner(self) -> torch.Tensor:
        d = self.s.exp()
        if not self.fullrank:
            return torch.diag(d)
        eye = torch.eye(d.shape[0], dtype=d.dtype, device=d.device)
        return d[:, None] * (eye + self.B.tril(-1))

    def scale_tril(self) -> torch.Tensor:
        return self.ref_tril @ self._inner()

    def log_det(self) -> torch.Tensor:
        return self.ref_tril.diagonal().abs().log().sum() + self.s.sum()

    def rsample(self, n: int) -> torch.Tensor:
        eps = torch.randn(n, self.a.shape[0], dtype=self.a.dtype, device=self.a.device)
        return self.loc + eps @ self.scale_tril().T

    def log_prob(self, z: torch.Tensor, detach: bool = False) -> torch.Tensor:
        L, loc, log_det = self.scale_tril(), self.loc, self.log_det()
        if detach:
            L, loc, log_det = L.detach(), loc.detach(), log_det.detach()
        eps = torch.linalg.solve_triangular(L, (z - loc).unsqueeze(-1), upper=False).squeeze(-1)
        d = z.shape[-1]
        return -0.5 * (eps**2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)

    def rsample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # "sticking the landing" (Roeder et al. 2017, arXiv:1703.09194): log q with its
        # parameters detached (z is not), so the gradient is exactly zero once q equals the
        # posterior
        z = self.rsample(n)
        return z, self.log_prob(z, detach=True)

    @torch.no_grad()
    def recenter(self) -> None:
        loc, L = self.loc.clone(), self.scale_tril().clone()
        self.ref_loc.copy_(loc)
        self.ref_tril.copy_(L)
        for p in self.parameters():
            p.zero_()


class FlowFamily(nn.Module):
    """``z = loc + L u`` with ``u`` from a zuko flow: a fixed affine standardisation from the
    start (``L`` lower triangular), so the flow itself starts near a standard normal."""

    def __init__(self, flow: nn.Module, loc: torch.Tensor, scale_tril: torch.Tensor):
        super().__init__()
        self.flow = flow
        self.register_buffer("shift", loc.detach().clone())
        self.register_buffer("tril", scale_tril.detach().clone())

    def _log_det(self) -> torch.Tensor:
        return self.tril.diagonal().abs().log().sum()

    def rsample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        u, log_q = self.flow().rsample_and_log_prob((n,))
        return self.shift + u @ self.tril.T, log_q - self._log_det()

    def rsample(self, n: int) -> torch.Tensor:
        return self.rsample_and_log_prob(n)[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.linalg.solve_triangular(self.tril, (z - self.shift).unsqueeze(-1),
                                          upper=False).squeeze(-1)
        return self.flow().log_prob(u) - self._log_det()


def require_zuko():
    try:
        import zuko
    except ImportError as err:
        raise ImportError("family='flow' needs zuko, the optional 'ml' extra: pip install "
                          "'skyfit[ml]' (or pip install zuko); or use family='fullrank'") from err
    return zuko


def make_flow(dim: int, dtype, device, flow_kwargs: dict) -> nn.Module:
    zuko = require_zuko()
    kwargs = dict(transforms=3, hidden_features=(64, 64))
    kwargs.update(flow_kwargs)
    kind = kwargs.pop("kind", "NSF")
    flow = getattr(zuko.flows, kind)(dim, 0, **kwargs)
    return flow.to(dtype=dtype, device=device)
