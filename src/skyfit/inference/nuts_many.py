"""NUTS for many independent objects: objects x chains as one batch of chains."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from .batched import BatchedDensity, ObjectRows
from .many_results import ManyResult
from .mcmc import NUTS
from .mcmc.integrators import ValueAndGrad
from .nuts_many_gradient import chains_density
from .nuts_unsynced import as_numpy_stats, run_unsynced
from .sampling import _check_start, _sample
from .start_strategy import InitStrategy, Start
from .transforms import UnconstrainedDensity

__all__ = ["sample_nuts_many", "split_rhat", "bulk_ess"]


class _ObjectsNUTS(NUTS):
    # chain k samples object k // n_chains: each evaluation selects the objects of the chains
    # it is given, so the batch stays one vmapped call however many chains are still building
    def __init__(self, rows_density: ObjectRows, value_and_grad, max_tree_depth: int,
                 n_objects: int):
        super().__init__(value_and_grad, max_tree_depth)
        self.rows_density = rows_density
        # leapfrog gradients per object (all its chains, warm-up included): the cost an object
        # needs, against the batch's lock-step cost (value_and_grad.n_calls)
        self.evals_per_object = torch.zeros(n_objects, dtype=torch.long)

    def value_and_grad_of(self, z, chains):
        self.rows_density.select(chains)
        objects = self.rows_density.rows.cpu()
        self.evals_per_object += torch.bincount(objects, minlength=len(self.evals_per_object))
        try:
            return self.value_and_grad(z)
        finally:
            self.rows_density.select(None)


class _PerChainStart(InitStrategy):
    """Given starts ``(chains, dim)`` (unconstrained) and a per-chain first metric
    ``(chains, dim, dim)``: each chain its own object's covariance."""

    def __init__(self, z: torch.Tensor, covariance: torch.Tensor):
        self.z, self.covariance = z, covariance
        self.n_points = z.shape[0]

    def __call__(self, u, n, random, space, scale) -> Start:
        z = self.z if space == "unconstrained" else u.to_constrained(self.z)
        return Start(z, self.covariance)


def unconstrained_covariance(u: UnconstrainedDensity, x: torch.Tensor,
                             covariance: torch.Tensor) -> torch.Tensor:
    """Per-object covariances ``(N, dim, dim)`` at ``x (N, dim)`` mapped to the unconstrained
    space to first order: ``J C J^T`` with ``J = d z / d x`` (the transform is elementwise, so
    ``J`` is diagonal), as :func:`~skyfit.sample_nuts` maps a LaplaceResult's covariance.
    Entries may be inf or NaN where a mode sits on a bound (see :func:`trusted_covariances`)."""
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        (jac,) = torch.autograd.grad(u.to_unconstrained(xg).sum(), xg)
    cov = covariance.to(x) * jac[:, :, None] * jac[:, None, :]
    return 0.5 * (cov + cov.transpose(-1, -2))


# a start covariance whose variance of one parameter exceeds the objects' median variance of it
# by this factor (an sd 10^4 times the typical one) is not a posterior width but a flat
# direction of the Hessian: a mode on a bound, an unconverged fit
BROAD_VARIANCE_RATIO = 1e8


