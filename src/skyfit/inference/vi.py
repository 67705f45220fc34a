"""Variational inference: a Gaussian (mean-field or full-rank) or a normalising flow fitted by
maximising the reparametrised ELBO with Adam, in the unconstrained space."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ConvergenceWarning, LogDensityError
from .approximations import GaussianApproximation, units_of
from .compiled import compile as compile_density
from .density import LogDensity
from .initialization import resolve_gaussian
from .nonfinite import NonfiniteTally
from .results import Samples
from .transforms import UnconstrainedDensity
from .variational_families import FlowFamily, GaussianFamily, make_flow, require_zuko

__all__ = ["fit_vi", "VIResult"]

FAMILIES = ("fullrank", "meanfield", "flow")


@dataclass(repr=False)
class VIResult(GaussianApproximation):
    """A fitted variational approximation ``q(z)`` in the unconstrained space of ``density``.

    Attributes (beyond :class:`GaussianApproximation`'s, whose ``space`` is
    ``"unconstrained"``):
        mean, covariance: torch tensors, of the Gaussian ``q``; for a flow, the moments of 4096
            of its draws (seed 0). For parameters without bounds this is the physical space.
        family: ``"fullrank"``, ``"meanfield"`` or ``"flow"``.
        elbo_history: the ELBO estimate at each step (``n_samples`` draws each).
        elbo: the final ELBO, from 4096 fresh draws.
        density: the :class:`~skyfit.inference.UnconstrainedDensity` that was fitted.
        q: the fitted torch module (``rsample``, ``log_prob``, ``rsample_and_log_prob``).
        info: ``wall_time``, ``n_evals``, ``n_steps``, ``lr``, ``n_nonfinite`` (skipped steps).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity, fit_vi
        >>> mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
        >>> d = FunctionDensity(lambda x: -0.5 * ((x - mean) ** 2).sum(-1), ["a", "b"])
        >>> vi = fit_vi(d, n_steps=500, lr=0.05, init=torch.zeros(2), progress=False)
        >>> vi.space, vi.family
        ('unconstrained', 'fullrank')
        >>> vi.mean.round(decimals=3), vi.std.round(decimals=3)  # no bounds: the physical space
        (tensor([ 1., -2.], dtype=torch.float64), tensor([1., 1.], dtype=torch.float64))
    """

    family: str = "fullrank"
    elbo_history: np.ndarray = None
    elbo: float = float("nan")
    density: UnconstrainedDensity = field(default=None, repr=False)
    q: nn.Module = field(default=None, repr=False)
    info: dict = field(default_factory=dict)

    def _summary_extra(self) -> str:
        return f", family {self.family}, ELBO {self.elbo:.6g}"

    def sample(self, n: int = 4000, seed: int = 0) -> Samples:
        """``n`` independent draws of ``q`` mapped to the constrained space, as one chain.

        ``sample_stats["log_weight"]`` holds ``log p(z) - log q(z)`` (importance weights);
        ``info["pareto_k"]`` is the PSIS shape ``k`` of those weights (Yao et al. 2018,
        arXiv:1802.02538): ``k < 0.7`` says ``q`` is close enough to the posterior for its
        draws (or importance-reweighted ones) to be trusted.
        """
        u = self.density
        with torch.random.fork_rng(devices=_rng_devices(u.device)), torch.no_grad():
            torch.manual_seed(seed)
            z, log_q = self.q.rsample_and_log_prob(n)
            x = u.to_constrained(z)
            log_p = u.density.log_prob(x)
            log_w = log_p + u.log_abs_det_jacobian(z) - log_q
        lw = log_w.cpu().numpy().astype(np.float64)
        k = _pareto_k(log_w)
        return Samples(draws=x.cpu().numpy()[None], names=list(self.names),
                       log_density=log_p.cpu().numpy()[None], sampler=f"vi-{self.family}",
                       sample_stats={"log_q": log_q.cpu().numpy()[None], "log_weight": lw[None]},
                       info={"pareto_k": float(k), "elbo": self.elbo, "seed": seed,
                             "fit": dict(self.info)}, units=dict(u.density.units))


def _pareto_k(log_w: torch.Tensor) -> float:
    """PSIS Pareto shape of importance log-weights (ArviZ's ``psislw``)."""
    import arviz as az
    lw = log_w.detach().cpu().numpy().astype(np.float64)
    lw = np.where(np.isnan(lw), -np.inf, lw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(lw.copy())
    return float(k)


def _recenter_steps(n_steps: int) -> set[int]:
    """Steps at which a Gaussian q is re-whitened: 25, 50, 100, ... then every 400, until 3/4
    of the run."""
    steps, k = set(), 25
    while k < 0.75 * n_steps:
        steps.add(k)
        k = k * 2 if k < 400 else k + 400
    return steps


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def _start(density: LogDensity, init) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale_tril) in the unconstrained space from ``init`` (see :func:`resolve_gaussian`);
    a start without a covariance gets the unit matrix. The start must have a finite density."""
    loc, cov = resolve_gaussian(density, init)
    u = UnconstrainedDensity(density)
    x0 = u.to_constrained(loc)
    with torch.no_grad():
        logp = float(density.log_prob(x0))
    if not math.isfinite(logp):
        values = ", ".join(f"{n}={v:g}" for n, v in zip(density.names, x0.tolist()))
        raise LogDensityError(f"log-density is {logp} at the start point ({values}); start "
                              "inside the support where the model is defined")
    if cov is None:
        return loc, torch.eye(u.dim, dtype=u.dtype, device=u.device)
    return loc, torch.linalg.cholesky(cov)


def fit_vi(
    density: LogDensity,
    family: str = "fullrank",
    n_steps: int = 2000,
    lr: float = 1e-2,
    n_samples: int = 16,
    seed: int = 0,
    init=None,
    progress: bool = True,
    flow_kwargs: dict | None = None,
    compile: bool = False,
) -> VIResult:
    """Fit ``q`` to the posterior by maximising the ELBO ``E_q[log p(z) - log q(z)]``.

    The fit runs in the unconstrained space of :class:`UnconstrainedDensity` (with its log
    Jacobian), so bounded parameters are handled exactly. Gradients are reparametrised
    (``z = loc + L eps``, or the flow's ``rsample``) and averaged over ``n_samples`` draws per
    step; Adam's learning rate decays from ``lr`` to ``lr / 100`` on a cosine schedule.

    The Gaussian families are trained in whitened coordinates that are re-centred on the
    current ``q`` a few times early in the run (:class:`GaussianFamily`), so Adam's steps do not
    depend on the parameters' scales or correlations; with the "sticking the landing" gradient
    a Gaussian posterior is then recovered to round-off. A flow works in the coordinates of a
    full-rank Gaussian fitted first (``n_steps // 4`` steps) unless ``init`` has a covariance.
    At the end the PSIS Pareto ``k`` of ``p/q`` over 4096 draws is computed (``info``); ``k >
    0.7`` gives a :class:`~skyfit.errors.ConvergenceWarning`: ``q`` misses posterior mass.

    References:
        Kucukelbir et al. (2017), "Automatic Differentiation Variational Inference", JMLR 18,
        arXiv:1603.00788. Roeder et al. (2017), "Sticking the landing", arXiv:1703.09194 (the
        gradient estimator used for the Gaussian families). Durkan et al. (2019), "Neural
        Spline Flows", arXiv:1906.04032 (``family="flow"``, via zuko).

    Arguments:
        density: any :class:`~skyfit.inference.LogDensity`.
        family: ``"fullrank"`` (Gaussian with dense covariance), ``"meanfield"`` (diagonal) or
            ``"flow"`` (a zuko neural spline flow; needs the ``ml`` extra).
        n_steps: Adam steps. lr: initial learning rate. n_samples: draws per ELBO estimate.
        seed: seeds the draws (and the flow's initial weights); the global torch RNG is left
            as it was.
        init: resolved by :func:`~skyfit.inference.resolve_gaussian`: ``None``
            (``density.initial()``), a vector, a ``{name: value}`` dict, a :class:`MAPResult`,
            a Gaussian result (Laplace or VI: ``q`` starts as that Gaussian, mapped to the
            unconstrained space), :class:`Samples` (their moments) or an ``init_to_*``
            strategy. Without a covariance the start is a unit Gaussian in the unconstrained
            space.
        progress: tqdm progress bar showing the ELBO.
        flow_kwargs: for ``family="flow"``: ``kind`` (``"NSF"`` default, ``"MAF"``, ...) and
            zuko's arguments (``transforms=3``, ``hidden_features=(64, 64)``).
        compile: evaluate the model through :func:`~skyfit.inference.compile`
            (``torch.compile``; one compiled shape per batch size: ``n_samples`` and 4096).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = FunctionDensity(lambda x: -0.5 * ((x - 1.0) ** 2 / 4.0).sum(-1), 2)
        >>> res = fit_vi(d, n_steps=500, init=torch.zeros(2), progress=False)
        >>> [round(v, 2) for v in res.mean.tolist()], [round(v, 2) for v in res.std.tolist()]
        ([1.0, 1.0], [2.0, 2.0])
    """
    _check_settings(family, n_samples)
    t_start = time.perf_counter()
    u = UnconstrainedDensity(compile_density(density) if compile else density)
    loc, scale_tril = _start(density, init)
    pre_evals = 0  # a flow without a start covariance is standardised by a Gaussian fit
    if family == "flow" and resolve_gaussian(density, init)[1] is None:
        loc, scale_tril, pre_evals = _flow_reference(density, init, n_steps, lr, n_samples, seed)
    with torch.random.fork_rng(devices=_rng_devices(u.device)):
        torch.manual_seed(seed)
        q = (FlowFamily(make_flow(u.dim, u.dtype, u.device, dict(flow_kwargs or {})), loc,
                        scale_tril) if family == "flow"
             else GaussianFamily(loc, scale_tril, fullrank=family == "fullrank"))
        history, n_bad, tally = _maximise_elbo(q, u, family, n_steps, lr, n_samples, progress)
        final, terms = _final_elbo(q, u)
    k = _pareto_k(terms)
    _warn_fit(family, n_bad, n_steps, k)
    tally.warn(f"VI ({family})", n_steps * n_samples, u.to_constrained, stacklevel=3,
               bounds=(u.density.lower, u.density.upper))
    mean, cov = _moments(q, u, family)
    info = dict(wall_time=time.perf_counter() - t_start, n_steps=n_steps, n_samples=n_samples,
                n_evals=n_steps * n_samples + 4096 + pre_evals, lr=lr, seed=seed,
                n_nonfinite=n_bad, pareto_k=k)
    return VIResult(mean=mean, covariance=cov, names=list(u.names), space="unconstrained",
                    units=units_of(u),
                    family=family, elbo_history=history, elbo=final, density=u, q=q, info=info)


def _check_settings(family: str, n_samples: int) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples (draws per ELBO estimate) must be at least 1, got {n_samples}")
    if family == "flow":
        require_zuko()


@torch.no_grad()
def _final_elbo(q, u) -> tuple[float, torch.Tensor]:
    """The ELBO from 4096 fresh draws (finite terms), and the terms ``log p - log q``."""
    z, log_q = q.rsample_and_log_prob(4096)
    terms = u.log_prob(z) - log_q
    return float(terms[torch.isfinite(terms)].mean()), terms


def _flow_reference(density, init, n_steps, lr, n_samples, seed):
    """A flow's standardising ``(loc, scale_tril)`` from a quick full-rank Gaussian fit (its
    ConvergenceWarnings are not the flow's), and that fit's evaluations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pre = fit_vi(density, "fullrank", n_steps=max(n_steps // 4, 200), lr=lr,
                     n_samples=n_samples, seed=seed, init=init, progress=False)
    return pre.mean, torch.linalg.cholesky(pre.covariance), pre.info["n_evals"]


def _warn_fit(family: str, n_bad: int, n_steps: int, k: float) -> None:
    if n_bad:
        warnings.warn(ConvergenceWarning(
            f"VI: {n_bad} of {n_steps} steps had a non-finite ELBO and were skipped"),
            stacklevel=3)
    if k > 0.7:
        warnings.warn(ConvergenceWarning(
            f"VI ({family}): Pareto k = {k:.2f} > 0.7 for the importance weights p/q, so q is "
            "a poor fit of the posterior (too narrow somewhere): the family cannot represent it "
            "(try 'fullrank' or 'flow') or the fit has not converged (raise n_steps)"),
            stacklevel=3)


def _moments(q: nn.Module, u: UnconstrainedDensity, family: str):
    """Mean and covariance of ``q``: exact for a Gaussian, from 4096 draws (seed 0) of a flow."""
    if family != "flow":
        L = q.scale_tril().detach()
        return q.loc.detach().clone(), L @ L.T
    with torch.random.fork_rng(devices=_rng_devices(u.device)), torch.no_grad():
        torch.manual_seed(0)
        z = q.rsample_and_log_prob(4096)[0]
    cov = torch.cov(z.T).reshape(u.dim, u.dim)
    cov = cov + 1e-10 * cov.diagonal().mean() * torch.eye(u.dim, dtype=u.dtype, device=u.device)
    return z.mean(0), cov


def _maximise_elbo(q, u, family, n_steps, lr, n_samples, progress):
    """Adam on the negative ELBO with a cosine learning-rate decay from ``lr`` to ``lr / 100``;
    returns the ELBO history and the number of skipped (non-finite) steps."""
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(q.parameters(), lr=lr)
    recenter_at = _recenter_steps(n_steps) if family != "flow" else set()
    history = np.full(n_steps, np.nan)
    n_bad, run_bad = 0, 0
    tally = NonfiniteTally(u.names)
    bar = tqdm(range(n_steps), disable=not progress, desc=f"VI ({family})")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr / 100 + (lr - lr / 100) * 0.5 * (1 + math.cos(
                math.pi * step / max(n_steps, 1)))
        if step in recenter_at:
            q.recenter()
            opt.state.clear()
        z, log_q = q.rsample_and_log_prob(n_samples)
        log_p = u.log_prob(z)
        elbo_terms = log_p - log_q
        elbo = elbo_terms.mean()
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(elbo):
            tally.add(z[~torch.isfinite(log_p)])
            n_bad += 1
            run_bad += 1
            if step == 0 or run_bad >= 50:
                _raise_nonfinite(u, z, log_p, elbo_terms,
                                 "at the first step" if step == 0 else f"for {run_bad} steps "
                                 "in a row")
            continue
        run_bad = 0
        (-elbo).backward()
        opt.step()
        history[step] = elbo.item()
        if progress and step % 50 == 0:
            bar.set_postfix(elbo=f"{history[step]:.4g}")
    bar.close()
    return history, n_bad, tally


def _raise_nonfinite(u, z, log_p, elbo_terms, when: str):
    i = int(torch.nonzero(~torch.isfinite(elbo_terms))[0])
    x = u.to_constrained(z[i].detach())
    values = ", ".join(f"{n}={v:g}" for n, v in zip(u.names, x.tolist()))
    raise LogDensityError(
        f"VI: log-density is {log_p[i].item()} at a draw of q ({values}) {when}; the model is "
        "undefined somewhere inside the parameter bounds (tighten the Params' valid ranges) "
        "or lower lr")