def trusted_covariances(cov_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each object's start covariance ``(N, dim, dim)`` (unconstrained) if it is usable as a
    first metric, else the objects' typical one; and which objects were replaced ``(N,)``.

    Usable: finite, positive definite, and no variance more than ``BROAD_VARIANCE_RATIO`` times
    the median over the usable objects. Such a metric (object 40 of the survey bench: a fit
    stuck at ``gamma = 0``, Laplace sd of ``log gamma`` 2.6e12) gave its chains step sizes of
    1e-13 and trees of the maximum depth at every iteration, and with them every batched
    iteration ``2**max_tree_depth`` calls long. The replacement is the diagonal of the median
    variances of the usable objects (the identity if none is), which warm-up then adapts."""
    variance = cov_z.diagonal(dim1=-2, dim2=-1)
    finite = torch.isfinite(cov_z).flatten(1).all(1) & (variance > 0).all(1)
    _, info = torch.linalg.cholesky_ex(torch.where(finite[:, None, None], cov_z,
                                                   torch.eye(cov_z.shape[-1]).to(cov_z)))
    usable = finite & (info == 0)
    if bool(usable.any()):
        typical = variance[usable].median(0).values
        usable = usable & (variance <= BROAD_VARIANCE_RATIO * typical).all(1)
    if bool(usable.any()):
        fallback = torch.diag(variance[usable].median(0).values)
    else:
        fallback = torch.eye(cov_z.shape[-1]).to(cov_z)
    return torch.where(usable[:, None, None], cov_z, fallback), ~usable


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split-chain R-hat (Gelman et al. 2013, BDA3 eq. 11.4) of ``draws (..., chains, n, dim)``,
    vectorised over the leading axes: shape ``(..., dim)``."""
    half = draws.shape[-2] // 2
    parts = np.concatenate([draws[..., :half, :], draws[..., half:2 * half, :]], axis=-3)
    n = parts.shape[-2]
    within = parts.var(-2, ddof=1).mean(-2)
    between = n * parts.mean(-2).var(-2, ddof=1)
    return np.sqrt(((n - 1) / n * within + between / n) / within)


def bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Effective sample size of ``draws (..., chains, n, dim)`` (split chains, Geyer's initial
    monotone sequence on the combined autocorrelation, as Stan; without rank normalisation),
    vectorised over the leading axes: shape ``(..., dim)``."""
    half = draws.shape[-2] // 2
    x = np.concatenate([draws[..., :half, :], draws[..., half:2 * half, :]], axis=-3)
    m, n = x.shape[-3], x.shape[-2]
    centred = x - x.mean(-2, keepdims=True)
    spectrum = np.fft.rfft(centred, n=2 * n, axis=-2)
    autocov = np.fft.irfft(spectrum * np.conj(spectrum), axis=-2)[..., :n, :] / n
    within = x.var(-2, ddof=1).mean(-2)
    var_plus = within * (n - 1) / n + x.mean(-2).var(-2, ddof=1)
    rho = 1 - (within[..., None, :] - autocov.mean(-3)) / var_plus[..., None, :]
    n_pairs = n // 2
    pairs = rho[..., 0:2 * n_pairs:2, :] + rho[..., 1:2 * n_pairs:2, :]
    positive = np.cumprod(pairs > 0, axis=-2).astype(bool)
    monotone = np.minimum.accumulate(np.where(positive, pairs, 0.0), axis=-2)
    tau = -1 + 2 * np.where(positive, monotone, 0.0).sum(-2)
    return m * n / np.maximum(tau, 1.0 / np.log10(max(m * n, 10)))


def sample_nuts_many(density: BatchedDensity, init, n_chains: int = 4, n_warmup: int = 500,
                     n_draws: int = 500, seed: int = 0, target_accept: float = 0.8,
                     max_tree_depth: int = 10, init_scale: float = 0.1, mass: str = "diag",
                     progress: bool = False, lockstep: bool = False,
                     compile: bool | None = None,  # noqa: A002 (sample_nuts')
                     thin: int = 1) -> ManyResult:
    """NUTS on every object at once: ``N x n_chains`` chains in one batch, each object's chains
    on that object's log-density, every leapfrog step one vmapped call for all of them.

    Each chain adapts its own step size (dual averaging) and inverse mass matrix (Stan's
    windows), so objects of very different posterior widths each get their own; the kernel and
    the warm-up are :func:`~skyfit.sample_nuts`'s (a chain out of step is that sampler draw for
    draw, given the same start and random numbers). By default chains run out of step
    (:mod:`~skyfit.inference.nuts_unsynced`): a chain whose tree is finished starts its next
    transition at once, each on its own warm-up schedule, so the run makes about as many
    batched calls as its busiest chain needs leapfrog steps, instead of ``iterations x`` the
    deepest tree of any chain in each iteration (NUTS's lock-step cost, which grows with the
    number of chains). Per object: split R-hat, bulk ESS (without rank normalisation) and
    divergent transitions.

    Arguments:
        density: a :class:`~skyfit.inference.BatchedDensity`, e.g.
            :class:`~skyfit.survey.ManyObjects`.
        init: starts ``(N, dim)`` or a :class:`ManyResult` (e.g. of :func:`fit_map_many`);
            each object's chains start there plus ``init_scale`` N(0, 1) in unconstrained space.
            A ManyResult with covariances (:func:`laplace_many`) is what an expert starts
            from: each object's covariance, mapped to the unconstrained space, is its chains'
            first inverse mass matrix (its diagonal) and the prior of every window estimate,
            and its chains start at draws of that Gaussian, as :func:`~skyfit.sample_nuts` does
            with a LaplaceResult. Without it the first metric is the identity, and an object
            whose widths differ by 100x needs trees of ~1000 leapfrog steps until the first
            window ends.
        n_chains, n_warmup, n_draws: per object. seed: of the one ``torch.Generator``.
        thin: each chain runs ``n_draws * thin`` transitions after warm-up and keeps every
            ``thin``-th (``n_draws`` kept draws; R-hat, ESS, means and covariances are of the
            kept draws, divergences are counted over every transition). For slowly mixing
            objects: more transitions at the memory of ``n_draws`` draws.
        target_accept, max_tree_depth: as :func:`~skyfit.sample_nuts`.
        mass: ``"diag"`` or ``"dense"`` inverse mass matrix per chain (dense: each object's
            whole start covariance is its first metric; worth it for correlated parameters).
        progress: a progress bar over iterations (transitions of all chains, out of step).
        lockstep: every chain waits for the slowest chain at each iteration, in
            :func:`~skyfit.sample_nuts`'s loop (a batch of one object is then that sampler,
            draw for draw; warm-up windows end together). The same Markov chains as out of
            step, at the lock-step cost.
        compile: the chains' value and gradient through ``torch.compile``
            (:mod:`~skyfit.inference.nuts_many_gradient`: two compiled batch sizes, the few
            chains of the run's tail padded to one, many chains in chunks of the other; the
            compilation is part of the run's time). By default (None) it compiles when the
            eager gradients are predicted to take over ``WORTH_COMPILING_S`` seconds, as
            :func:`~skyfit.sample_nuts` decides; False keeps them eager.

    Returns:
        :class:`ManyResult`: ``x`` the posterior means, ``covariance`` the sample covariances,
        ``rhat`` and ``ess`` ``(N, dim)``, ``draws`` ``(N, chains, draws, dim)`` (constrained),
        ``converged`` = max R-hat < 1.01, ``extra["n_divergent"]`` ``(N,)`` (a table column),
        ``extra["step_size"]`` ``(N, chains)``, ``extra["inv_mass"]``
        ``(N, chains, dim[, dim])``,
        ``extra["n_gradient_evals"]`` ``(N,)`` the leapfrog gradients each object's chains
        needed (warm-up included; a column) and ``extra["n_batched_steps"]`` the batched calls
        the run made (a 0-d tensor: the calls the busiest chain needed, or with ``lockstep``
        the lock-step cost every object paid), ``extra["start_metric_replaced"]`` ``(N,)``
        the objects whose start covariance was not usable as a metric (not finite, not
        positive definite, or a variance over ``BROAD_VARIANCE_RATIO`` times the objects'
        median: a fit stuck on a bound) and started from the objects' typical diagonal one,
        ``extra["compile_s"]`` the compilations' wall time (0 when eager); a warning text
        per object with R-hat >= 1.01, divergences or a replaced metric.

    Example:
        >>> import torch
        >>> from skyfit.inference import BatchedDensity
        >>> class Normals(BatchedDensity):  # object n: x ~ N(mu_n, 1)
        ...     names = ["x"]
        ...     lower, upper = torch.tensor([-torch.inf]), torch.tensor([torch.inf])
        ...     def __init__(self, mu):
        ...         self.data = {"mu": mu}
        ...     def object_log_prob(self, x, data):
        ...         return -0.5 * ((x - data["mu"]) ** 2).sum()
        >>> mu = torch.tensor([[-5.0], [0.0], [5.0]])
        >>> result = sample_nuts_many(Normals(mu), mu, n_chains=2, n_warmup=100, n_draws=100)
        >>> result.draws.shape, bool(((result.x - mu).abs() < 0.5).all())
        ((3, 2, 100, 1), True)
        >>> list(result.to_pandas().columns[:4])
        ['x', 'x_err', 'x_rhat', 'x_ess']
    """
    covariance = init.covariance if isinstance(init, ManyResult) else None
    x0 = density.as_points(init.x if isinstance(init, ManyResult) else init)
    n, d = density.n_objects, density.dim
    if int(thin) != thin or thin < 1:
        raise ValueError(f"thin must be a positive integer, got {thin!r}")
    _check_object_starts(x0, n, d)
    rows = torch.arange(n, device=density.device).repeat_interleave(n_chains)
    objects = ObjectRows(density, rows)
    u = UnconstrainedDensity(objects)
    generator = torch.Generator(device=density.device).manual_seed(seed + 1)
    start, replaced = _chain_starts(u, x0, covariance, rows, init_scale, generator)
    chains, compiled = chains_density(u, objects, compile, n_warmup + n_draws,
                                      u.to_unconstrained(x0[rows]))
    kernel = _ObjectsNUTS(objects, ValueAndGrad(chains), max_tree_depth, n)
    if lockstep:
        samples = _sample(kernel, u, start, 0.0, n * n_chains, n_warmup, n_draws * thin, seed,
                          mass, False, target_accept, None, 100, False, progress)
    else:
        samples = _sample_unsynced(kernel, u, start, mass, n_warmup, n_draws * thin, seed,
                                   target_accept, progress)
    result = _many_result(density, samples, n_chains, int(thin))
    result.extra["n_gradient_evals"] = kernel.evals_per_object
    result.extra["n_batched_steps"] = torch.tensor(kernel.value_and_grad.n_calls)
    result.extra["start_metric_replaced"] = replaced.cpu()
    result.extra["compile_s"] = torch.tensor(compiled.get("compile_s", 0.0))
    for i in replaced.nonzero().flatten().tolist():
        result.warnings[i].append("nuts: start covariance not usable as a metric (not finite, "
                                  "not positive definite or absurdly broad); started from the "
                                  "objects' typical one")
    return result


def _check_object_starts(x0: torch.Tensor, n: int, d: int) -> None:
    """One finite start per object, or the objects that have none named (a chain's own check
    comes later and names a chain, ``object * n_chains + k``)."""
    if x0.shape != (n, d):
        raise ValueError(f"init must have shape ({n}, {d}) (one start per object), got "
                         f"{tuple(x0.shape)}")
    bad = (~torch.isfinite(x0).all(1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"objects {bad[:10]} ({len(bad)} in all) have a NaN or inf start (a fit "
                         "that never started?): sample the others, e.g. ok = "
                         "torch.isfinite(result.x).all(1); sample_nuts_many(density.subset(ok), "
                         "result.subset(ok), ...)")


def _sample_unsynced(kernel: _ObjectsNUTS, u: UnconstrainedDensity, start, mass: str,
                     n_warmup: int, n_draws: int, seed: int, target_accept: float,
                     progress: bool) -> SimpleNamespace:
    """:func:`run_unsynced` from :func:`_chain_starts`' starts, as the fields of a
    :class:`~skyfit.Samples` that :func:`_many_result` reads."""
    dense = mass == "dense"
    if isinstance(start, _PerChainStart):
        z, cov = start.z, start.covariance
        inv_mass = cov if dense else cov.diagonal(dim1=-2, dim2=-1)
        prior = inv_mass.clone()
    else:
        z = u.to_unconstrained(start)
        kw = dict(dtype=z.dtype, device=z.device)
        base = torch.eye(u.dim, **kw) if dense else torch.ones(u.dim, **kw)
        inv_mass = base.expand(z.shape[0], *base.shape).clone()
        prior = None
    _check_start(kernel.value_and_grad, u, z)
    generator = torch.Generator(device=z.device).manual_seed(seed)
    run = run_unsynced(kernel, z, inv_mass.clone(), prior, generator, n_warmup, n_draws,
                       target_accept, progress)
    return SimpleNamespace(
        draws=u.to_constrained(run.draws).detach().cpu().numpy(),
        sample_stats=as_numpy_stats(run.stats),
        info=dict(wall_time=run.wall_time, step_size=run.step_size.cpu().numpy(),
                  inv_mass_matrix=run.inv_mass.cpu().numpy()))


def _chain_starts(u: UnconstrainedDensity, x0: torch.Tensor, covariance, rows: torch.Tensor,
                  init_scale: float, generator: torch.Generator):
    """Every chain's start: its object's point plus ``init_scale`` N(0, 1) (unconstrained), or
    with per-object covariances a draw of that Gaussian, the covariance its first metric."""
    z0 = u.to_unconstrained(x0[rows])
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)
    if covariance is None:
        start = u.to_constrained(z0 + init_scale * noise if init_scale > 0 else z0)
        return start, torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    cov_z, replaced = trusted_covariances(unconstrained_covariance(u, x0, covariance))
    scale = torch.linalg.cholesky(cov_z)
    z = z0 + (scale[rows] @ noise[:, :, None])[:, :, 0]
    # a draw of a broad or broken approximation (an unconverged fit, a repaired Hessian) can
    # leave the support or overflow: that chain starts near its object's point instead
    x = u.to_constrained(z)
    finite = torch.isfinite(x).all(1)
    with torch.no_grad():
        logp = u.density.log_prob(torch.where(finite[:, None], x, x0[rows]))
    bad = ~finite | ~torch.isfinite(logp)
    z = torch.where(bad[:, None], z0 + init_scale * noise, z)
    return _PerChainStart(z, cov_z[rows]), replaced


def _many_result(density: BatchedDensity, samples, n_chains: int, thin: int = 1) -> ManyResult:
    """The per-object table of a run of ``N x n_chains`` chains (object-major), every
    ``thin``-th draw kept."""
    n, d = density.n_objects, density.dim
    draws = np.asarray(samples.draws)[:, thin - 1::thin]
    n_draws = draws.shape[1]
    draws = draws.reshape(n, n_chains, n_draws, d)
    rhat, ess = split_rhat(draws), bulk_ess(draws)
    flat = torch.as_tensor(draws.reshape(n, n_chains * n_draws, d))
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    covariance = centred.transpose(1, 2) @ centred / max(flat.shape[1] - 1, 1)
    diverging = np.asarray(samples.sample_stats["diverging"]).reshape(n, -1).sum(1)
    every = torch.arange(n, device=density.device)
    result = ManyResult(
        names=list(density.names), x=mean,
        log_density=density.log_prob_rows(mean.to(density.device), every).detach().cpu(),
        converged=torch.as_tensor(rhat.max(-1) < 1.01), covariance=covariance, rhat=rhat,
        ess=ess, draws=draws, wall_time=float(samples.info["wall_time"]))
    result.extra["n_divergent"] = torch.as_tensor(diverging)
    result.extra["step_size"] = torch.as_tensor(samples.info["step_size"]).reshape(n, n_chains)
    inv_mass = torch.as_tensor(samples.info["inv_mass_matrix"])
    result.extra["inv_mass"] = inv_mass.reshape(n, n_chains, *inv_mass.shape[1:])
    for i in np.nonzero(~(rhat.max(-1) < 1.01))[0].tolist():
        result.warnings[i].append(_rhat_warning(rhat[i], draws[i], density.names))
    for i in np.nonzero(diverging)[0].tolist():
        result.warnings[i].append(f"nuts: {int(diverging[i])} divergent transitions")
    return result


def _rhat_warning(rhat: np.ndarray, draws: np.ndarray, names) -> str:
    """The R-hat warning of one object; a non-finite R-hat names its parameters and why: draws
    that overflow or do not move (an improper posterior the chains drift along)."""
    bad = [n for n, r in zip(names, rhat) if not np.isfinite(r)]
    if not bad:
        return f"nuts: max R-hat {rhat.max():.3f} >= 1.01"
    with np.errstate(all="ignore"):
        spread = np.abs(draws).max(axis=(0, 1))
    return (f"nuts: R-hat not finite for {', '.join(bad)} (largest |draw| "
            f"{', '.join(f'{s:.3g}' for n, s in zip(names, spread) if n in bad)}): the draws "
            "overflow or do not move, e.g. an improper posterior the chains drift along: give "
            "those parameters a proper prior or bounds")
